"""The job report (README "Outputs") and its one-screen summary: pure functions of the outcomes."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from batchgen.outcomes import ItemOutcome, ItemStatus, JobStatus
from batchgen.output import paths


def job_status(outcomes: Sequence[ItemOutcome], aborted: bool) -> JobStatus:
    if aborted:
        return JobStatus.ABORTED
    ok = (ItemStatus.SUCCEEDED, ItemStatus.SKIPPED)
    return JobStatus.COMPLETED if all(o.status in ok for o in outcomes) else JobStatus.PARTIAL


def _items(outcomes: Sequence[ItemOutcome]) -> list[dict[str, Any]]:
    # A plain loop and each status's value looked up once: a catalog report lists 100,000 items.
    value = {status: status.value for status in ItemStatus}
    items = []
    for o in outcomes:
        item = {"id": o.id, "status": value[o.status], "files": list(o.files), "attempts": o.attempts}
        if o.version > 1:
            item["version"] = o.version
        items.append(item)
    return items


def build_report(
    *,
    job: str,
    manifest: str,
    outcomes: Sequence[ItemOutcome],
    aborted: str | None,
    started_at: float,
    finished_at: float,
    interrupted: str | None = None,
    shard: str | None = None,
) -> dict[str, Any]:
    counts = Counter(o.status for o in outcomes)
    failures = [o for o in outcomes if o.status is ItemStatus.FAILED and o.failure is not None]
    report: dict[str, Any] = {
        "job": job,
        "manifest": manifest,
        "status": job_status(outcomes, aborted is not None).value,
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "duration_s": round(finished_at - started_at, 3),
        "counts": {
            "total": len(outcomes),
            "succeeded": counts[ItemStatus.SUCCEEDED],
            "failed": counts[ItemStatus.FAILED],
            "skipped": counts[ItemStatus.SKIPPED],
            "pending": counts[ItemStatus.PENDING],
        },
        "requests_sent": sum(o.requests_sent for o in outcomes),
        "unconfirmed_attempts": sum(o.unconfirmed for o in outcomes),
        "estimated_cost": round(sum(o.estimated_cost for o in outcomes), 4),
        "unconfirmed_cost": round(sum(o.unconfirmed_cost for o in outcomes), 4),
        "failures": [
            {
                "id": o.id,
                "prompt": o.prompt,
                "class": o.failure.error_class.value,
                "message": o.failure.message,
                "http_status": o.failure.http_status,
                "attempts": o.attempts,
                "retryable": o.failure.retryable,
                **({"links": list(o.failure.links)} if o.failure.links else {}),
            }
            for o in failures
            if o.failure is not None
        ],
        "items": _items(outcomes),
    }
    if aborted:
        report["aborted_reason"] = aborted
    if interrupted:
        report["interrupted_by"] = interrupted
    if shard:
        report["shard"] = shard
    return report


def summary_lines(report: dict[str, Any], output: str) -> list[str]:
    """What a person reads at the end of a run: fits on one screen whatever the job's size."""
    c = report["counts"]
    lines = [
        f"{report['job']}: {report['status']} in {report['duration_s']:.1f}s: {c['total']} items,"
        f" {c['succeeded']} succeeded, {c['failed']} failed, {c['skipped']} skipped, {c['pending']} pending",
        f"  requests sent {report['requests_sent']}"
        + _unconfirmed(report)
        + f", estimated cost ${report['estimated_cost']:.2f}",
    ]
    if report.get("aborted_reason"):
        lines.append(f"  aborted: {report['aborted_reason']}")
    if report.get("interrupted_by"):
        lines.append(f"  interrupted by {report['interrupted_by']}: re-run to finish the pending items")
    by_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for failure in report["failures"]:
        by_class[failure["class"]].append(failure)
    if by_class:
        lines.append("  failures by class:")
        for name, group in sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            first = group[0]
            more = f" (+{len(group) - 1} more)" if len(group) > 1 else ""
            retry = "retryable" if first["retryable"] else "final"
            lines.append(
                f"    {name:<17}{len(group):>5}  {retry}; e.g. {first['id']}: {_clip(first['message'])}{more}"
            )
    lines.append(f"  report: {output}/{paths.REPORT_JSON}")
    lines.append(f"  gallery: {output}/{paths.REPORT_HTML}")
    return lines


def _unconfirmed(report: dict[str, Any]) -> str:
    count = report["unconfirmed_attempts"]
    if not count:
        return ""
    return f" ({count} unconfirmed: perhaps billed, ~${report.get('unconfirmed_cost', 0.0):.2f})"


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def merge_reports(reports: Sequence[dict[str, Any]], missing_shards: Sequence[str] = ()) -> dict[str, Any]:
    """One report for a job run as several shards (or several partial runs).

    An item in more than one report keeps its best status (succeeded, skipped,
    failed, pending); counts are recomputed from the merged items; spend and
    requests are summed; the time span runs from the first start to the last end.
    """
    rank = {"succeeded": 0, "skipped": 1, "failed": 2, "pending": 3}
    items: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, Any]] = {}
    for report in reports:
        by_id = {f["id"]: f for f in report["failures"]}
        for item in report["items"]:
            held = items.get(item["id"])
            if held is None or rank[item["status"]] <= rank[held["status"]]:
                items[item["id"]] = item
                if item["id"] in by_id:
                    failures[item["id"]] = by_id[item["id"]]
                else:
                    failures.pop(item["id"], None)
    merged_items = [items[k] for k in sorted(items)]
    counts = Counter(item["status"] for item in merged_items)
    started = min(r["started_at"] for r in reports)
    finished = max(r["finished_at"] for r in reports)
    aborted = [r["aborted_reason"] for r in reports if r.get("aborted_reason")]
    if aborted:
        status = JobStatus.ABORTED.value
    elif missing_shards or any(item["status"] in ("failed", "pending") for item in merged_items):
        status = JobStatus.PARTIAL.value
    else:
        status = JobStatus.COMPLETED.value
    merged: dict[str, Any] = {
        "job": reports[0]["job"],
        "manifest": reports[0]["manifest"],
        "status": status,
        "started_at": started,
        "finished_at": finished,
        "duration_s": round((_parse_iso(finished) - _parse_iso(started)), 3),
        "counts": {
            "total": len(merged_items),
            "succeeded": counts["succeeded"],
            "failed": counts["failed"],
            "skipped": counts["skipped"],
            "pending": counts["pending"],
        },
        "requests_sent": sum(r["requests_sent"] for r in reports),
        "unconfirmed_attempts": sum(r["unconfirmed_attempts"] for r in reports),
        "estimated_cost": round(sum(r["estimated_cost"] for r in reports), 4),
        "unconfirmed_cost": round(sum(r.get("unconfirmed_cost", 0.0) for r in reports), 4),
        "failures": [failures[k] for k in sorted(failures) if items[k]["status"] == "failed"],
        "items": merged_items,
        "merged_from": sorted({r.get("shard") or r["job"] for r in reports}),
    }
    if aborted:
        merged["aborted_reason"] = "; ".join(aborted)
    if missing_shards:
        merged["missing_shards"] = list(missing_shards)
    return merged


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
