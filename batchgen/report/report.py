"""The job report (docs/outputs.md) and its one-screen summary: pure functions of the outcomes.

A run's report and the report of shards merged are assembled by the one function,
``assemble``: from a line per item (with its failure row, if it failed), what the items
cost, and the time span. ``build_report`` gives it a run's outcomes, ``merge_reports``
the best line per item of several reports.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from batchgen.outcomes import ItemOutcome, ItemStatus, JobStatus, LimitSource, RelaySeen
from batchgen.output import paths
from batchgen.report.record import Report, ReportFailure, ReportItem, StatusCounts, flag_counts, moment

# An item in more than one report keeps its best status.
_RANK = {ItemStatus.SUCCEEDED: 0, ItemStatus.SKIPPED: 1, ItemStatus.FAILED: 2, ItemStatus.PENDING: 3}


@dataclass(frozen=True, slots=True)
class Spend:
    """What the items cost: summed over a run's outcomes, or over the reports merged."""

    requests_sent: int = 0
    unconfirmed_attempts: int = 0
    estimated_cost: float = 0.0
    unconfirmed_cost: float = 0.0


def job_status(counts: StatusCounts, aborted: bool, incomplete: bool = False) -> JobStatus:
    """``incomplete``: some of the job is not in the report at all (shards missing from a merge)."""
    if aborted:
        return JobStatus.ABORTED
    if incomplete or counts.failed or counts.pending:
        return JobStatus.PARTIAL
    return JobStatus.COMPLETED


def assemble(
    *,
    job: str,
    manifest: str,
    items: Sequence[ReportItem],
    failures: Iterable[ReportFailure],
    spend: Spend,
    started_at: float,
    finished_at: float,
    aborted: str | None,
    interrupted: str | None = None,
    shard: str | None = None,
    merged_from: Sequence[str] | None = None,
    missing_shards: Sequence[str] = (),
    relay_limit: RelaySeen | None = None,
) -> Report:
    """The report of ``items`` (in the report's order), with ``failures``, the rows of those
    that ended failed; counts and status follow from the items, the spend is rounded."""
    counts = StatusCounts.of([item.status for item in items])
    return Report(
        job=job,
        manifest=manifest,
        status=job_status(counts, aborted is not None, incomplete=bool(missing_shards)),
        started_at=moment(started_at),
        finished_at=moment(finished_at),
        duration_s=round(finished_at - started_at, 3),
        counts=counts,
        requests_sent=spend.requests_sent,
        unconfirmed_attempts=spend.unconfirmed_attempts,
        estimated_cost=round(spend.estimated_cost, 4),
        unconfirmed_cost=round(spend.unconfirmed_cost, 4),
        failures=tuple(failures),
        items=tuple(items),
        aborted_reason=aborted or None,
        interrupted_by=interrupted or None,
        shard=shard or None,
        merged_from=None if merged_from is None else tuple(merged_from),
        missing_shards=tuple(missing_shards),
        flags=flag_counts(items),
        relay_limit=relay_limit,
    )


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
    relay_limit: RelaySeen | None = None,
) -> Report:
    spend = Spend(
        requests_sent=sum(o.requests_sent for o in outcomes),
        unconfirmed_attempts=sum(o.unconfirmed for o in outcomes),
        estimated_cost=sum(o.estimated_cost for o in outcomes),
        unconfirmed_cost=sum(o.unconfirmed_cost for o in outcomes),
    )
    return assemble(
        job=job,
        manifest=manifest,
        items=[_item(o) for o in outcomes],
        failures=[_failure_row(o) for o in outcomes if o.status is ItemStatus.FAILED and o.failure],
        spend=spend,
        started_at=started_at,
        finished_at=finished_at,
        aborted=aborted,
        interrupted=interrupted,
        shard=shard,
        relay_limit=relay_limit,
    )


def _item(o: ItemOutcome) -> ReportItem:
    d = o.derived
    if d is None:
        return ReportItem(o.id, o.status, o.files, o.attempts, o.version, o.pixels, o.flags)
    return ReportItem(
        o.id, o.status, o.files, o.attempts, o.version, o.pixels, o.flags, d.channels, d.upscaled, d.errors
    )


def _failure_row(o: ItemOutcome) -> ReportFailure:
    f = o.failure
    assert f is not None
    return ReportFailure(
        *(o.id, o.prompt, f.error_class, f.message, f.http_status, o.attempts, f.retryable),
        links=f.links,
        blocked_by=f.blocked_by,
    )


