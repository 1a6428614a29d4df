"""Progress on a terminal: a tqdm bar fed by the runner's events. Only the CLI uses it."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm import tqdm

from batchgen.errors import RelayLimit
from batchgen.outcomes import Event, ItemFinished, ItemRetrying, ItemStatus, JobStarted, RateLimitLearned


class ProgressBar:
    """done/failed/retrying, rate and ETA; call with each event, close at the end."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._retrying: set[str] = set()
        self._ok = self._failed = 0
        self.limit: RelayLimit | None = None  # the relay's, as learned: shown beside the counts

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobStarted):
            self.close()
            self._bar = tqdm(
                total=event.total, desc=event.job, unit="item", file=sys.stderr, dynamic_ncols=True
            )
            self._retrying.clear()
            self._ok = self._failed = 0
        elif isinstance(event, ItemRetrying):
            self._retrying.add(event.id)
            self._show()
        elif isinstance(event, ItemFinished):
            self._retrying.discard(event.outcome.id)
            if event.outcome.status is ItemStatus.SUCCEEDED:
                self._ok += 1
            elif event.outcome.status is ItemStatus.FAILED:
                self._failed += 1
            if self._bar is not None:
                self._bar.update(1)
            self._show()
        elif isinstance(event, RateLimitLearned):
            self.limit = event.running_at
            tqdm.write(f"batchgen: {event.message()}", file=sys.stderr)
            self._show()

    def _show(self) -> None:
        if self._bar is not None:
            # As an ordered mapping: keyword postfixes would be sorted alphabetically.
            counts: dict[str, object] = {
                "ok": self._ok,
                "failed": self._failed,
                "retrying": len(self._retrying),
            }
            if self.limit is not None:
                counts["relay limit"] = self.limit.describe()
            self._bar.set_postfix(ordered_dict=counts, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TqdmLogHandler(logging.Handler):
    """Log lines printed above the bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)
