"""Log output for people (text) and for log collectors (one JSON object per line).

With ``--log-format json`` every event of a run (job started, item retrying,
item finished, job stopping, job finished) is a line of its own, beside the
ordinary warnings and errors, so Loki, CloudWatch or Datadog can count
failures by class without parsing prose.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from .outcomes import Event, ItemFinished, ItemRetrying, JobStarted, JobStopping

EVENTS = logging.getLogger("batchgen.events")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line.update(event)
        else:
            line.update({"event": "log", "logger": record.name, "message": record.getMessage()})
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
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
        elif isinstance(event, JobStopping):
            fields = {"event": "job_stopping", "job": job, "reason": event.reason}
        else:
            return
        EVENTS.info("%s", fields["event"], extra={"event": fields})

    return log_event


def job_finished(report: dict[str, Any], folder: str, exit_code: int) -> None:
    fields = {
        "event": "job_finished",
        "job": report["job"],
        "status": report["status"],
        "counts": report["counts"],
        "requests_sent": report["requests_sent"],
        "unconfirmed_attempts": report["unconfirmed_attempts"],
        "estimated_cost": report["estimated_cost"],
        "unconfirmed_cost": report.get("unconfirmed_cost", 0.0),
        "failures_by_class": _by_class(report["failures"]),
        "report": f"{folder}/report.json",
        "exit_code": exit_code,
    }
    EVENTS.info("%s", "job_finished", extra={"event": fields})


def _by_class(failures: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure["class"]] = counts.get(failure["class"], 0) + 1
    return counts
