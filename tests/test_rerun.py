"""Re-running, retrying and stopping jobs, end to end against the simulator: nothing lost, nothing paid twice."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from batchgen.cli.main import main
from batchgen.output.lock import JobLock
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS, assert_png_whole, png_bytes

pytestmark = pytest.mark.usefixtures("api_key")


class Job:
    """A manifest in a temp folder, run with the CLI against the simulator."""

    def __init__(self, folder: Path, sim: Simulator, items: list[dict[str, Any]], **limits: Any) -> None:
        self.folder, self.sim = folder, sim
        self.path = folder / "jobs" / "cat.yaml"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.out = folder / "out"
        self.write(items, **limits)

    def write(self, items: list[dict[str, Any]], **limits: Any) -> None:
        data = {"job": "cat", "limits": {**FAST_LIMITS, "concurrency": 2, **limits}, "items": items}
        self.path.write_text(yaml.safe_dump(data, sort_keys=False))

    def run(self, *flags: str) -> int:
        return main(
            ["run", str(self.path), "--base-url", self.sim.base_url, "--output", str(self.out), "-q", *flags]
        )

    def retry(self, *flags: str) -> int:
        return main(["retry", str(self.out / "cat"), "--base-url", self.sim.base_url, "-q", *flags])

    def report(self) -> dict[str, Any]:
        return dict(orjson.loads((self.out / "cat/report.json").read_bytes()))

    def statuses(self) -> dict[str, str]:
        return {item["id"]: item["status"] for item in self.report()["items"]}

    def requests(self) -> dict[str, int]:
        return dict(self.sim.stats.by_prompt)


def items(n: int, prefix: str = "p") -> list[dict[str, Any]]:
    return [{"id": f"i{k}", "prompt": f"{prefix} {k}"} for k in range(n)]


def test_a_rerun_sends_nothing_done_and_an_edit_regenerates_that_item_alone(
    tmp_path: Path, sim: Simulator
) -> None:
    job = Job(tmp_path, sim, items(6))
    assert job.run() == 0
    first = job.requests()
    assert sum(first.values()) == 6
    assert job.run() == 0
    assert job.requests() == first
    assert set(job.statuses().values()) == {"skipped"}
    assert job.report()["requests_sent"] == 0
    edited = items(6)
    edited[2]["prompt"] = "p 2, now in blue"
    edited[4]["size"] = "2K"
    job.write(edited)
    assert job.run() == 0
    after = job.requests()
    assert after["p 2, now in blue"] == 1
    assert after["p 4"] == 2
    assert sum(after.values()) == 8
    assert job.statuses() == {
        "i0": "skipped",
        "i1": "skipped",
        "i2": "succeeded",
        "i3": "skipped",
        "i4": "succeeded",
        "i5": "skipped",
    }


def test_an_item_edited_to_fewer_images_leaves_none_of_the_old_ones_in_images(
    tmp_path: Path, sim: Simulator
) -> None:
    job = Job(tmp_path, sim, [{"id": "set", "prompt": "a set", "n": 3}])
    assert job.run() == 0
    third = (job.out / "cat/images/set-3.png").read_bytes()
    job.write([{"id": "set", "prompt": "a set", "n": 2}])
    assert job.run() == 0
    assert sorted(p.name for p in (job.out / "cat/images").iterdir()) == [
        "set-1.png",
        "set-2.png",
        "set.json",
    ]
    assert (job.out / "cat/history/set-3.1.png").read_bytes() == third  # kept, as every old take is
    assert not list((job.out / "cat/thumbs").glob("set-3.*"))
    assert job.run() == 0  # and the next run finds it done
    assert job.requests() == {"a set": 2}


def test_a_changed_reference_image_regenerates_its_items(
    tmp_path: Path, sim: Simulator, ref_png: Path
) -> None:
    job = Job(
        tmp_path,
        sim,
        [{"id": "a", "prompt": "with ref", "references": ["refs/style.png"]}, {"id": "b", "prompt": "plain"}],
    )
    assert job.run() == 0
    ref_png.write_bytes(ref_png.read_bytes())  # rewritten with the same bytes: still done
    assert job.run() == 0
    assert job.requests() == {"with ref": 1, "plain": 1}
    ref_png.write_bytes(png_bytes(hue=7))  # new content, same path
    assert job.run() == 0
    assert job.requests() == {"with ref": 2, "plain": 1}


def test_force_regenerates_everything(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(3))
    job.run()
    assert job.run("--force") == 0
    assert job.requests() == {"p 0": 2, "p 1": 2, "p 2": 2}


def test_a_deleted_or_truncated_image_is_regenerated_alone(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(3))
    job.run()
    (job.out / "cat/images/i0.png").unlink()
    with open(job.out / "cat/images/i1.png", "r+b") as f:
        f.truncate(20)
    assert job.run() == 0
    assert job.requests() == {"p 0": 2, "p 1": 2, "p 2": 1}
    for name in ("i0", "i1", "i2"):
        assert_png_whole(job.out / f"cat/images/{name}.png")


def test_a_torn_journal_line_does_not_stop_a_rerun(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(3))
    job.run()
    journal = job.out / "cat/journal.jsonl"
    journal.write_bytes(journal.read_bytes()[:-30])  # the last item's line, cut mid-write
    assert job.run() == 0
    assert sum(job.requests().values()) == 4  # only the item whose line was lost is sent again


def test_retry_sends_pending_and_retryable_failures_and_all_failed_adds_refusals(
    tmp_path: Path, sim: Simulator
) -> None:
    job = Job(
        tmp_path,
        sim,
        [
            {"id": "ok", "prompt": "fine"},
            {"id": "refused", "prompt": "[sim:safety] no"},
            {
                "id": "flaky",
                "prompt": "[sim:502*4] down for a while",
            },  # fails all 4 attempts of the first run
        ],
    )
    assert job.run() == 1
    assert job.statuses() == {"ok": "succeeded", "refused": "failed", "flaky": "failed"}
    assert job.retry() == 1
    assert job.requests() == {"fine": 1, "[sim:safety] no": 1, "[sim:502*4] down for a while": 5}
    # The report after a retry is the job's whole truth, not the retried slice.
    report = job.report()
    assert job.statuses() == {"ok": "skipped", "refused": "failed", "flaky": "succeeded"}
    assert [f["class"] for f in report["failures"]] == ["safety_filter"]
    assert report["counts"] == {"total": 3, "succeeded": 1, "failed": 1, "skipped": 1, "pending": 0}
    assert job.retry("--all-failed") == 1
    assert job.requests()["[sim:safety] no"] == 2
    assert job.requests()["fine"] == 1  # successes are never sent again
    assert job.run("--only-failed") == 1
    assert job.requests()["[sim:safety] no"] == 2


def test_retry_of_a_folder_that_is_not_a_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["retry", str(tmp_path)]) == 2
    assert "no journal.jsonl with a run in it" in capsys.readouterr().err


def test_retry_after_send_false_never_repeats_what_may_have_been_billed(
    tmp_path: Path, sim: Simulator
) -> None:
    job = Job(
        tmp_path,
        sim,
        [{"id": "d", "prompt": "[sim:drop*1] x"}, {"id": "e", "prompt": "[sim:500*1] y"}],
        retry_after_send=False,
    )
    assert job.run() == 1
    assert job.requests() == {"[sim:drop*1] x": 1, "[sim:500*1] y": 2}  # a 500 was answered: not billed
    assert job.report()["unconfirmed_attempts"] == 1


def test_a_failing_service_trips_the_breaker_and_the_job_stops(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(30, "[sim:503]"), concurrency=1, max_consecutive_failures=3, retry_cap_s=0)
    assert job.run() == 3
    report = job.report()
    assert report["status"] == "aborted"
    assert "a probe after 0s failed too" in report["aborted_reason"]
    assert sim.stats.requests == 4  # three failures in a row, then one probe
    assert report["counts"]["pending"] == 30


def test_max_failures_stops_the_job(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(10, "[sim:safety]"), concurrency=1)
    assert job.run("--max-failures", "2") == 3
    assert sim.stats.requests == 2
    report = job.report()
    assert report["aborted_reason"] == "--max-failures 2 reached"
    assert report["counts"] == {"total": 10, "succeeded": 0, "failed": 2, "skipped": 0, "pending": 8}


def test_max_cost_refuses_a_job_estimated_over_it(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, items(10))  # 10 x nano-banana-2 1K at the default price table
    assert job.run("--max-cost", "0.1") == 2
    assert "over --max-cost 0.1; nothing was sent" in capsys.readouterr().err
    assert sim.stats.requests == 0
    assert job.run("--max-cost", "5") == 0
    assert job.run("--max-cost", "0.01") == 0  # nothing left to send, nothing to spend


def test_max_cost_prices_what_the_run_will_send_edited_items_and_deleted_images_too(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, items(10))
    assert job.run() == 0
    edited = items(10)
    for k in (0, 1, 2):
        edited[k]["prompt"] = f"p {k}, now in blue"
    job.write(edited)
    for k in (7, 8, 9):
        (job.out / f"cat/images/i{k}.png").unlink()
    sent = sim.stats.requests
    one = job.report()["estimated_cost"] / 10
    # Six items to send: three edited, three whose image is gone. All ten are journaled as
    # succeeded, so a check that reads only the journal would price nothing and let the job start.
    assert job.run("--max-cost", f"{5.5 * one:.6f}") == 2
    assert "over --max-cost" in capsys.readouterr().err
    assert sim.stats.requests == sent
    assert job.run("--max-cost", f"{6.5 * one:.6f}") == 0
    assert sim.stats.requests == sent + 6


def test_max_cost_stops_a_running_job_whose_unconfirmed_attempts_used_the_budget(
    tmp_path: Path, sim: Simulator
) -> None:
    # Four 1K images (0.039 each) fit under 0.16, so the job starts; but the gateway's 504 on the
    # first attempt came after the image was made (billed), and then a fourth image would not fit.
    job = Job(tmp_path, sim, [{"id": "i0", "prompt": "[sim:504*1] p 0"}, *items(4)[1:]], concurrency=1)
    assert job.run("--max-cost", "0.16") == 3
    report = job.report()
    assert report["status"] == "aborted"
    assert report["aborted_reason"].startswith("--max-cost 0.16 reached")
    assert job.statuses() == {"i0": "succeeded", "i1": "succeeded", "i2": "succeeded", "i3": "pending"}
    assert job.requests() == {"[sim:504*1] p 0": 2, "p 1": 1, "p 2": 1}  # nothing sent for i3


def test_a_second_run_of_the_same_job_is_refused(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, items(2))
    (job.out / "cat").mkdir(parents=True)
    with JobLock(job.out / "cat"):
        assert job.run() == 3
    err = capsys.readouterr().err
    assert "is in use by another batchgen run (pid " in err
    assert sim.stats.requests == 0
    assert job.run() == 0


class TestRetryInAMovedFolder:
    """`batchgen retry` finds the manifest relative to the job folder, or is told where it is."""

    def made(self, tmp_path: Path, sim: Simulator) -> Job:
        job = Job(tmp_path / "project", sim, [*items(2), {"id": "flaky", "prompt": "[sim:500] always"}])
        assert job.run() == 1
        return job

    def retry(self, folder: Path, sim: Simulator, *flags: str) -> int:
        return main(["retry", str(folder), "--base-url", sim.base_url, "-q", *flags])

    def test_a_moved_project_retries_with_its_own_manifest(self, tmp_path: Path, sim: Simulator) -> None:
        job = self.made(tmp_path, sim)
        moved = tmp_path / "elsewhere"
        (tmp_path / "project").rename(moved)
        (moved / "jobs/cat.yaml").write_text(
            (moved / "jobs/cat.yaml").read_text().replace("[sim:500] always", "fixed now")
        )
        assert self.retry(moved / "out/cat", sim, "--all-failed") == 0
        assert job.requests()["fixed now"] == 1  # the moved manifest, as edited there

    def test_a_copied_project_uses_its_copy_not_the_original(self, tmp_path: Path, sim: Simulator) -> None:
        job = self.made(tmp_path, sim)
        copy = tmp_path / "copy"
        shutil.copytree(tmp_path / "project", copy)
        (copy / "jobs/cat.yaml").write_text(
            (copy / "jobs/cat.yaml").read_text().replace("[sim:500] always", "the copied prompt")
        )
        assert self.retry(copy / "out/cat", sim, "--all-failed") == 0
        assert job.requests().get("the copied prompt") == 1
        assert job.requests()["[sim:500] always"] == 4  # the original's was not sent again

    def test_a_job_folder_moved_alone_uses_the_recorded_manifest_and_says_so(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        job = self.made(tmp_path, sim)
        alone = tmp_path / "archive" / "2026" / "cat"
        alone.parent.mkdir(parents=True)
        (job.out / "cat").rename(alone)
        assert main(["retry", str(alone), "--base-url", sim.base_url]) == 1
        err = capsys.readouterr().err
        assert f"using {job.path.resolve()}, where the run recorded it" in err
        assert job.requests()["[sim:500] always"] == 8

    def test_neither_there_is_a_clear_error_and_manifest_fixes_it(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        job = self.made(tmp_path, sim)
        kept = tmp_path / "kept.yaml"
        job.path.rename(kept)
        folder = job.out / "cat"
        before = sim.stats.requests
        assert main(["retry", str(folder), "--base-url", sim.base_url]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == (
            f"batchgen: error: {folder}: the manifest it was made from is neither at"
            f" {tmp_path / 'project/jobs/cat.yaml'} (relative to this folder) nor at {job.path.resolve()};"
            " give it with --manifest FILE"
        )
        assert sim.stats.requests == before
        assert self.retry(folder, sim, "--manifest", str(kept)) == 1
        assert sim.stats.requests == before + 4
