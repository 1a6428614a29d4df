"""Whether a job is stopping, and why: asked by every attempt, set by budgets, failures and signals.

Two strengths: ``abort``/``interrupt`` (no new request, no retry; requests in flight finish)
and ``halt`` (requests in flight are cancelled too, and their items end pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from batchgen.outcomes import Event, JobStopping

log = logging.getLogger(__name__)


class Stopping:
    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self.event = asyncio.Event()
        self.aborted: str | None = None  # the job stopped itself (bad key, failing service, a budget)
        self.interrupted: str | None = None  # a signal stopped it
        self._on_event = on_event
        self._inflight: dict[str, asyncio.Task[object]] = {}

    def is_set(self) -> bool:
        return self.event.is_set()

    def abort(self, reason: str) -> None:
        """The job stops itself: nothing new starts, no retry is made; in-flight requests finish."""
        if not self.event.is_set():
            self.aborted = reason
            self.event.set()
            log.error("stopping the job: %s", reason)
            self._on_event(JobStopping(reason))

    def interrupt(self, signal_name: str) -> None:
        """A signal asked us to stop: like abort, but the job is interrupted, not aborted."""
        if not self.event.is_set():
            self.interrupted = signal_name
            self.event.set()
            self._on_event(JobStopping(f"{signal_name}: finishing the requests in flight"))

    def halt(self) -> None:
        """Cancel the requests in flight; their items end pending."""
        self.event.set()
        for task in list(self._inflight.values()):
            task.cancel()

    @contextlib.contextmanager
    def in_flight(self, item_id: str, task: asyncio.Task[object]) -> Iterator[None]:
        """``task`` is one that ``halt`` cancels while this block runs."""
        self._inflight[item_id] = task
        try:
            yield
        finally:
            del self._inflight[item_id]

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake as soon as the job stops: a backoff must not hold a stopping job."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout=seconds)
