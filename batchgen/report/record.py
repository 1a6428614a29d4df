"""report.json (docs/outputs.md) as a typed record: ``Report.to_json`` its one writer,
``Report.from_json`` its one reader, ``write`` and ``read`` the file itself.

What scripts read: the job's status, counts and spend, a row per failure and a line per
item. Statuses and classes are enums here and their values in the file. The reader takes
the reports of earlier versions (0.3.0 on) and of ``merge``, and fills what a report lacks
with what it means (no ``unconfirmed_cost``: none; no ``counts``: counted from the items).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from batchgen.errors import ErrorClass, UsageError
from batchgen.outcomes import FLAGS, Flag, ItemStatus, JobStatus, LimitSource, RelaySeen
from batchgen.output import paths
from batchgen.output.store import JobStore

# Looked up, not called: Enum(value) is slow, and a catalog's report has 100,000 items.
_ITEM_STATUSES = {status.value: status for status in ItemStatus}
_STATUS_VALUES = {status: status.value for status in ItemStatus}
_COUNTS = ("total", "succeeded", "failed", "skipped", "pending")


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """How many items the report lists, and how many ended in each status (its ``counts``)."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0

    @classmethod
    def of(cls, statuses: Iterable[ItemStatus]) -> StatusCounts:
        c = Counter(statuses)
        S = ItemStatus
        return cls(sum(c.values()), c[S.SUCCEEDED], c[S.FAILED], c[S.SKIPPED], c[S.PENDING])

    def of_status(self, status: ItemStatus) -> int:
        return int(getattr(self, status.value))

    def to_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "pending": self.pending,
        }

    @classmethod
    def from_json(cls, data: object, items: Iterable[ReportItem]) -> StatusCounts:
        """The counts a report states; what it leaves out is counted from its items."""
        given = data if isinstance(data, dict) else {}
        if all(name in given for name in _COUNTS):
            return cls(*(int(given[name]) for name in _COUNTS))
        counted = cls.of(item.status for item in items)
        return cls(*(int(given.get(name, getattr(counted, name))) for name in _COUNTS))


@dataclass(frozen=True, slots=True)
class ReportItem:
    """An item's line in the report (written by ``Report.to_json``, read by ``Report.from_json``)."""

    id: str
    status: ItemStatus
    files: tuple[str, ...] = ()  # relative to the job folder
    attempts: int = 0
    version: int = 1  # of its image: written only from 2 up
    pixels: tuple[int, int] | None = None  # width, height of its (first) image; written when known
    flags: tuple[Flag, ...] = ()  # written with its pixel size, or when it has any
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (channel variant, its files): written if any
    upscaled: tuple[str, ...] = ()  # variants that enlarged the image more than 1.25x
    variant_errors: tuple[tuple[str, str], ...] = ()  # (variant, why it was not made this time)


@dataclass(frozen=True, slots=True)
class ReportFailure:
    """A failed item's row in the report: why it failed, and whether a retry may help."""

    id: str
    prompt: str
    error_class: ErrorClass
    message: str
    http_status: int | None = None
    attempts: int = 0
    retryable: bool = False
    links: tuple[str, ...] = ()  # download_failed: the image links the service answered with
    blocked_by: tuple[str, ...] = ()  # dependency_failed: the referenced items that did not succeed

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "class": self.error_class.value,
            "message": self.message,
            "http_status": self.http_status,
            "attempts": self.attempts,
            "retryable": self.retryable,
        }
        if self.links:
            row["links"] = list(self.links)
        if self.blocked_by:
            row["blocked_by"] = list(self.blocked_by)
        return row

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReportFailure:
        status = data.get("http_status")
        return cls(
            id=str(data["id"]),
            prompt=str(data.get("prompt") or ""),
            error_class=ErrorClass(data["class"]),
            message=str(data.get("message") or ""),
            http_status=None if status is None else int(status),
            attempts=int(data.get("attempts", 0)),
            retryable=bool(data.get("retryable", False)),
            links=tuple(str(link) for link in data.get("links", ())),
            blocked_by=tuple(str(i) for i in data.get("blocked_by", ())),
        )


