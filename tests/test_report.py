"""The report is a pure function of the outcomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.errors import ErrorClass
from batchgen.outcomes import Failure, ItemOutcome, ItemStatus
from batchgen.report.record import Report
from batchgen.report.report import build_report, summary_lines

S, F, K, P = ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.SKIPPED, ItemStatus.PENDING


def outcome(k: int, status: ItemStatus, error_class: ErrorClass = ErrorClass.SAFETY_FILTER) -> ItemOutcome:
    failure = Failure(error_class, f"msg {k}", 500, error_class.retryable) if status is F else None
    files = (f"images/i{k}.png",) if status in (S, K) else ()
    return ItemOutcome(
        k,
        f"i{k}",
        f"prompt {k}",
        status,
        attempts=2 if status is F else 1,
        files=files,
        failure=failure,
        requests_sent=2,
        unconfirmed=k % 2,
        estimated_cost=0.5 if status is S else 0.0,
        unconfirmed_cost=0.25 * (k % 2),
    )


def record_of(statuses: list[ItemStatus], aborted: str | None = None) -> Report:
    return build_report(
        job="j",
        manifest="jobs/j.yaml",
        outcomes=[outcome(k, s) for k, s in enumerate(statuses)],
        aborted=aborted,
        started_at=1_700_000_000,
        finished_at=1_700_000_012.5,
    )


def report_of(statuses: list[ItemStatus], aborted: str | None = None) -> dict:  # type: ignore[type-arg]
    """As report.json has it."""
    return record_of(statuses, aborted).to_json()


@pytest.mark.parametrize(
    ("statuses", "aborted", "status"),
    [
        ([S, S, K], None, "completed"),
        ([S, F], None, "partial"),
        ([S, P], None, "partial"),
        ([S, S], "bad key", "aborted"),
        ([], None, "completed"),
    ],
)
def test_job_status(statuses: list[ItemStatus], aborted: str | None, status: str) -> None:
    assert report_of(statuses, aborted)["status"] == status


def test_shape_counts_and_failures() -> None:
    report = report_of([S, F, K, P, F])
    assert list(report) == [
        "job",
        "manifest",
        "status",
        "started_at",
        "finished_at",
        "duration_s",
        "counts",
        "requests_sent",
        "unconfirmed_attempts",
        "estimated_cost",
        "unconfirmed_cost",
        "failures",
        "flags",
        "items",
    ]
    assert report["flags"] == {"size_mismatch": 0}
    assert report["counts"] == {"total": 5, "succeeded": 1, "failed": 2, "skipped": 1, "pending": 1}
    assert (report["requests_sent"], report["unconfirmed_attempts"], report["estimated_cost"]) == (10, 2, 0.5)
    assert report["unconfirmed_cost"] == 0.5
    assert "2 unconfirmed: perhaps billed, ~$0.50" in summary_lines(record_of([S, F, K, P, F]), "out/j")[1]
    assert report["started_at"] == "2023-11-14T22:13:20Z"
    assert report["duration_s"] == 12.5
    assert report["failures"][0] == {
        "id": "i1",
        "prompt": "prompt 1",
        "class": "safety_filter",
        "message": "msg 1",
        "http_status": 500,
        "attempts": 2,
        "retryable": False,
    }
    assert [f["id"] for f in report["failures"]] == ["i1", "i4"]
    assert report["items"][0] == {
        "id": "i0",
        "status": "succeeded",
        "files": ["images/i0.png"],
        "attempts": 1,
    }
    assert [i["status"] for i in report["items"]] == ["succeeded", "failed", "skipped", "pending", "failed"]


def test_summary_groups_failures_by_class_on_one_screen() -> None:
    outcomes = [outcome(k, F, ErrorClass.SAFETY_FILTER) for k in range(500)] + [
        outcome(500, F, ErrorClass.TIMEOUT)
    ]
    report = build_report(job="j", manifest="m", outcomes=outcomes, aborted=None, started_at=0, finished_at=1)
    lines = summary_lines(report, "output/j")
    assert len(lines) < 10
    assert any(
        line.split()[:2] == ["safety_filter", "500"] and "final" in line and "(+499 more)" in line
        for line in lines
    )
    assert any(line.split()[:2] == ["timeout", "1"] and "retryable" in line for line in lines)
    assert lines[-2:] == ["  report: output/j/report.json", "  gallery: output/j/report.html"]


@pytest.mark.parametrize("text", [b'{"job": "j"}', b'{"job": "j", "items": [{"id": "a"}]}', b"[1, 2]"])
def test_report_of_a_file_that_is_not_a_report_is_a_usage_error(
    tmp_path: Path, text: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "j/report.json").write_bytes(text)
    assert main(["report", str(tmp_path / "j")]) == 2  # not 1 (items failed), and no traceback
    assert "report.json is not a batchgen report" in capsys.readouterr().err


def test_merge_of_a_file_that_is_not_a_report_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "j/report.json").write_bytes(b'{"job": "j", "items": [{"id": "a"}]}')
    assert main(["merge", str(tmp_path / "j"), "--output", str(tmp_path / "m")]) == 2
    assert "report.json is not a batchgen report" in capsys.readouterr().err


def test_the_relays_limit_is_reported_read_back_and_kept_by_a_merge() -> None:
    from dataclasses import replace

    from batchgen.outcomes import LimitSource, RelaySeen
    from batchgen.report.report import merge_reports

    plain = record_of([S, S])
    assert "relay_limit" not in plain.to_json()  # absent unless known: older readers see nothing new
    seen = RelaySeen(120, 60.0, LimitSource.STATED)
    learned = replace(record_of([S]), relay_limit=seen, shard="1/2")
    written = learned.to_json()
    assert written["relay_limit"] == {"requests": 120, "window_s": 60.0, "source": "stated"}
    assert Report.from_json(written).relay_limit == seen
    headers = RelaySeen(60, None, LimitSource.HEADERS)
    assert Report.from_json(replace(learned, relay_limit=headers).to_json()).relay_limit == headers
    assert merge_reports([replace(plain, shard="2/2"), learned]).relay_limit == seen
    lines = summary_lines(learned, "out/j")
    assert (
        "  the relay's rate limit: 120 requests a minute (learned from its 429, kept for the next run)"
        in lines
    )