def merge_reports(
    reports: Sequence[Report],
    missing_shards: Sequence[str] = (),
    standing: Mapping[str, ReportItem] | None = None,
) -> Report:
    """One report for a job run as several shards (or several partial runs).

    An item in more than one report keeps its best status (succeeded, skipped,
    failed, pending), and its failure row from the same report; spend and requests are
    summed; the time span runs from the first start to the last end. ``standing``: rows that
    stand whatever the reports say (the merged folder's own newer images).
    """
    best: dict[str, tuple[ReportItem, ReportFailure | None]] = {}
    for report in reports:
        rows = {f.id: f for f in report.failures}
        for item in report.items:
            held = best.get(item.id)
            if held is None or _RANK[item.status] <= _RANK[held[0].status]:
                best[item.id] = (item, rows.get(item.id))
    best.update((item_id, (row, None)) for item_id, row in (standing or {}).items())
    spend = Spend(
        requests_sent=sum(r.requests_sent for r in reports),
        unconfirmed_attempts=sum(r.unconfirmed_attempts for r in reports),
        estimated_cost=sum(r.estimated_cost for r in reports),
        unconfirmed_cost=sum(r.unconfirmed_cost for r in reports),
    )
    aborted = [r.aborted_reason for r in reports if r.aborted_reason]
    kept = [best[k] for k in sorted(best)]
    return assemble(
        job=reports[0].job,
        manifest=reports[0].manifest,
        items=[item for item, _ in kept],
        failures=[row for item, row in kept if item.status is ItemStatus.FAILED and row is not None],
        spend=spend,
        started_at=min(r.started_at for r in reports).timestamp(),
        finished_at=max(r.finished_at for r in reports).timestamp(),
        aborted="; ".join(aborted) if aborted else None,
        merged_from=sorted({r.shard or r.job for r in reports}),
        missing_shards=missing_shards,
        # The key's limit, as the shards knew it: the latest report's that says one.
        relay_limit=next(
            (
                r.relay_limit
                for r in sorted(reports, key=lambda r: r.finished_at, reverse=True)
                if r.relay_limit
            ),
            None,
        ),
    )


def summary_lines(report: Report, output: str) -> list[str]:
    """What a person reads at the end of a run: fits on one screen whatever the job's size."""
    c = report.counts
    lines = [
        f"{report.job}: {report.status.value} in {report.duration_s:.1f}s: {c.total} items,"
        f" {c.succeeded} succeeded, {c.failed} failed, {c.skipped} skipped, {c.pending} pending",
        f"  requests sent {report.requests_sent}"
        + _unconfirmed(report)
        + f", estimated cost ${report.estimated_cost:.2f}",
    ]
    flagged = {name: n for name, n in (report.flags or {}).items() if n}
    if flagged:
        lines[0] += ", flagged: " + ", ".join(f"{n} {name}" for name, n in flagged.items())
        lines.append(
            f"  flagged items are kept and count as succeeded (they were billed); to make them again:"
            f" batchgen redo {output} --flag {next(iter(flagged))}"
        )
    if report.relay_limit is not None:
        seen = report.relay_limit
        lines.append(f"  the relay's rate limit: {seen.describe()} ({_SOURCES[seen.source]})")
    if report.aborted_reason:
        lines.append(f"  aborted: {report.aborted_reason}")
    if report.interrupted_by:
        lines.append(f"  interrupted by {report.interrupted_by}: re-run to finish the pending items")
    by_class: dict[str, list[ReportFailure]] = defaultdict(list)
    for failure in report.failures:
        by_class[failure.error_class.value].append(failure)
    if by_class:
        lines.append("  failures by class:")
        for name, group in sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            first = group[0]
            more = f" (+{len(group) - 1} more)" if len(group) > 1 else ""
            retry = "retryable" if first.retryable else "final"
            lines.append(
                f"    {name:<17}{len(group):>5}  {retry}; e.g. {first.id}: {_clip(first.message)}{more}"
            )
    lines.append(f"  report: {output}/{paths.REPORT_JSON}")
    lines.append(f"  gallery: {output}/{paths.REPORT_HTML}")
    return lines


_SOURCES = {
    LimitSource.STATED: "learned from its 429, kept for the next run",
    LimitSource.REMEMBERED: "learned by an earlier run",
    LimitSource.HEADERS: "from its headers",
}


def _unconfirmed(report: Report) -> str:
    count = report.unconfirmed_attempts
    if not count:
        return ""
    return f" ({count} unconfirmed: perhaps billed, ~${report.unconfirmed_cost:.2f})"


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
