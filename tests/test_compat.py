"""A job folder written by batchgen 0.3.0 (tests/data/job-v0.3.0), read and run again by today's code.

What people and scripts read (journal lines, sidecars, report.json) is a typed record with
one writer and one reader each. These tests hold both to the files on people's disks: the
readers take every file of the old folder, the writers give back exactly what it holds,
and `batchgen report` and `batchgen run` carry on from it.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgen.cli.main import main
from batchgen.errors import ErrorClass
from batchgen.outcomes import ItemStatus, JobStatus
from batchgen.output import journal, paths, sidecar
from batchgen.output.journal import Entry, JournalFile, RunHeader
from batchgen.output.sidecar import Sidecar
from batchgen.output.store import StoredFile
from batchgen.report import record
from batchgen.report.record import Report, ReportFailure, ReportItem, StatusCounts
from batchgen.sim.simulator import Simulator

FIXTURE = Path(__file__).parent / "data" / "job-v0.3.0"
S, F, K = ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.SKIPPED
MADE = ("mug-red", "mug-pair", "with-ref")  # succeeded in 0.3.0's run; mug-red made again by a redo
PROMPTS = {
    "mug-red": "A red mug on a white table",
    "mug-pair": "Two blue mugs",
    "with-ref": "A mug like this one",
}


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """A copy of the 0.3.0 project (jobs/ and out/); returns its job folder."""
    shutil.copytree(FIXTURE, tmp_path / "project")
    return tmp_path / "project" / "out" / "v03"


def json_lines(folder: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (folder / paths.JOURNAL).read_bytes().splitlines() if line]


def sidecar_files(folder: Path) -> list[Path]:
    return sorted([*(folder / paths.IMAGES).glob("*.json"), *(folder / paths.HISTORY).glob("*.json")])


# --- the readers take 0.3.0's files -------------------------------------------------------------


def test_every_journal_line_reads_as_a_record(old: Path) -> None:
    lines = list(journal.lines(old))
    assert [type(line) for line in lines] == [RunHeader, *[Entry] * 5, RunHeader, Entry]
    run = lines[0]
    assert isinstance(run, RunHeader)
    assert (run.manifest, run.manifest_relative, run.shard) == (
        "/tmp/fx/jobs/v03.yaml",
        "../../jobs/v03.yaml",
        None,
    )
    entries = [line for line in lines if isinstance(line, Entry)]
    assert [(e.id, e.status, e.error_class) for e in entries] == [
        ("refused", F, ErrorClass.SAFETY_FILTER),
        ("mug-pair", S, None),
        ("mug-red", S, None),
        ("with-ref", S, None),
        ("flaky", F, ErrorClass.SERVER_ERROR),
        ("mug-red", S, None),  # the redo
    ]
    refused, pair, flaky = entries[0], entries[1], entries[4]
    assert (refused.retryable, refused.http_status, refused.attempts) == (False, 500, 1)
    assert (flaky.retryable, flaky.attempts, flaky.resent_by_retry) == (True, 2, True)
    assert pair.files == tuple(
        JournalFile(
            f"images/mug-pair-{k}.png",
            "578efeb0076afa35bbe21c5e5ca0d320cd375296d2ba47ba67999fe63eef0a3e",
            5929,
        )
        for k in (1, 2)
    )
    assert pair.estimated_cost == 0.078
    assert [e.version for e in entries] == [1, 1, 1, 1, 1, 2]


def test_the_journal_state_is_the_last_word_per_item(old: Path) -> None:
    state = journal.read(old)
    assert state.damaged_lines == 0
    assert (state.manifest, state.manifest_relative) == ("/tmp/fx/jobs/v03.yaml", "../../jobs/v03.yaml")
    assert {k: (e.status, e.version) for k, e in state.entries.items()} == {
        "refused": (F, 1),
        "mug-pair": (S, 1),
        "mug-red": (S, 2),
        "with-ref": (S, 1),
        "flaky": (F, 1),
    }


def test_every_sidecar_reads_as_a_record(old: Path) -> None:
    found = {path.relative_to(old).as_posix(): sidecar.load(path) for path in sidecar_files(old)}
    assert set(found) == {
        "images/mug-red.json",
        "images/mug-pair.json",
        "images/with-ref.json",
        paths.history(paths.sidecar("mug-red"), 1),
    }
    for name, car in found.items():
        assert car is not None, name
        assert car.model == "nano-banana-2"
        assert car.request["prompt"] == PROMPTS[car.id]
        assert car.path == paths.sidecar(car.id)
    pair = sidecar.read(old, "mug-pair")
    assert pair is not None
    assert [(f.path, f.bytes, f.mime) for f in pair.files] == [
        ("images/mug-pair-1.png", 5929, "image/png"),
        ("images/mug-pair-2.png", 5929, "image/png"),
    ]
    assert (pair.attempts, pair.latency_s, pair.created, pair.estimated_cost) == (1, 0.049, 1700000000, 0.078)
    with_ref = sidecar.read(old, "with-ref")
    assert with_ref is not None
    assert with_ref.request["extra_fields"]["reference_images"][0].startswith("file:ref.png sha256:")


def test_the_redone_item_keeps_its_first_version_in_history(old: Path) -> None:
    (last,) = [e for e in journal.read(old).entries.values() if e.id == "mug-red"]
    assert last.version == 2
    image = paths.history("images/mug-red.png", 1)
    assert image == "history/mug-red.1.png"
    assert (old / image).is_file()
    kept = sidecar.load(old / paths.history(paths.sidecar("mug-red"), 1))
    assert kept is not None
    assert kept.files == (
        StoredFile(
            "images/mug-red.png",
            "3a36b4071093fd4708f5f0800a79f456a382dda1a5ffba4ac627b40b4a80628f",
            5938,
            "image/png",
        ),
    )
    assert kept.latency_s == 0.059  # the first take's, not the redo's
    current = sidecar.read(old, "mug-red")
    assert current is not None
    assert current.latency_s == 0.026


def test_report_json_reads_as_a_record(old: Path) -> None:
    report = record.read(old)
    assert (report.job, report.status, report.manifest) == (
        "v03",
        JobStatus.PARTIAL,
        "out/v03/../../jobs/v03.yaml",
    )
    assert report.started_at == datetime(2026, 11, 24, 10, 4, 32, tzinfo=UTC)
    assert report.counts == StatusCounts(total=5, succeeded=1, failed=2, skipped=2, pending=0)
    assert (report.requests_sent, report.unconfirmed_attempts, report.estimated_cost) == (1, 0, 0.039)
    assert [(i.id, i.status, i.files, i.version) for i in report.items] == [
        ("mug-red", S, ("images/mug-red.png",), 2),
        ("mug-pair", K, ("images/mug-pair-1.png", "images/mug-pair-2.png"), 1),
        ("with-ref", K, ("images/with-ref.png",), 1),
        ("refused", F, (), 1),
        ("flaky", F, (), 1),
    ]
    assert [(f.id, f.error_class, f.http_status, f.attempts, f.retryable) for f in report.failures] == [
        ("refused", ErrorClass.SAFETY_FILTER, 500, 1, False),
        ("flaky", ErrorClass.SERVER_ERROR, 500, 2, True),
    ]
    assert (report.aborted_reason, report.interrupted_by, report.shard, report.merged_from) == (None,) * 4


# --- the writers give back exactly what 0.3.0 wrote -----------------------------------------------


def test_journal_lines_are_written_back_byte_for_byte(old: Path) -> None:
    raw = [line for line in (old / paths.JOURNAL).read_bytes().splitlines() if line]
    for line, data, parsed in zip(raw, json_lines(old), journal.lines(old), strict=True):
        assert parsed is not None
        written = parsed.to_json() if isinstance(parsed, RunHeader) else parsed.to_json(data["finished_at"])
        assert list(written) == list(data)  # the same keys, in the same order
        assert orjson.dumps(written) == line


def test_sidecars_and_the_report_are_written_back_byte_for_byte(old: Path) -> None:
    def as_written(data: dict[str, Any]) -> bytes:  # as JobStore.write_json writes a file
        return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"

    for path in sidecar_files(old):
        car = sidecar.load(path)
        assert car is not None
        assert list(car.to_json()) == list(orjson.loads(path.read_bytes()))
        assert as_written(car.to_json()) == path.read_bytes(), path
    report = record.read(old)
    raw = orjson.loads((old / paths.REPORT_JSON).read_bytes())
    assert list(report.to_json()) == list(raw)
    assert [list(i) for i in report.to_json()["items"]] == [list(i) for i in raw["items"]]
    assert [list(f) for f in report.to_json()["failures"]] == [list(f) for f in raw["failures"]]
    assert as_written(report.to_json()) == (old / paths.REPORT_JSON).read_bytes()


# --- every record survives its writer and reader, the optional fields too ---------------------------


def test_journal_records_round_trip(old: Path) -> None:
    entry = Entry(
        "a",
        F,
        "fp",
        "p",
        3,
        error_class=ErrorClass.DOWNLOAD_FAILED,
        message="gone",
        http_status=404,
        retryable=False,
        estimated_cost=0.04,
        links=("https://cdn.test/a",),
        version=3,
    )
    made = Entry(
        "b", S, "fp", "p", 1, (JournalFile("images/b.png", "ab", 3),), estimated_cost=0.04, version=2
    )
    header = RunHeader("/jobs/m.yaml", "../../jobs/m.yaml", 1.5, shard="2/4", merged=True)
    for kept in (entry, made):
        assert Entry.from_json(kept.to_json(9.0)) == kept
    assert RunHeader.from_json(header.to_json()) == header
    # Beyond the keys 0.3.0 wrote, only the optional ones, and only when they say something.
    lines = json_lines(old)
    failed_keys = set(next(line for line in lines if line.get("status") == "failed"))
    version_keys = set(lines[-1])
    assert set(entry.to_json(9.0)) == failed_keys | version_keys | {"links"}
    assert set(made.to_json(9.0)) == version_keys
    assert set(header.to_json()) == set(lines[0]) | {"merged", "shard"}


def test_sidecar_records_round_trip(old: Path) -> None:
    car = Sidecar(
        "a",
        {"model": "m", "prompt": "p", "extra_fields": {"aspect_ratio": "4:5"}},
        "m",
        None,
        2,
        1.25,
        (
            StoredFile("images/a-1.png", "ab", 3, "image/png"),
            StoredFile("images/a-2.jpg", "cd", 4, "image/jpeg"),
        ),
        0.5,
    )
    assert Sidecar.from_json(car.to_json()) == car
    assert set(car.to_json()) == set(orjson.loads((old / paths.sidecar("mug-red")).read_bytes()))
    # What the gallery has always taken: a sidecar with less in it reads, with the rest at its defaults.
    assert Sidecar.from_json({"request": {"prompt": "p"}}) == Sidecar("", {"prompt": "p"})
    assert Sidecar.from_json([1, 2]) is None


def test_report_records_round_trip(old: Path) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    report = Report(
        job="j",
        manifest="jobs/j.yaml",
        status=JobStatus.ABORTED,
        started_at=when,
        finished_at=when,
        duration_s=0.5,
        counts=StatusCounts(3, 1, 1, 0, 1),
        requests_sent=4,
        unconfirmed_attempts=1,
        estimated_cost=0.08,
        unconfirmed_cost=0.04,
        failures=(
            ReportFailure("b", "p", ErrorClass.DOWNLOAD_FAILED, "gone", 404, 2, False, ("https://x/b",)),
        ),
        items=(
            ReportItem("a", S, ("images/a.png",), 1, 2),
            ReportItem("b", F, (), 2),
            ReportItem("c", ItemStatus.PENDING),
        ),
        aborted_reason="bad key",
        interrupted_by="SIGTERM",
        shard="1/2",
        merged_from=("1/2", "2/2"),
        missing_shards=("2/2",),
    )
    assert Report.from_json(report.to_json()) == report
    raw = orjson.loads((old / paths.REPORT_JSON).read_bytes())
    optional = {"aborted_reason", "interrupted_by", "shard", "merged_from", "missing_shards"}
    assert set(report.to_json()) == set(raw) | optional
    assert set(report.to_json()["items"][0]) == set(raw["items"][0])  # mug-red: with its version
    assert set(report.to_json()["failures"][0]) == set(raw["failures"][0]) | {"links"}


# --- the commands carry on from the old folder --------------------------------------------------


def test_batchgen_report_rebuilds_the_gallery_and_prints_the_summary(
    old: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (old / paths.REPORT_HTML).unlink()
    assert main(["report", str(old)]) == 1  # two items failed
    out = capsys.readouterr().out
    assert "v03: partial in 0.0s: 5 items, 1 succeeded, 2 failed, 2 skipped, 0 pending" in out
    assert re.search(r"safety_filter +1 +final; e\.g\. refused", out)
    page = (old / paths.REPORT_HTML).read_text()
    block = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert block is not None
    data = orjson.loads(block.group(1))
    rows = {row[0]: row for row in data["items"]}
    assert set(rows) == {"mug-red", "mug-pair", "with-ref", "refused", "flaky"}
    assert rows["mug-red"][7] == 2  # its version
    assert data["history"] == {"mug-red": ["history/mug-red.1.png"]}
    assert data["params"][rows["mug-pair"][4]] == {
        "model": "nano-banana-2",
        "size": "1K",
        "n": 2,
        "response_format": "b64_json",
    }  # from its sidecar
    assert [data["classes"][rows[k][2]] for k in ("refused", "flaky")] == ["safety_filter", "server_error"]


@pytest.mark.usefixtures("api_key")
def test_batchgen_run_skips_what_0_3_0_made_and_leaves_a_folder_it_reads(old: Path, sim: Simulator) -> None:
    manifest = old.parent.parent / "jobs" / "v03.yaml"
    out = old.parent
    code = main(
        ["run", str(manifest), "--base-url", sim.base_url, "--output", str(out), "--max-attempts", "1", "-q"]
    )
    assert code == 1  # the two failures are sent again, and fail again
    assert not any(sim.stats.by_prompt.get(PROMPTS[k]) for k in MADE), dict(sim.stats.by_prompt)
    assert sim.stats.by_prompt["[sim:safety] something"] == 1

    report = record.read(old)
    assert {i.id: (i.status, i.version) for i in report.items} == {
        "mug-red": (K, 2),
        "mug-pair": (K, 1),
        "with-ref": (K, 1),
        "refused": (F, 1),
        "flaky": (F, 1),
    }
    assert report.requests_sent == 2
    lines = list(journal.lines(old))
    assert None not in lines
    assert len(lines) == 8 + 1 + 2  # 0.3.0's lines, this run's header and its two failures
    state = journal.read(old)
    assert (state.entries["mug-red"].version, state.entries["refused"].error_class) == (
        2,
        ErrorClass.SAFETY_FILTER,
    )
    assert state.manifest == str(manifest.resolve())
    for path in sidecar_files(old):
        assert sidecar.load(path) is not None
    assert orjson.loads((old / paths.REPORT_JSON).read_bytes()) == report.to_json()
    assert main(["report", str(old), "-q"]) == 1
