"""Nightly operations end to end: folders of manifests, shards and merge, JSON logs, price tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from batchgen.cli.main import main
from batchgen.output.lock import JobLock
from batchgen.plan import shard
from batchgen.plan.pricing import PriceTable
from batchgen.report import merge
from batchgen.report.record import Report
from batchgen.report.report import merge_reports
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS, assert_png_whole

pytestmark = pytest.mark.usefixtures("api_key")


def write(folder: Path, name: str, job: str, prompts: list[str], **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "job": job,
        "limits": FAST_LIMITS,
        "items": [{"id": f"i{k}", "prompt": p} for k, p in enumerate(prompts)],
        **extra,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def report_of(folder: Path) -> dict[str, Any]:
    return dict(orjson.loads((folder / "report.json").read_bytes()))


class TestFolders:
    def test_a_folder_runs_its_manifests_in_order_not_its_subfolders(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        jobs = tmp_path / "jobs"
        write(jobs, "b.yaml", "second", ["b"])
        write(jobs, "a.yml", "first", ["a"])
        write(jobs / "deploy", "x.yaml", "never", ["x"])
        (jobs / "notes.txt").write_text("not a manifest")
        assert main(["run", str(jobs), "--base-url", sim.base_url, "--output", str(tmp_path / "out")]) == 0
        out = capsys.readouterr().out
        assert out.index("first: completed") < out.index("second: completed")
        assert out.startswith("2 jobs: first completed, second completed\n")
        assert out.rstrip().endswith("second/report.html")  # the last line points at a gallery to open
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["first", "second"]
        assert sim.stats.by_prompt == {"a": 1, "b": 1}

    @pytest.mark.parametrize(
        ("prompts", "code"),
        [
            (["fine", "fine too"], 0),
            (["fine", "[sim:safety] no"], 1),
            (["fine", "[sim:401] bad key"], 3),
        ],
    )
    def test_the_exit_status_is_the_worst_of_the_jobs(
        self, tmp_path: Path, sim: Simulator, prompts: list[str], code: int
    ) -> None:
        jobs = tmp_path / "jobs"
        write(jobs, "a.yaml", "a", [prompts[0]])
        write(jobs, "b.yaml", "b", [prompts[1]])
        assert (
            main(["run", str(jobs), "--base-url", sim.base_url, "--output", str(tmp_path / "out"), "-q"])
            == code
        )

    def test_an_empty_folder_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "empty").mkdir()
        assert main(["run", str(tmp_path / "empty"), "--simulate"]) == 2
        assert "no manifests (*.yaml, *.yml) in this folder" in capsys.readouterr().err

    def test_quiet_prints_nothing_on_success(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(tmp_path / "jobs", "a.yaml", "a", ["x"], defaults={"extra_fields": {"seed": 1}})
        assert (
            main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "out"), "--quiet"])
            == 0
        )
        captured = capsys.readouterr()
        assert (captured.out, captured.err) == ("", "")  # not even the warning about seed


class TestShards:
    PROMPTS = tuple(f"product {k}" for k in range(40))

    def run_shards(self, tmp_path: Path, sim: Simulator, n: int, which: list[int]) -> Path:
        path = write(tmp_path / "jobs", "cat.yaml", "cat", list(self.PROMPTS))
        for k in which:
            out = tmp_path / f"machine-{k}"  # each shard on a machine of its own
            assert (
                main(
                    [
                        "run",
                        str(path),
                        "--shard",
                        f"{k}/{n}",
                        "--base-url",
                        sim.base_url,
                        "--output",
                        str(out),
                        "-q",
                    ]
                )
                == 0
            )
        return path

    def test_shards_split_the_job_and_merge_into_one_folder(self, tmp_path: Path, sim: Simulator) -> None:
        self.run_shards(tmp_path, sim, 3, [1, 2, 3])
        assert sim.stats.requests == 40  # every item exactly once across the three machines
        assert sorted(sim.stats.by_prompt.values()) == [1] * 40
        sizes = [
            report_of(tmp_path / f"machine-{k}/cat/shard-{k}-of-3")["counts"]["total"] for k in (1, 2, 3)
        ]
        assert sum(sizes) == 40
        assert all(s > 0 for s in sizes)
        shard_dirs = [str(tmp_path / f"machine-{k}/cat") for k in (1, 2, 3)]
        assert main(["merge", *shard_dirs, "--output", str(tmp_path / "merged"), "-q"]) == 0
        merged = report_of(tmp_path / "merged/cat")
        assert merged["counts"] == {"total": 40, "succeeded": 40, "failed": 0, "skipped": 0, "pending": 0}
        assert merged["requests_sent"] == 40
        assert merged["merged_from"] == ["1/3", "2/3", "3/3"]
        images = sorted((tmp_path / "merged/cat/images").glob("*.png"))
        assert len(images) == 40
        for image in images:
            assert_png_whole(image)
        # Each image's sidecar comes along, and the gallery lists what each was asked with.
        assert len(list((tmp_path / "merged/cat/images").glob("*.json"))) == 40
        assert "nano-banana-2" in (tmp_path / "merged/cat/report.html").read_text()
        # The journal says a merge wrote it, and from which manifest: retry finds it there.
        header = orjson.loads((tmp_path / "merged/cat/journal.jsonl").read_bytes().split(b"\n")[0])
        assert (header["type"], header["merged"]) == ("run", True)
        assert Path(header["manifest"]) == (tmp_path / "jobs/cat.yaml").resolve()
        assert main(["retry", str(tmp_path / "merged/cat"), "--base-url", sim.base_url, "-q"]) == 0
        # The merged folder is a job folder: a re-run there sends nothing.
        path = tmp_path / "jobs/cat.yaml"
        assert (
            main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "merged"), "-q"])
            == 0
        )
        assert sim.stats.requests == 40

    def test_shards_on_one_disk_merge_in_place(self, tmp_path: Path, sim: Simulator) -> None:
        path = write(tmp_path / "jobs", "cat.yaml", "cat", list(self.PROMPTS))
        for k in (1, 2):
            assert (
                main(
                    [
                        "run",
                        str(path),
                        "--shard",
                        f"{k}/2",
                        "--base-url",
                        sim.base_url,
                        "--output",
                        str(tmp_path / "out"),
                        "-q",
                    ]
                )
                == 0
            )
        assert main(["merge", str(tmp_path / "out/cat"), "--output", str(tmp_path / "out"), "-q"]) == 0
        assert report_of(tmp_path / "out/cat")["counts"]["succeeded"] == 40
        assert len(list((tmp_path / "out/cat/images").glob("*.png"))) == 40

    def test_a_missing_shard_makes_the_merge_partial(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.run_shards(tmp_path, sim, 4, [2, 3])
        (tmp_path / "machine-3/cat/shard-1-of-4").mkdir()  # a shard that never wrote its report
        code = main(
            [
                "merge",
                str(tmp_path / "machine-2/cat"),
                str(tmp_path / "machine-3/cat"),
                "--output",
                str(tmp_path / "m"),
            ]
        )
        assert code == 1
        merged = report_of(tmp_path / "m/cat")
        assert merged["status"] == "partial"
        assert merged["missing_shards"] == ["1/4", "4/4"]  # the first and the last
        assert "are missing from the merge" in capsys.readouterr().err

    def test_shards_of_different_splits_or_no_report_are_refused(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(tmp_path / "jobs", "cat.yaml", "cat", ["a", "b"])
        for split in ("1/2", "1/3"):
            run = ["run", str(path), "--shard", split, "--base-url", sim.base_url, "-q"]
            main([*run, "--output", str(tmp_path / f"o{split[-1]}")])
        assert main(["merge", str(tmp_path / "o2/cat"), str(tmp_path / "o3/cat")]) == 2
        assert (
            "these shards were cut [2, 3] ways; merge shards of one --shard K/N split"
            in capsys.readouterr().err
        )
        (tmp_path / "empty").mkdir()
        assert main(["merge", str(tmp_path / "empty")]) == 2
        assert "empty: no report.json here, nor shard-K-of-N folders with one" in capsys.readouterr().err

    def test_retry_in_a_shard_folder_keeps_to_its_shard(self, tmp_path: Path, sim: Simulator) -> None:
        prompts = [f"[sim:502*1] flaky {k}" for k in range(12)]
        path = write(tmp_path / "jobs", "cat.yaml", "cat", prompts)
        run = ["run", str(path), "--shard", "1/2", "--max-attempts", "1", "--base-url", sim.base_url]
        assert main([*run, "--output", str(tmp_path / "o"), "-q"]) == 1
        first = dict(sim.stats.by_prompt)
        assert main(["retry", str(tmp_path / "o/cat/shard-1-of-2"), "--base-url", sim.base_url, "-q"]) == 0
        retried = {p for p, c in sim.stats.by_prompt.items() if c > first.get(p, 0)}
        assert retried == set(first)  # the shard's items again, none of the other shard's
        assert all(shard.shard_of(f"i{prompts.index(p)}", 2) == 1 for p in retried)

    def test_merging_different_jobs_is_refused(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for job in ("one", "two"):
            path = write(tmp_path / "jobs", f"{job}.yaml", job, ["x"])
            main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "o"), "-q"])
        assert main(["merge", str(tmp_path / "o/one"), str(tmp_path / "o/two")]) == 2
        assert "different jobs (one, two)" in capsys.readouterr().err

    def test_a_report_naming_files_outside_its_folder_is_refused(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(tmp_path / "jobs", "one.yaml", "one", ["x"])
        main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "o"), "-q"])
        report = report_of(tmp_path / "o/one")
        report["items"][0]["files"] = ["../../../../etc/hostname"]
        (tmp_path / "o/one/report.json").write_bytes(orjson.dumps(report))
        assert main(["merge", str(tmp_path / "o/one"), "--output", str(tmp_path / "m")]) == 3
        assert "outside its folder" in capsys.readouterr().err

    def test_a_merge_keeps_an_items_success_over_a_later_failure(
        self, tmp_path: Path, sim: Simulator
    ) -> None:
        # The same job run in two folders: in the second, the item failed; in the first, it succeeded.
        path = write(tmp_path / "jobs", "cat.yaml", "cat", ["[sim:500*1] flaky"])
        run = ["run", str(path), "--base-url", sim.base_url, "--max-attempts", "1", "-q"]
        assert main([*run, "--output", str(tmp_path / "failed")]) == 1
        assert main([*run, "--output", str(tmp_path / "made")]) == 0
        folders = [str(tmp_path / "made/cat"), str(tmp_path / "failed/cat")]  # the failure read last
        assert main(["merge", *folders, "--output", str(tmp_path / "m"), "-q"]) == 0
        assert report_of(tmp_path / "m/cat")["counts"]["succeeded"] == 1
        sent = sim.stats.requests
        assert main([*run, "--output", str(tmp_path / "m")]) == 0
        assert sim.stats.requests == sent  # the merged folder knows the image is paid for

    def test_a_merge_again_keeps_what_the_merged_folder_made_itself(
        self, tmp_path: Path, sim: Simulator
    ) -> None:
        # Shards, merge, and a review in the merged folder that redoes one image and sends a
        # refused one again; then merge again, as a nightly job does.
        path = write(tmp_path / "jobs", "cat.yaml", "cat", ["a tote", "a mug", "[sim:safety*1] a lamp"])
        night = ["--base-url", sim.base_url, "-q"]
        shards = [str(tmp_path / f"machine-{k}/cat") for k in (1, 2)]
        merged = tmp_path / "merged/cat"

        def shards_and_merge() -> int:
            for k in (1, 2):
                out = str(tmp_path / f"machine-{k}")
                main(["run", str(path), "--shard", f"{k}/2", "--output", out, *night])
            return main(["merge", *shards, "--output", str(tmp_path / "merged"), "-q"])

        assert shards_and_merge() == 1  # the lamp was refused
        first = (merged / "images/i0.png").read_bytes()
        assert main(["redo", str(merged), "i0", *night]) == 1  # done; the lamp still refused
        assert main(["retry", str(merged), "--all-failed", *night]) == 0  # the refusal, sent again
        redone, retried = (merged / "images/i0.png").read_bytes(), (merged / "images/i2.png").read_bytes()
        assert redone != first
        sent = sim.stats.requests

        assert main(["merge", *shards, "--output", str(tmp_path / "merged"), "-q"]) == 0
        assert (merged / "images/i0.png").read_bytes() == redone
        assert (merged / "images/i2.png").read_bytes() == retried
        assert (merged / "history/i0.1.png").read_bytes() == first
        report = report_of(merged)
        assert (report["counts"]["failed"], report["status"]) == (0, "completed")
        assert {item["id"]: item.get("version", 1) for item in report["items"]} == {"i0": 2, "i1": 1, "i2": 1}
        versions = {
            line["id"]: line.get("version", 1)
            for line in map(orjson.loads, (merged / "journal.jsonl").read_bytes().splitlines())
            if line.get("type") == "item"
        }
        assert versions == {"i0": 2, "i1": 1, "i2": 1}
        assert main(["run", str(path), "--output", str(tmp_path / "merged"), *night]) == 0
        assert sim.stats.requests == sent  # the merged folder knows every image is paid for
        # The next night: the lamp's shard sends it again (a run sends what failed), the redo stays.
        assert shards_and_merge() == 0
        assert sim.stats.requests == sent + 1
        assert (merged / "images/i0.png").read_bytes() == redone
        # A merge of one shard alone leaves the other's items as they are, and says one is missing.
        assert main(["merge", shards[0], "--output", str(tmp_path / "merged"), "-q"]) == 1
        assert (merged / "images/i0.png").read_bytes() == redone

        # The tote's prompt edited: its shard makes a new version, and the merge takes that one.
        write(tmp_path / "jobs", "cat.yaml", "cat", ["a red tote", "a mug", "[sim:safety*1] a lamp"])
        assert shards_and_merge() == 0
        (made,) = [p for p in tmp_path.glob("machine-*/cat/shard-*/images/i0.png")]
        assert (merged / "images/i0.png").read_bytes() == made.read_bytes() != redone

    def test_the_merged_gallery_names_the_folder_and_the_history_it_is_told(
        self, tmp_path: Path, sim: Simulator
    ) -> None:
        # A bucket's merge writes the gallery here and puts it in the bucket: it names the bucket's folder.
        self.run_shards(tmp_path, sim, 2, [1, 2])
        shards = [tmp_path / f"machine-{k}/cat" for k in (1, 2)]
        _, folder, _ = merge.merge(shards, tmp_path / "m", shown="s3://bucket/night/cat", kept=["i3.1.png"])
        page = (folder / "report.html").read_text()
        assert '"folder":"s3://bucket/night/cat"' in page
        assert "history/i3.1.png" in page

    def test_a_merge_again_brings_a_new_version_made_after_an_item_it_leaves(
        self, tmp_path: Path, sim: Simulator
    ) -> None:
        path = write(tmp_path / "jobs", "cat.yaml", "cat", ["a tote", "a mug"])
        run = ["--base-url", sim.base_url, "-q"]
        assert main(["run", str(path), "--output", str(tmp_path / "a"), *run]) == 0
        assert main(["merge", str(tmp_path / "a/cat"), "--output", str(tmp_path / "m"), "-q"]) == 0
        assert main(["redo", str(tmp_path / "m/cat"), "i0", *run]) == 0  # the merged folder's own
        write(tmp_path / "jobs", "cat.yaml", "cat", ["a tote", "a red mug"])  # another hue: another picture
        assert main(["run", str(path), "--output", str(tmp_path / "a"), *run]) == 0  # the source's own
        report, _, left = merge.merge([tmp_path / "a/cat"], tmp_path / "m")
        assert report.counts.succeeded == 2
        # What it left of the source: the redone tote's files (a bucket's merge copies none of
        # those), and nothing of the mug.
        assert {"images/i0.png", "images/i0.json"} <= left
        assert not [name for name in left if "i1" in name]
        mug = (tmp_path / "m/cat/images/i1.png").read_bytes()
        assert mug == (tmp_path / "a/cat/images/i1.png").read_bytes()
        assert (tmp_path / "m/cat/images/i0.png").read_bytes() != (
            tmp_path / "a/cat/images/i0.png"
        ).read_bytes()

    def test_a_merge_waits_for_no_one_holding_its_target(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(tmp_path / "jobs", "one.yaml", "one", ["x"])
        main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "o"), "-q"])
        (tmp_path / "m/one").mkdir(parents=True)
        with JobLock(tmp_path / "m/one"):
            assert main(["merge", str(tmp_path / "o/one"), "--output", str(tmp_path / "m")]) == 3
        assert "in use by another batchgen run" in capsys.readouterr().err
        assert not (tmp_path / "m/one/report.json").exists()

    def test_redo_in_a_shard_folder_refuses_an_id_of_another_shard(
        self, tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.run_shards(tmp_path, sim, 2, [1])
        folder = tmp_path / "machine-1/cat/shard-1-of-2"
        ours = next(f"i{k}" for k in range(len(self.PROMPTS)) if shard.shard_of(f"i{k}", 2) == 1)
        theirs = next(f"i{k}" for k in range(len(self.PROMPTS)) if shard.shard_of(f"i{k}", 2) == 2)
        sent = sim.stats.requests
        assert main(["redo", str(folder), theirs, "--base-url", sim.base_url, "-q"]) == 2
        err = capsys.readouterr().err
        assert "1 id(s) not in shard 1/2 of job 'cat'" in err
        assert err.rstrip().endswith(f": {theirs}; nothing was sent")
        assert sim.stats.requests == sent
        assert main(["redo", str(folder), ours, "--base-url", sim.base_url, "-q"]) == 0
        assert sim.stats.requests == sent + 1


def test_merge_reports_keeps_the_best_status_every_failure_row_and_sums_spend() -> None:
    def rep(
        shard_label: str, items: list[tuple[str, str]], sent: int, start: str, end: str, cost: float
    ) -> Report:
        return Report.from_json(
            {
                "job": "j",
                "manifest": "m",
                "status": "partial",
                "started_at": start,
                "finished_at": end,
                "duration_s": 0,
                "counts": {},
                "requests_sent": sent,
                "unconfirmed_attempts": 1,
                "estimated_cost": 0.5,
                "unconfirmed_cost": cost,
                "shard": shard_label,
                "failures": [
                    {"id": i, "class": "timeout", "message": f"{i} timed out"}
                    for i, s in items
                    if s == "failed"
                ],
                "items": [{"id": i, "status": s, "files": [], "attempts": 1} for i, s in items],
            }
        )

    merged = merge_reports(
        [
            rep(
                "1/2",
                [("a", "failed"), ("b", "succeeded"), ("d", "failed")],
                3,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z",
                0.25,
            ),
            rep(
                "2/2",
                [("a", "succeeded"), ("c", "pending"), ("e", "failed")],
                2,
                "2026-01-01T00:00:30Z",
                "2026-01-01T00:02:00Z",
                0.5,
            ),
        ]
    ).to_json()  # as report.json has it
    assert [(i["id"], i["status"]) for i in merged["items"]] == [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("c", "pending"),
        ("d", "failed"),
        ("e", "failed"),
    ]
    # a's failure is gone with its success; each shard's other failure keeps its row
    assert [(f["id"], f["class"], f["message"]) for f in merged["failures"]] == [
        ("d", "timeout", "d timed out"),
        ("e", "timeout", "e timed out"),
    ]
    assert merged["counts"] == {"total": 5, "succeeded": 2, "failed": 2, "skipped": 0, "pending": 1}
    assert (merged["requests_sent"], merged["unconfirmed_attempts"], merged["estimated_cost"]) == (5, 2, 1.0)
    assert merged["unconfirmed_cost"] == 0.75
    assert (merged["duration_s"], merged["status"]) == (120.0, "partial")


def test_json_logs_are_one_object_per_line_with_every_item(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "jobs", "a.yaml", "a", ["fine", "[sim:safety] no", "[sim:500*1] flaky"])
    assert (
        main(
            [
                "run",
                str(path),
                "--base-url",
                sim.base_url,
                "--output",
                str(tmp_path / "o"),
                "--log-format",
                "json",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [orjson.loads(line) for line in captured.err.splitlines()]
    events = [line["event"] for line in lines]
    assert events.count("item_finished") == 3
    assert events.count("item_retrying") == 1
    assert events[0] == "job_started"
    assert events[-1] == "job_finished"
    finished = {line["id"]: line for line in lines if line["event"] == "item_finished"}
    assert finished["i1"]["class"] == "safety_filter"
    assert finished["i0"]["files"] == ["images/i0.png"]
    assert lines[-1]["failures_by_class"] == {"safety_filter": 1}
    assert lines[-1]["exit_code"] == 1
    assert all(line["ts"].endswith("Z") and line["level"] in ("info", "warning", "error") for line in lines)


class TestPrices:
    TABLE = "currency: EUR\nper_image:\n  nano-banana-2: {'512': 1, 1K: 2, 2K: 3, 4K: 4}\n"

    def test_a_users_table_replaces_the_estimates(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "prices.yaml").write_text(self.TABLE)
        path = write(tmp_path, "a.yaml", "a", ["x", "y"])
        assert main(["validate", str(path), "--prices", str(tmp_path / "prices.yaml")]) == 0
        out = capsys.readouterr().out
        assert "estimated cost ~EUR 4.00" in out
        assert f"estimates from {tmp_path / 'prices.yaml'}" in out

    def test_the_manifest_can_name_its_table(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "prices.yaml").write_text(self.TABLE)
        path = write(tmp_path, "a.yaml", "a", ["x"], prices="prices.yaml")
        assert main(["validate", str(path)]) == 0
        assert "~EUR 2.00" in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("per_image: {m: {'512': 1, 1K: 2, 2K: 3}}", "per_image.m has no price for 4K"),
            (
                "per_image: {m: {'512': 1, 1K: -2, 2K: 3, 4K: 4}}",
                "per_image.m.1K must be a price of 0 or more",
            ),
            ("currency: USD", "needs a per_image mapping"),
            ("per_image: [", "not valid JSON or YAML"),
        ],
    )
    def test_a_broken_table_is_a_usage_error(
        self, tmp_path: Path, text: str, fragment: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "p.yaml").write_text(text)
        path = write(tmp_path, "a.yaml", "a", ["x"])
        assert main(["validate", str(path), "--prices", str(tmp_path / "p.yaml")]) == 2
        assert fragment in capsys.readouterr().err

    def test_unknown_models_without_a_star_row_cost_the_most(self) -> None:
        table = PriceTable.from_data(
            {
                "per_image": {
                    "a": {"512": 1, "1K": 2, "2K": 3, "4K": 4},
                    "b": {"512": 5, "1K": 1, "2K": 1, "4K": 1},
                }
            },
            "t",
        )
        assert table.cost("other", "512", 2) == 10
        assert table.cost("other", "1K", 1) == 2