@dataclass(frozen=True, slots=True)
class Report:
    """The report of a run (``report.build_report``) or of shards merged (``report.merge_reports``)."""

    job: str
    manifest: str
    status: JobStatus
    started_at: datetime  # UTC, to the second
    finished_at: datetime
    duration_s: float
    counts: StatusCounts
    requests_sent: int  # attempts that may have reached the service
    unconfirmed_attempts: int  # of those, ones cut off after sending: perhaps billed
    estimated_cost: float
    unconfirmed_cost: float
    failures: tuple[ReportFailure, ...]
    items: tuple[ReportItem, ...]
    aborted_reason: str | None = None
    interrupted_by: str | None = None  # the signal's name
    shard: str | None = None  # "K/N": the report of one shard
    merged_from: tuple[str, ...] | None = None  # a merged report: the shards (or jobs) it was made from
    missing_shards: tuple[str, ...] = ()
    flags: Mapping[str, int] | None = None  # items per flag, every flag named; None: a report of 0.3.0
    relay_limit: RelaySeen | None = None  # the relay's own rate limit, when the run knew it

    @property
    def stopped(self) -> str | None:
        """Why the job stopped early, if it did."""
        return self.aborted_reason or self.interrupted_by

    def to_json(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "job": self.job,
            "manifest": self.manifest,
            "status": self.status.value,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "counts": self.counts.to_json(),
            "requests_sent": self.requests_sent,
            "unconfirmed_attempts": self.unconfirmed_attempts,
            "estimated_cost": self.estimated_cost,
            "unconfirmed_cost": self.unconfirmed_cost,
            "failures": [f.to_json() for f in self.failures],
        }
        if self.flags is not None:
            report["flags"] = dict(self.flags)
        report["items"] = _items_json(self.items)
        if self.merged_from is not None:
            report["merged_from"] = list(self.merged_from)
        if self.aborted_reason:
            report["aborted_reason"] = self.aborted_reason
        if self.interrupted_by:
            report["interrupted_by"] = self.interrupted_by
        if self.shard:
            report["shard"] = self.shard
        if self.missing_shards:
            report["missing_shards"] = list(self.missing_shards)
        if self.relay_limit is not None:
            report["relay_limit"] = _relay_json(self.relay_limit)
        return report

    @classmethod
    def from_json(cls, data: object) -> Report:
        """The report in ``data``; ValueError if it is not one."""
        if not isinstance(data, dict) or "job" not in data or "items" not in data:
            raise ValueError("not a batchgen report")
        try:
            items = _items(data["items"])
            merged = data.get("merged_from")
            return cls(
                job=str(data["job"]),
                manifest=str(data.get("manifest") or ""),
                status=JobStatus(data["status"]),
                started_at=_moment(data["started_at"]),
                finished_at=_moment(data["finished_at"]),
                duration_s=float(data.get("duration_s", 0.0)),
                counts=StatusCounts.from_json(data.get("counts"), items),
                requests_sent=int(data.get("requests_sent", 0)),
                unconfirmed_attempts=int(data.get("unconfirmed_attempts", 0)),
                estimated_cost=float(data.get("estimated_cost", 0.0)),
                unconfirmed_cost=float(data.get("unconfirmed_cost", 0.0)),
                failures=tuple(ReportFailure.from_json(f) for f in data.get("failures", ())),
                items=items,
                aborted_reason=_text(data.get("aborted_reason")),
                interrupted_by=_text(data.get("interrupted_by")),
                shard=_text(data.get("shard")),
                merged_from=None if merged is None else tuple(str(name) for name in merged),
                missing_shards=tuple(str(label) for label in data.get("missing_shards", ())),
                flags=_flag_counts(data.get("flags")),
                relay_limit=_relay(data.get("relay_limit")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a batchgen report ({type(exc).__name__}: {exc})") from None


def _relay_json(seen: RelaySeen) -> dict[str, Any]:
    limit: dict[str, Any] = {"requests": seen.requests}
    if seen.window_s is not None:
        limit["window_s"] = seen.window_s
    limit["source"] = seen.source.value
    return limit


def _relay(data: object) -> RelaySeen | None:
    """``relay_limit`` (added after 0.3.0; older reports have none)."""
    if not isinstance(data, dict):
        return None
    window = data.get("window_s")
    return RelaySeen(
        int(data["requests"]), None if window is None else float(window), LimitSource(data["source"])
    )


def _items_json(items: Iterable[ReportItem]) -> list[dict[str, Any]]:
    """The report's item lines: a plain loop, as a catalog's report lists 100,000 items."""
    value = _STATUS_VALUES
    lines = []
    for item in items:
        line = {
            "id": item.id,
            "status": value[item.status],
            "files": list(item.files),
            "attempts": item.attempts,
        }
        if item.version > 1:
            line["version"] = item.version
        if item.pixels is not None:
            line["width"], line["height"] = item.pixels
        if item.pixels is not None or item.flags:
            line["flags"] = [flag.value for flag in item.flags]
        if item.variants:
            line["variants"] = {name: list(files) for name, files in item.variants}
        if item.upscaled:
            line["upscaled"] = list(item.upscaled)
        if item.variant_errors:
            line["variant_errors"] = dict(item.variant_errors)
        lines.append(line)
    return lines


def _items(lines: Iterable[Mapping[str, Any]]) -> tuple[ReportItem, ...]:
    status = _ITEM_STATUSES
    return tuple(
        ReportItem(
            str(line["id"]),
            status[line["status"]],
            tuple(map(str, line.get("files", ()))),
            int(line.get("attempts", 0)),
            int(line.get("version") or 1),
            (int(line["width"]), int(line["height"])) if "width" in line else None,
            tuple(FLAGS[name] for name in line.get("flags", ()) if name in FLAGS),
            tuple((str(n), tuple(map(str, f))) for n, f in (line.get("variants") or {}).items()),
            tuple(map(str, line.get("upscaled", ()))),
            tuple((str(n), str(why)) for n, why in (line.get("variant_errors") or {}).items()),
        )
        for line in lines
    )


def flag_counts(items: Iterable[ReportItem]) -> dict[str, int]:
    """Items per flag, every flag named (a zero says the check ran and found nothing)."""
    counts = dict.fromkeys(FLAGS, 0)
    for item in items:
        for flag in item.flags:
            counts[flag.value] += 1
    return counts


def _flag_counts(value: object) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    return {str(name): int(count) for name, count in value.items()}


def write(store: JobStore, report: Report) -> None:
    """The job's report.json, in place whole."""
    store.write_json(paths.REPORT_JSON, report.to_json())


def read(folder: Path) -> Report:
    """The report.json of the job folder ``folder``; UsageError saying why when there is none to read."""
    path = folder / paths.REPORT_JSON
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(
            f"{folder}: no {paths.REPORT_JSON} here ({exc.strerror}); is this a job folder?"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc})") from None
    try:
        return Report.from_json(data)
    except ValueError as exc:
        raise UsageError(f"{path} is {exc}") from None


def moment(ts: float) -> datetime:
    """A time as the report holds it: UTC, to the second."""
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0)


def _moment(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"a time must be text, not {value!r}")
    when = datetime.fromisoformat(value)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def iso(when: datetime) -> str:
    """A time as report.json writes it: ``2026-11-24T10:04:32Z``."""
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _text(value: object) -> str | None:
    return str(value) if value else None
