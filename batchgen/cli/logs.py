"""Everything batchgen says on stderr, in one voice: for people (text) or for log collectors
(one JSON object per line).

Text lines all start ``batchgen: `` and, for warnings and errors, the level:
``batchgen: error: manifest.yaml:12: items[3]: size: ...``. With ``--log-format json`` every
line is a JSON object: each event of a run (job started, item retrying, item finished, job
stopping, job finished), each problem of a manifest, the ordinary warnings and errors too,
so Loki, CloudWatch or Datadog can count failures by class without parsing prose. The same
problem repeated over thousands of rows is shown a few times, then counted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from batchgen.errors import Problem
from batchgen.outcomes import Event, ItemFinished, ItemRetrying, JobStarted, JobStopping, RateLimitLearned
from batchgen.output import paths
from batchgen.report.record import Report, ReportFailure

EVENTS = logging.getLogger("batchgen.events")
# How many problems of one kind are shown before the rest are counted.
SHOWN_LIKE_THIS = 3
# What varies between the rows of one mistake: quoted values, paths and file names, numbers.
_VARYING = re.compile(r"'[^']*'|\"[^\"]*\"|\S*[/\\.]\S*|\d+")


class TextFormatter(logging.Formatter):
    """``batchgen: warning: ...``, ``batchgen: error: ...``; information plain ``batchgen: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"batchgen: {record.levelname.lower()}: {message}"
        return f"batchgen: {message}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            return json_line(record.levelname.lower(), event, record.created)
        fields: dict[str, Any] = {"event": "log", "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.levelname.lower(), fields, record.created)


def json_line(level: str, fields: dict[str, Any], created: float | None = None) -> str:
    """One line of JSON output: time, level, then the fields."""
    when = datetime.now(UTC) if created is None else datetime.fromtimestamp(created, UTC)
    line = {"ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": level}
    line.update(fields)
    return orjson.dumps(line).decode()


def event_logger(job: str) -> Callable[[Event], None]:
    """Logs each run event as a structured record (shown by the JSON formatter)."""

    def log_event(event: Event) -> None:
        fields: dict[str, Any]
        if isinstance(event, JobStarted):
            fields = {"event": "job_started", "job": event.job, "total": event.total}
        elif isinstance(event, ItemRetrying):
            fields = {
                "event": "item_retrying",
                "job": job,
                "id": event.id,
                "attempt": event.attempt,
                "class": event.error_class.value,
                "message": event.message,
                "wait_s": round(event.wait_s, 3),
            }
        elif isinstance(event, ItemFinished):
            o = event.outcome
            fields = {
                "event": "item_finished",
                "job": job,
                "id": o.id,
                "status": o.status.value,
                "attempts": o.attempts,
            }
            if o.failure is not None:
                fields.update({"class": o.failure.error_class.value, "message": o.failure.message})
            if o.files:
                fields["files"] = list(o.files)
            if o.flags:
                fields["flags"] = [flag.value for flag in o.flags]
        elif isinstance(event, JobStopping):
            fields = {"event": "job_stopping", "job": job, "reason": event.reason}
        elif isinstance(event, RateLimitLearned):
            fields = {
                "event": "rate_limit_learned",
                "job": job,
                "requests": event.limit.requests,
                "window_s": event.limit.window_s,
                "running_at": event.running_at.requests,
                "message": event.message(),
            }
        else:
            return
        EVENTS.info("%s", fields["event"], extra={"event": fields})

    return log_event


def job_finished(report: Report, folder: str, exit_code: int, event: str = "job_finished") -> None:
    fields = {
        "event": event,
        "job": report.job,
        "status": report.status.value,
        "counts": report.counts.to_json(),
        "requests_sent": report.requests_sent,
        "unconfirmed_attempts": report.unconfirmed_attempts,
        "estimated_cost": report.estimated_cost,
        "unconfirmed_cost": report.unconfirmed_cost,
        "failures_by_class": _by_class(report.failures),
        "report": f"{folder}/{paths.REPORT_JSON}",
        "exit_code": exit_code,
    }
    if report.flags is not None:
        fields["flags"] = dict(report.flags)
    EVENTS.info("%s", event, extra={"event": fields})


def _by_class(failures: Iterable[ReportFailure]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for failure in failures:
        name = failure.error_class.value
        counts[name] = counts.get(name, 0) + 1
    return counts


def problems(logger: logging.Logger, found: Sequence[Problem], level: int = logging.ERROR) -> None:
    """Each problem of a manifest as a line of its own (``event: manifest_problem`` in JSON), the
    same mistake over many rows or items shown ``SHOWN_LIKE_THIS`` times and then counted."""
    for problem, more in summarised(found):
        fields: dict[str, Any] = {"event": "manifest_problem", "file": problem.file}
        if more:
            # Like the line before it, in other rows or items: counted, not repeated.
            fields.update(more_like_this=more, field=problem.field, message=problem.message)
            logger.log(level, "... and %s more like this", f"{more:,}", extra={"event": fields})
            continue
        where = (
            ("line", problem.line),
            ("item", problem.where_item),
            ("id", problem.item_id),
            ("field", problem.field),
        )
        fields.update((k, v) for k, v in where if v is not None)
        fields["message"] = problem.message
        logger.log(level, "%s", problem, extra={"event": fields})


def summarised(found: Sequence[Problem]) -> Iterator[tuple[Problem, int]]:
    """(problem, 0) for each one shown; after the last shown of a kind, (it, how many more)."""
    kinds: dict[tuple[str | None, str], list[Problem]] = {}
    for problem in found:
        kinds.setdefault(_kind(problem), []).append(problem)
    for same in kinds.values():
        yield from ((problem, 0) for problem in same[:SHOWN_LIKE_THIS])
        if len(same) > SHOWN_LIKE_THIS:
            yield same[SHOWN_LIKE_THIS - 1], len(same) - SHOWN_LIKE_THIS


def _kind(problem: Problem) -> tuple[str | None, str]:
    """Problems alike but for their row or item: the field and message, without the values
    that vary (``references[0]: refs/tote.png: file not found`` is like ``refs/bag.png``)."""
    field = None if problem.field is None else _VARYING.sub("#", problem.field)
    return field, _VARYING.sub("#", problem.message)
