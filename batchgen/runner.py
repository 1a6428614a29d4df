"""One job's items through the scheduler, the client with retries, and the store.

Item failures never escape as exceptions: each item ends as an ``ItemOutcome``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState

from . import scheduler
from .client import Generation, ImageClient
from .errors import ErrorClass, RequestError
from .manifest import ItemSpec
from .outcomes import (
    Event,
    Failure,
    ItemFinished,
    ItemOutcome,
    ItemRetrying,
    ItemStatus,
    JobStarted,
    JobStopping,
)
from .plan import PlannedRequest, build_body, fingerprint
from .references import LoadedReference, LocalReference, ReferenceLoader, UrlReference
from .retry import RetryPolicy
from .store import JobStore

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class JobRun:
    """What a finished run knows: one outcome per item, and whether it stopped itself."""

    outcomes: list[ItemOutcome]
    aborted: str | None = None  # why the job stopped itself, if it did
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class _Counts:
    attempts: int = 0
    sent: int = 0
    unconfirmed: int = 0


@dataclass
class Runner:
    job: str
    client: ImageClient
    store: JobStore
    policy: RetryPolicy
    references: ReferenceLoader
    concurrency: int
    on_event: Callable[[Event], None] = lambda event: None
    sleep: Sleep | None = None  # tests inject one that does not sleep
    clock: Callable[[], float] = time.monotonic
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    aborted: str | None = None

    async def run(self, items: Sequence[ItemSpec], planner: Callable[[ItemSpec], PlannedRequest]) -> JobRun:
        started = time.time()
        done: dict[int, ItemOutcome] = {}
        self.on_event(JobStarted(self.job, len(items)))

        async def work(spec: ItemSpec) -> None:
            outcome = await self.process(planner(spec))
            done[spec.index] = outcome
            self.on_event(ItemFinished(outcome))

        await scheduler.run_all(items, work, concurrency=self.concurrency, stop=self.stop)
        outcomes = [
            done.get(spec.index) or ItemOutcome(spec.index, spec.id, spec.prompt, ItemStatus.PENDING)
            for spec in items
        ]
        return JobRun(outcomes, self.aborted, started, time.time())

    def abort(self, reason: str) -> None:
        """Stop sending: nothing new starts, no retry is made; in-flight requests finish."""
        if not self.stop.is_set():
            self.aborted = reason
            self.stop.set()
            self.on_event(JobStopping(reason))

    async def process(self, request: PlannedRequest) -> ItemOutcome:
        counts = _Counts()
        started = self.clock()
        try:
            loaded = (
                await asyncio.to_thread(_load_all, self.references, request) if request.references else []
            )
            body = build_body(request, [ref.uri for ref in loaded])
            key = idempotency_key(self.job, request.id, fingerprint(request, [r.digest for r in loaded]))
            generation = await self._attempts(request, body, key, counts)
            files = await asyncio.to_thread(
                self._save, request, generation, loaded, counts, self.clock() - started
            )
        except RequestError as exc:
            return self._failed(request, exc, counts)
        if len(files) < request.n:
            log.warning("%s: asked for %d images, the service sent %d", request.id, request.n, len(files))
        return ItemOutcome(
            request.index,
            request.id,
            request.prompt,
            ItemStatus.SUCCEEDED,
            attempts=counts.attempts,
            files=tuple(files),
            requests_sent=counts.sent,
            unconfirmed=counts.unconfirmed,
            estimated_cost=request.estimated_cost,
            latency_s=self.clock() - started,
        )

    async def _attempts(
        self, request: PlannedRequest, body: dict[str, Any], key: str, counts: _Counts
    ) -> Generation:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, RequestError):
                wait = state.upcoming_sleep
                log.info(
                    "%s: attempt %d failed (%s: %s); retrying in %.1fs",
                    request.id,
                    state.attempt_number,
                    error.error_class.value,
                    error.message,
                    wait,
                )
                self.on_event(
                    ItemRetrying(request.id, state.attempt_number, error.error_class, error.message, wait)
                )

        retrying = self.policy.retrying(
            sleep=self.sleep or self._sleep_unless_stopped,
            stopped=self.stop.is_set,
            before_sleep=before_sleep,
        )
        last: RequestError | None = None
        async for attempt in retrying:
            with attempt:
                if last is not None and self.stop.is_set():
                    # tenacity asks `stop` before the backoff sleep, not after it: a job
                    # that stopped during the sleep must not send this retry.
                    raise last
                counts.attempts += 1
                log.debug("%s: sending attempt %d", request.id, counts.attempts)
                try:
                    generation = await self.client.generate(body, key)
                except RequestError as exc:
                    last = exc
                    counts.sent += exc.sent
                    if exc.sent and exc.error_class in (ErrorClass.TIMEOUT, ErrorClass.CONNECTION):
                        counts.unconfirmed += 1
                    if exc.error_class is ErrorClass.AUTH:
                        self.abort(f"{request.id}: {exc.message} (check the API key)")
                    raise
                counts.sent += 1
                return generation
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    def _save(
        self,
        request: PlannedRequest,
        generation: Generation,
        loaded: Sequence[LoadedReference],
        counts: _Counts,
        latency: float,
    ) -> list[str]:
        stored = self.store.write_images(request.image_stems, generation.images)
        shown = [_describe(ref, got) for ref, got in zip(request.references, loaded, strict=True)]
        self.store.write_json(
            request.sidecar,
            {
                "id": request.id,
                "request": build_body(request, shown),
                "model": request.model,
                "created": generation.created,
                "attempts": counts.attempts,
                "latency_s": round(latency, 3),
                "files": [
                    {"path": f.path, "sha256": f.sha256, "bytes": f.bytes, "mime": f.mime} for f in stored
                ],
                "estimated_cost": request.estimated_cost,
            },
        )
        return [f.path for f in stored]

    def _failed(self, request: PlannedRequest, exc: RequestError, counts: _Counts) -> ItemOutcome:
        if self.stop.is_set() and exc.retryable:
            status = ItemStatus.PENDING  # it would have been retried had the job not stopped
            failure = None
        else:
            status = ItemStatus.FAILED
            failure = Failure(exc.error_class, exc.message, exc.http_status, exc.retryable)
            log.warning(
                "%s: failed (%s) after %d attempt(s): %s",
                request.id,
                exc.error_class.value,
                counts.attempts,
                exc.message,
            )
        return ItemOutcome(
            request.index,
            request.id,
            request.prompt,
            status,
            attempts=counts.attempts,
            failure=failure,
            requests_sent=counts.sent,
            unconfirmed=counts.unconfirmed,
        )


def idempotency_key(job: str, item_id: str, request_fingerprint: str) -> str:
    """The same on every attempt of an item, and across runs for the same request."""
    digest = hashlib.sha256(f"{job}\0{item_id}\0{request_fingerprint}".encode()).hexdigest()
    return f"batchgen-{digest[:32]}"


def _load_all(loader: ReferenceLoader, request: PlannedRequest) -> list[LoadedReference]:
    return [loader.load(ref) for ref in request.references]


def _describe(ref: LocalReference | UrlReference, loaded: LoadedReference) -> str:
    """How a reference appears in a sidecar: never a multi-megabyte data URI."""
    if isinstance(ref, LocalReference):
        return f"file:{ref.written} {loaded.digest}"
    if ref.url.startswith("data:"):
        return f"{ref.url[:40]}… {loaded.digest}"
    return ref.url
