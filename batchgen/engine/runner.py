"""One job's items through the scheduler, the client with retries, the store and the journal.

Item failures never escape as exceptions: each item ends as an ``ItemOutcome``.
Stopping comes in two strengths: ``stop`` (no new request, no retry; in-flight
requests finish) and ``halt`` (in-flight requests are cancelled too).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tenacity import RetryCallState

from batchgen.engine import scheduler
from batchgen.engine.guards import Guards
from batchgen.engine.links import fetch_all
from batchgen.engine.ratelimit import RateLimiter
from batchgen.engine.retry import RetryPolicy, is_unconfirmed
from batchgen.errors import ErrorClass, LinkError, RequestError, StoreError
from batchgen.images import GeneratedImage
from batchgen.manifest.references import LoadedReference, LocalReference, Reference, ReferenceLoader
from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import (
    Event,
    Failure,
    ItemFinished,
    ItemOutcome,
    ItemRetrying,
    ItemStatus,
    JobStarted,
    JobStopping,
)
from batchgen.output import thumbs
from batchgen.output.journal import Entry, Journal, JournalFile, entry_record
from batchgen.output.store import JobStore, StoredFile
from batchgen.plan.plan import PlannedRequest, build_body, fingerprint
from batchgen.plan.resume import Action, Mode, decide
from batchgen.service.client import Generation, ImageClient

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
TRIAGE_CHUNK = 512  # items decided per trip to the I/O threads
T = TypeVar("T")


@dataclass
class JobRun:
    """What a finished run knows: one outcome per item, and why it stopped early, if it did."""

    outcomes: list[ItemOutcome]
    aborted: str | None = None  # the job stopped itself (bad key, failing service, a budget)
    interrupted: str | None = None  # a signal stopped it
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class _Counts:
    attempts: int = 0
    sent: int = 0
    unconfirmed: int = 0


@dataclass(frozen=True, slots=True)
class _Work:
    """An item that needs a request or a download, as triage found it."""

    request: PlannedRequest
    action: Action  # SEND or FETCH
    entry: Entry | None  # the journal's last word on it
    intact: bool = False  # and that entry's files are all there

    @property
    def replaces(self) -> bool:
        """It has an image already: the new one is a new version, the old one kept in history/."""
        return self.made and self.intact

    @property
    def made(self) -> bool:
        return self.entry is not None and self.entry.status == "succeeded"

    @property
    def version(self) -> int:
        """Of the image this run makes: one more than the last one made, kept or not (a fresh
        Idempotency-Key: under the old one the service may answer with the image being replaced)."""
        if self.entry is None:
            return 1
        return self.entry.version + 1 if self.made else self.entry.version


class _NotSent(Exception):
    """The job stopped before this attempt could go out."""


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
    journal: Journal | None = None
    previous: Mapping[str, Entry] = field(default_factory=dict)
    mode: Mode = Mode.RUN
    redo: frozenset[str] = frozenset()  # ids to make again whatever the journal says (batchgen redo)
    guards: Guards = field(default_factory=Guards)
    requests_per_minute: float | None = None
    io: Executor | None = None  # threads for blocking file work (None: the loop's default)
    thumbnails: thumbs.Background | None = None  # makes the gallery's previews of what is written
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    aborted: str | None = None
    interrupted: str | None = None
    _inflight: dict[str, tuple[asyncio.Task[ItemOutcome], _Counts]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every attempt, retries included, takes a turn: the limit is on requests, not items.
        self.limiter = RateLimiter(
            self.requests_per_minute, clock=self.clock, sleep=self.sleep or self._sleep_unless_stopped
        )

    async def run(self, items: Sequence[ItemSpec], planner: Callable[[ItemSpec], PlannedRequest]) -> JobRun:
        started = time.time()
        done: dict[int, ItemOutcome] = {}
        self.on_event(JobStarted(self.job, len(items)))

        async def work(job: _Work, release: scheduler.Release) -> None:
            request = job.request
            counts = _Counts()
            task = asyncio.create_task(self.process(job, counts, release))
            self._inflight[request.id] = (task, counts)
            try:
                outcome = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not task.cancelled() or (current is not None and current.cancelling()):
                    raise
                outcome = self._pending(request, counts, cut_off=True)  # halted mid-request
            finally:
                del self._inflight[request.id]
            done[request.index] = outcome
            self.on_event(ItemFinished(outcome))

        await scheduler.run_all(
            self._triaged(items, planner, done), work, concurrency=self.concurrency, stop=self.stop
        )
        outcomes = [
            done.get(spec.index) or ItemOutcome(spec.index, spec.id, spec.prompt, ItemStatus.PENDING)
            for spec in items
        ]
        return JobRun(outcomes, self.aborted, self.interrupted, started, time.time())

    async def _triaged(
        self,
        items: Sequence[ItemSpec],
        planner: Callable[[ItemSpec], PlannedRequest],
        done: dict[int, ItemOutcome],
    ) -> AsyncIterator[_Work]:
        """The items that need work, decided before any is scheduled, a chunk at a time in the I/O
        threads: an item already done is never a task, and a re-run of a finished catalog is a
        pass over the journal, not 100,000 coroutines."""
        for start in range(0, len(items), TRIAGE_CHUNK):
            chunk = items[start : start + TRIAGE_CHUNK]
            # Not in the I/O threads: behind a burst of image writes, triage would hold up sending.
            todo, left = await asyncio.get_running_loop().run_in_executor(None, self._triage, chunk, planner)
            for outcome in left:
                done[outcome.index] = outcome
                self.on_event(ItemFinished(outcome))
            for job in todo:
                yield job

    def _triage(
        self, chunk: Sequence[ItemSpec], planner: Callable[[ItemSpec], PlannedRequest]
    ) -> tuple[list[_Work], list[ItemOutcome]]:
        todo: list[_Work] = []
        left: list[ItemOutcome] = []
        for spec in chunk:
            request = planner(spec)
            entry = self.previous.get(request.id)
            try:
                digests = [self.references.digest(ref) for ref in request.references]
            except RequestError:
                todo.append(_Work(request, Action.SEND, entry))  # sending it reports why not
                continue
            mode = Mode.FORCE if request.id in self.redo else self.mode
            intact = entry is not None and self.store.intact([(f.path, f.bytes) for f in entry.files])
            action = decide(entry, fingerprint(request, digests), intact, mode)
            if action in (Action.SEND, Action.FETCH):
                todo.append(_Work(request, action, entry, intact))
            else:
                left.append(_from_journal(request, entry, action))
        return todo, left

    def abort(self, reason: str) -> None:
        """The job stops itself: nothing new starts, no retry is made; in-flight requests finish."""
        if not self.stop.is_set():
            self.aborted = reason
            self.stop.set()
            log.error("stopping the job: %s", reason)
            self.on_event(JobStopping(reason))

    def interrupt(self, signal_name: str) -> None:
        """A signal asked us to stop: like abort, but the job is interrupted, not aborted."""
        if not self.stop.is_set():
            self.interrupted = signal_name
            self.stop.set()
            self.on_event(JobStopping(f"{signal_name}: finishing the requests in flight"))

    def halt(self) -> None:
        """Cancel the requests in flight; their items end pending."""
        self.stop.set()
        for task, _ in list(self._inflight.values()):
            task.cancel()

    async def process(self, job: _Work, counts: _Counts, release: scheduler.Release) -> ItemOutcome:
        """One item from its references to its journal line. ``release`` is called once its
        request is answered: concurrency counts requests at the service, and writing the
        answer down should not keep the next request waiting."""
        request, entry = job.request, job.entry
        try:
            loaded = await self._blocking(_load_all, self.references, request) if request.references else []
            request_fingerprint = fingerprint(request, [r.digest for r in loaded])
            if job.action is Action.FETCH:
                assert entry is not None
                try:
                    return await self._refetch(request, entry, loaded)
                except LinkError as exc:
                    if self.mode is not Mode.ALL_FAILED:
                        counts.attempts = entry.attempts
                        return await self._failed(request, exc, counts, entry.fingerprint)
                    # --all-failed: the links are dead, so the image is made again (and paid again).
            replacing = entry if job.replaces else None
            return await self._send(
                request, loaded, request_fingerprint, counts, release, job.version, replacing
            )
        except RequestError as exc:  # a reference that went bad before sending
            return await self._failed(request, exc, counts, "")

    async def _send(
        self,
        request: PlannedRequest,
        loaded: list[LoadedReference],
        request_fingerprint: str,
        counts: _Counts,
        release: scheduler.Release,
        version: int = 1,
        replacing: Entry | None = None,
    ) -> ItemOutcome:
        """``replacing``: the entry of the image this one replaces (a redo, a changed request, --force),
        kept in history/ as it is replaced."""
        refusal = self.guards.reserve(request.estimated_cost)
        if refusal:
            self.abort(refusal)
            return self._pending(request, counts)
        produced = False
        started = self.clock()
        try:
            body = build_body(request, [ref.uri for ref in loaded])
            key = idempotency_key(self.job, request.id, request_fingerprint, version)
            generation = await self._attempts(request, body, key, counts)
            produced = True  # billed, whatever happens to the bytes now
            release()
            try:
                images = generation.images
                if generation.links:
                    images += await self._fetch(request, generation.links)
                latency = self.clock() - started
                stored = await self._blocking(
                    self._save, request, images, generation.created, loaded, counts, latency, replacing
                )
            finally:
                generation.release()  # the images are on disk (or lost): their memory slot is free
        except LinkError as exc:
            cost = request.estimated_cost
            return await self._failed(request, exc, counts, request_fingerprint, cost, replacing)
        except RequestError as exc:
            return await self._failed(request, exc, counts, request_fingerprint, replacing=replacing)
        except _NotSent:
            return self._pending(request, counts)
        except StoreError as exc:
            # A full disk or a read-only folder fails every item after this one too.
            self.abort(f"cannot write the output: {exc}")
            return self._pending(request, counts)
        finally:
            self.guards.settle(request.estimated_cost, produced=produced, unconfirmed=counts.unconfirmed)
        return await self._succeeded(
            request, stored, request_fingerprint, counts, request.estimated_cost, version
        )

    async def _succeeded(
        self,
        request: PlannedRequest,
        stored: list[StoredFile],
        request_fingerprint: str,
        counts: _Counts,
        cost: float,
        version: int = 1,
    ) -> ItemOutcome:
        if len(stored) < request.n:
            log.warning("%s: asked for %d images, the service sent %d", request.id, request.n, len(stored))
        files = tuple(JournalFile(f.path, f.sha256, f.bytes) for f in stored)
        entry = Entry(
            request.id,
            "succeeded",
            request_fingerprint,
            request.prompt,
            counts.attempts,
            files,
            estimated_cost=cost,
            version=version,
        )
        await self._journal(entry)
        return _outcome(
            request,
            ItemStatus.SUCCEEDED,
            counts,
            files=tuple(f.path for f in stored),
            sizes=tuple(f.bytes for f in stored),
            estimated_cost=cost,
            version=version,
        )

    async def _refetch(
        self, request: PlannedRequest, entry: Entry, loaded: list[LoadedReference]
    ) -> ItemOutcome:
        """An image made and billed by an earlier run whose link failed then: fetched, not made again."""
        counts = _Counts(attempts=entry.attempts)
        started = self.clock()
        images = await self._fetch(request, entry.links)
        try:
            stored = await self._blocking(
                self._save, request, images, None, loaded, counts, self.clock() - started
            )
        except StoreError as exc:
            self.abort(f"cannot write the output: {exc}")
            return self._pending(request, counts)
        log.info("%s: fetched the image an earlier run paid for", request.id)
        return await self._succeeded(request, stored, entry.fingerprint, counts, 0.0, entry.version)

    async def _fetch(self, request: PlannedRequest, links: tuple[str, ...]) -> tuple[GeneratedImage, ...]:
        return await fetch_all(self.client, request.id, links, self.policy, self.sleep or asyncio.sleep)

    async def _attempts(
        self, request: PlannedRequest, body: dict[str, Any], key: str, counts: _Counts
    ) -> Generation:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, RequestError):
                wait = state.upcoming_sleep
                log.info(
                    "%s: attempt %d failed (%s: %s); %s",
                    *(request.id, state.attempt_number, error.error_class.value, error.message, _when(wait)),
                )
                self.on_event(
                    ItemRetrying(request.id, state.attempt_number, error.error_class, error.message, wait)
                )

        retrying = self.policy.retrying(
            sleep=self.sleep or self._sleep_unless_stopped,
            stopped=self.stop.is_set,
            before_sleep=before_sleep,
            unconfirmed=lambda: counts.unconfirmed,
        )
        last: RequestError | None = None
        async for attempt in retrying:
            with attempt:
                # tenacity asks `stop` before the backoff sleep, not after it: a job
                # that stopped during the sleep must not send this retry.
                go, is_probe = await self.guards.admit(self.stop)
                if go:
                    await self.limiter.acquire(self.stop.is_set)
                if not go or self.stop.is_set():
                    raise last if last is not None else _NotSent()
                counts.attempts += 1
                log.debug(
                    "%s: sending attempt %d%s", request.id, counts.attempts, " (probe)" if is_probe else ""
                )
                try:
                    generation = await self.client.generate(body, key)
                except RequestError as exc:
                    last = exc
                    self._count_failure(request, exc, counts, is_probe)
                    raise
                counts.sent += 1
                self.guards.attempt_done(ok=True, retryable_failure=False, is_probe=is_probe)
                self.limiter.succeeded()
                return generation
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _count_failure(
        self, request: PlannedRequest, exc: RequestError, counts: _Counts, is_probe: bool
    ) -> None:
        counts.sent += exc.sent
        counts.unconfirmed += is_unconfirmed(exc)
        if exc.error_class.stops_job:
            self.abort(_stop_reason(request.id, exc, self.store.root))
        if exc.error_class is ErrorClass.RATE_LIMITED:
            self.limiter.rate_limited(self.policy.wait_after(exc))
        verdict = self.guards.attempt_done(ok=False, retryable_failure=exc.retryable, is_probe=is_probe)
        if verdict:
            self.abort(verdict)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    def _save(
        self,
        request: PlannedRequest,
        images: Sequence[GeneratedImage],
        created: int | None,
        loaded: Sequence[LoadedReference],
        counts: _Counts,
        latency: float,
        replacing: Entry | None = None,
    ) -> list[StoredFile]:
        if replacing is not None:
            self.store.archive([*(f.path for f in replacing.files), request.sidecar], replacing.version)
            thumbs.forget(self.store.root, (f.path for f in replacing.files))  # never the old picture's
        stored = self.store.write_images(request.image_stems, images)
        if self.thumbnails is not None:
            for kept in stored:
                self.thumbnails.add(kept.path)
        shown = [_describe(ref, got) for ref, got in zip(request.references, loaded, strict=True)]
        # The sidecar is metadata the journal also holds (files, sizes, sha256): it is renamed
        # into place whole, and made durable with the rest of the job's files at the end.
        self.store.write_json(
            request.sidecar,
            {
                "id": request.id,
                "request": build_body(request, shown),
                "model": request.model,
                "created": created,
                "attempts": counts.attempts,
                "latency_s": round(latency, 3),
                "files": [
                    {"path": f.path, "sha256": f.sha256, "bytes": f.bytes, "mime": f.mime} for f in stored
                ],
                "estimated_cost": request.estimated_cost,
            },
            durable=False,
        )
        return stored

    async def _failed(
        self,
        request: PlannedRequest,
        exc: RequestError,
        counts: _Counts,
        request_fingerprint: str,
        cost: float = 0.0,
        replacing: Entry | None = None,
    ) -> ItemOutcome:
        """``cost``: what the item was billed for nonetheless (images made, then lost).
        ``replacing``: the entry of an image it was to replace, which stays: the failure is
        reported, but not journaled, so that no later run forgets the image it still has."""
        if self.stop.is_set() and self.policy.should_retry(exc, counts.unconfirmed):
            return self._pending(request, counts)  # it would have been retried had the job not stopped
        log.warning(
            "%s: failed (%s) after %d attempt(s): %s",
            *(request.id, exc.error_class.value, counts.attempts, exc.message),
        )
        links = exc.links if isinstance(exc, LinkError) else ()
        failure = Failure(exc.error_class, exc.message, exc.http_status, exc.retryable, links)
        entry = Entry(
            request.id,
            "failed",
            request_fingerprint,
            request.prompt,
            counts.attempts,
            error_class=exc.error_class.value,
            message=exc.message,
            http_status=exc.http_status,
            retryable=exc.retryable,
            estimated_cost=cost,
            links=links,
        )
        if replacing is None:
            await self._journal(entry)
        else:
            failure = replace(failure, message=f"{exc.message} (its earlier image is kept)")
        verdict = self.guards.item_failed()
        if verdict:
            self.abort(verdict)
        return _outcome(request, ItemStatus.FAILED, counts, failure=failure, estimated_cost=cost)

    def _pending(self, request: PlannedRequest, counts: _Counts, cut_off: bool = False) -> ItemOutcome:
        if cut_off and counts.attempts > counts.sent:
            counts.sent += 1  # cancelled while its request was out: perhaps billed
            counts.unconfirmed += 1
        return _outcome(request, ItemStatus.PENDING, counts)

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Reading references, writing files, appending to the journal: in the I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self.io, partial(fn, *args))

    async def _journal(self, entry: Entry) -> None:
        if self.journal is not None:
            await self._blocking(self.journal.append, entry_record(entry, time.time()))


def _outcome(request: PlannedRequest, status: ItemStatus, counts: _Counts, **rest: Any) -> ItemOutcome:
    return ItemOutcome(
        request.index,
        request.id,
        request.prompt,
        status,
        attempts=counts.attempts,
        requests_sent=counts.sent,
        unconfirmed=counts.unconfirmed,
        unconfirmed_cost=round(request.estimated_cost * counts.unconfirmed, 6),
        **rest,
    )


def _from_journal(request: PlannedRequest, entry: Entry | None, action: Action) -> ItemOutcome:
    """An item this run leaves alone, reported as the journal has it."""
    if entry is None or action is Action.LEAVE:
        return ItemOutcome(request.index, request.id, request.prompt, ItemStatus.PENDING)
    if action is Action.SKIP:
        return ItemOutcome(
            request.index,
            request.id,
            request.prompt,
            ItemStatus.SKIPPED,
            attempts=entry.attempts,
            files=tuple(f.path for f in entry.files),
            sizes=tuple(f.bytes for f in entry.files),
            version=entry.version,
        )
    failure = Failure(
        ErrorClass(entry.error_class or ErrorClass.INVALID_RESPONSE.value),
        entry.message or "",
        entry.http_status,
        bool(entry.retryable),
        entry.links,
    )
    return ItemOutcome(
        request.index, request.id, request.prompt, ItemStatus.FAILED, attempts=entry.attempts, failure=failure
    )


def _stop_reason(item_id: str, exc: RequestError, folder: Path) -> str:
    if exc.error_class is ErrorClass.QUOTA_EXHAUSTED:
        return (
            f"the API credit ran out ({item_id}: {exc.message}); top up the account or key,"
            f" then run `batchgen retry {folder}`"
        )
    return f"{item_id}: {exc.message} (check the API key)"


def idempotency_key(job: str, item_id: str, request_fingerprint: str, version: int = 1) -> str:
    """The same on every attempt of an item, and across runs for the same request and version
    (so a run that stopped after sending gets the image it paid for); another for each version."""
    seed = f"{job}\0{item_id}\0{request_fingerprint}" + (f"\0v{version}" if version > 1 else "")
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"batchgen-{digest[:32]}"


def _load_all(loader: ReferenceLoader, request: PlannedRequest) -> list[LoadedReference]:
    return [loader.load(ref) for ref in request.references]


def _describe(ref: Reference, loaded: LoadedReference) -> str:
    """How a reference appears in a sidecar: never a multi-megabyte data URI."""
    if isinstance(ref, LocalReference):
        return f"file:{ref.written} {loaded.digest}"
    if ref.url.startswith("data:"):
        return f"{ref.url[:40]}… {loaded.digest}"
    return ref.url


def _when(wait_s: float) -> str:
    """ "retrying in 2.5s", and "retrying now" rather than "in 0.0s"."""
    return "retrying now" if wait_s < 0.05 else f"retrying in {wait_s:.1f}s"
