"""One item's path, top to bottom: its references read, its request sent with retries (or the
links an earlier run paid for fetched again), the links of its answer fetched, its images and
sidecar written, its journal line, its ``ItemOutcome``. An item's failure never escapes as an
exception: it ends as an outcome.

What every item of a run shares arrives as one ``RunContext``, built once by ``Runner``. The
throttles an attempt passes (``guards``, ``ratelimit``, ``retry``, ``room``, ``stopping``) know
nothing of each other nor of items: this module is where they meet. The file work that blocks
is in ``writing``, run in the I/O threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from tenacity import RetryCallState

from batchgen.engine import arrived, writing
from batchgen.engine.guards import Guards
from batchgen.engine.ratelimit import RateLimiter
from batchgen.engine.retry import RetryPolicy, is_unconfirmed
from batchgen.engine.room import ImageRoom, Place
from batchgen.engine.stopping import Stopping
from batchgen.errors import ErrorClass, LinkError, RequestError, StoreError
from batchgen.images import GeneratedImage
from batchgen.manifest.references import LoadedReference, ReferenceLoader
from batchgen.outcomes import Event, ItemOutcome, ItemRetrying, ItemStatus
from batchgen.output.journal import Entry, Journal, JournalFile, Sent, outcome
from batchgen.output.store import JobStore, StoredFile
from batchgen.plan.plan import PlannedRequest, build_body, fingerprint
from batchgen.plan.resume import Action, Mode
from batchgen.plan.triage import Work, blocked_entry
from batchgen.service.client import Generation, ImageClient

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What every item of one run is handed, built once by ``Runner``."""

    job: str  # the job's name: part of every idempotency key
    client: ImageClient
    store: JobStore
    journal: Journal | None  # None: nothing is journaled
    io: Executor | None  # threads for blocking file work (None: the loop's default)
    references: ReferenceLoader
    policy: RetryPolicy
    guards: Guards
    limiter: RateLimiter
    stopping: Stopping
    room: ImageRoom
    clock: Callable[[], float]
    sleep: Sleep  # the backoff between attempts
    fetch_sleep: Sleep  # between fetches of a link: what was paid for is fetched, stopping or not
    mode: Mode
    on_event: Callable[[Event], None]
    folder_name: str  # how messages name the job folder: its path, or a bucket's URL


@dataclass
class Counts:
    """What one item's attempts came to."""

    attempts: int = 0
    sent: int = 0  # attempts that may have reached the service
    unconfirmed: int = 0  # of those, ones cut off after sending: perhaps billed, no image


async def process(run: RunContext, work: Work, counts: Counts, release: Callable[[], None]) -> ItemOutcome:
    """``work``'s item to its outcome. ``release`` is called once its request is answered:
    concurrency counts requests at the service, and writing the answer down should not keep
    the next request waiting."""
    request, entry = work.request, work.entry
    try:
        loaded = (
            await _blocking(run, writing.load_references, run.references, request)
            if request.references
            else []
        )
    except RequestError as exc:  # a reference that went bad before sending
        return await _failed(run, request, exc, counts, "")
    request_fingerprint = fingerprint(request, [ref.digest for ref in loaded])
    if work.action is Action.FETCH:
        assert entry is not None
        try:
            return await _refetch(run, request, entry, loaded)
        except LinkError as exc:
            if run.mode is not Mode.ALL_FAILED:
                counts.attempts = entry.attempts
                return await _failed(run, request, exc, counts, entry.fingerprint)
            # --all-failed: the links are dead, so the image is made again (and paid again).
    replacing = entry if work.replaces else None
    return await _make(
        run, request, loaded, counts, release, request_fingerprint, version=work.version, replacing=replacing
    )


async def _make(
    run: RunContext,
    request: PlannedRequest,
    loaded: list[LoadedReference],
    counts: Counts,
    release: Callable[[], None],
    request_fingerprint: str,
    *,
    version: int,
    replacing: Entry | None,
) -> ItemOutcome:
    """Sent, its links fetched, written and journaled. ``replacing``: the entry of the image this
    one replaces (a redo, a changed request, --force), kept in history/ as it is replaced."""
    cost = request.estimated_cost
    refusal = run.guards.reserve(cost)
    if refusal:
        run.stopping.abort(refusal)
        return pending(request, counts)
    produced = False
    started = run.clock()
    place = run.room.place()
    try:
        body = build_body(request, [ref.uri for ref in loaded])
        key = idempotency_key(run.job, request.id, request_fingerprint, version)
        answer = await _send(run, request, body, key, counts, place)
        if answer is None:
            return pending(request, counts)
        if isinstance(answer, RequestError):
            return await _failed(run, request, answer, counts, request_fingerprint, replacing=replacing)
        produced = True  # billed, whatever happens to the bytes now
        release()
        images = answer.images + await fetch_links(run, request.id, answer.links)
        made = writing.Made(answer.created, counts.attempts, run.clock() - started)
        stored = await _write(run, request, images, loaded, made, replacing)
    except LinkError as exc:
        return await _failed(run, request, exc, counts, request_fingerprint, cost=cost, replacing=replacing)
    finally:
        place.give_back()  # its images are on disk or lost, or it was cancelled mid-body
        run.guards.settle(cost, produced=produced)
    if stored is None:
        return pending(request, counts)
    return await _succeeded(run, request, stored, counts, request_fingerprint, cost=cost, version=version)


async def _refetch(
    run: RunContext, request: PlannedRequest, entry: Entry, loaded: list[LoadedReference]
) -> ItemOutcome:
    """An image made and billed by an earlier run whose link failed then: fetched, not made again."""
    counts = Counts(attempts=entry.attempts)
    started = run.clock()
    images = await fetch_links(run, request.id, entry.links)
    made = writing.Made(None, counts.attempts, run.clock() - started)
    stored = await _write(run, request, images, loaded, made, None)
    if stored is None:
        return pending(request, counts)
    log.info("%s: fetched the image an earlier run paid for", request.id)
    return await _succeeded(run, request, stored, counts, entry.fingerprint, cost=0.0, version=entry.version)


# Sending: attempts until one is answered, refused, given up on, or the job stops.


async def _send(
    run: RunContext, request: PlannedRequest, body: dict[str, Any], key: str, counts: Counts, place: Place
) -> Generation | RequestError | None:
    """The answer, as a value: the ``Generation``; the last ``RequestError`` (given up, or the job
    stopped after a failed attempt); or None (the job stopped before anything was sent).
    ``place``: where the answer's images will be held; taken as its body is read, and given
    back here if the attempt fails (the caller gives it back once they are written)."""
    retrying = run.policy.retrying(
        sleep=run.sleep,
        stopped=run.stopping.is_set,
        before_sleep=lambda state: _retrying(run, request.id, state),
        unconfirmed=lambda: counts.unconfirmed,
    )
    last: RequestError | None = None
    try:
        async for attempt in retrying:
            with attempt:
                while True:  # until an answer that is not the relay's throttle
                    # tenacity asks `stop` before the backoff sleep, not after it: a job
                    # that stopped during the sleep must not send this retry.
                    go, is_probe = await run.guards.admit(run.stopping.event)
                    admitted = go and await run.limiter.acquire(run.stopping.is_set)
                    if not admitted or run.stopping.is_set():
                        return last
                    try:
                        generation = await _attempt(run, request, body, key, counts, place, is_probe)
                    except RequestError as exc:
                        last = exc
                        raise
                    if generation is not None:
                        return generation
    except RequestError as exc:  # given up on: tenacity hands back the last failure
        return exc
    raise AssertionError("unreachable: tenacity either returns or re-raises")


async def _attempt(
    run: RunContext,
    request: PlannedRequest,
    body: dict[str, Any],
    key: str,
    counts: Counts,
    place: Place,
    is_probe: bool,
) -> Generation | None:
    """One request; None when the relay's own limit turned it away (it waits for its turn
    again, and it is not an attempt of the item: the throttle says nothing about the item)."""
    counts.attempts += 1
    log.debug("%s: sending attempt %d%s", request.id, counts.attempts, " (probe)" * is_probe)
    try:
        generation = await run.client.generate(body, key, place.take)
    except RequestError as exc:
        place.give_back()
        run.limiter.answered(exc.rate_headers)
        if exc.error_class is ErrorClass.RATE_LIMITED and run.limiter.refused(
            exc.stated_limit, exc.rate_headers
        ):
            counts.attempts -= 1
            if is_probe:  # a probe that met the throttle met a relay that is up
                run.guards.attempt_done(ok=False, retryable_failure=False, is_probe=True)
            log.debug("%s: the relay's rate limit; waiting for room in its window", request.id)
            return None
        _count_failure(run, request, exc, counts, is_probe)
        raise
    except BaseException:
        run.limiter.answered(None)  # cancelled: its slot ages from now
        raise
    run.limiter.answered(generation.rate)
    counts.sent += 1
    run.guards.attempt_done(ok=True, retryable_failure=False, is_probe=is_probe)
    run.limiter.succeeded()
    return generation


def _count_failure(
    run: RunContext, request: PlannedRequest, exc: RequestError, counts: Counts, is_probe: bool
) -> None:
    counts.sent += exc.sent
    if is_unconfirmed(exc):
        counts.unconfirmed += 1
        # Spent as of now, not when the item ends: meanwhile other items ask the budget.
        overspent = run.guards.unconfirmed(request.estimated_cost)
        if overspent:
            run.stopping.abort(overspent)
    if exc.error_class.stops_job:
        run.stopping.abort(_stop_reason(request.id, exc, run.folder_name))
    if exc.error_class is ErrorClass.RATE_LIMITED:
        run.limiter.rate_limited(run.policy.wait_after(exc))
    verdict = run.guards.attempt_done(ok=False, retryable_failure=exc.retryable, is_probe=is_probe)
    if verdict:
        run.stopping.abort(verdict)


def _retrying(run: RunContext, item_id: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, RequestError):
        wait = state.upcoming_sleep
        log.info(
            "%s: attempt %d failed (%s: %s); %s",
            *(item_id, state.attempt_number, error.error_class.value, error.message, when(wait)),
        )
        run.on_event(ItemRetrying(item_id, state.attempt_number, error.error_class, error.message, wait))


def _stop_reason(item_id: str, exc: RequestError, folder_name: str) -> str:
    if exc.error_class is ErrorClass.QUOTA_EXHAUSTED:
        return (
            f"the API credit ran out ({item_id}: {exc.message}); top up the account or key,"
            f" then run `batchgen retry {folder_name}`"
        )
    return f"{item_id}: {exc.message} (check the API key)"


def when(wait_s: float) -> str:
    """ "retrying in 2.5s", and "retrying now" rather than "in 0.0s"."""
    return "retrying now" if wait_s < 0.05 else f"retrying in {wait_s:.1f}s"


def idempotency_key(job: str, item_id: str, request_fingerprint: str, version: int = 1) -> str:
    """The same on every attempt of an item, and across runs for the same request and version
    (so a run that stopped after sending gets the image it paid for); another for each version."""
    seed = f"{job}\0{item_id}\0{request_fingerprint}" + (f"\0v{version}" if version > 1 else "")
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"batchgen-{digest[:32]}"


# Links: the image behind one was generated and billed when the link arrived, so a failed fetch
# is fetched again, never answered by asking for a new generation.


async def fetch_links(run: RunContext, item_id: str, links: Sequence[str]) -> tuple[GeneratedImage, ...]:
    """Every link's image, in order, each with its own small retry budget; LinkError (naming all
    the links) when one cannot be had."""
    images = []
    for link in links:
        try:
            async for attempt in run.policy.downloading(sleep=run.fetch_sleep):
                with attempt:
                    try:
                        image = await run.client.download(link)
                    except RequestError as exc:
                        log.info("%s: fetching its image failed (%s)", item_id, exc.message)
                        raise
        except RequestError as exc:
            raise LinkError(
                f"{exc.message}; the image was generated (and billed) but not fetched:"
                " its link is kept, and a re-run or `batchgen retry` fetches it again",
                links,
                exc.http_status,
            ) from exc
        images.append(image)
    return tuple(images)


# Writing, and how an item ends: its journal line and its outcome. A failure is journaled unless
# the item still has an earlier image (which stays); every failure counts towards --max-failures.


async def _write(
    run: RunContext,
    request: PlannedRequest,
    images: Sequence[GeneratedImage],
    loaded: Sequence[LoadedReference],
    made: writing.Made,
    replacing: Entry | None,
) -> list[StoredFile] | None:
    """The images and sidecar written; None if they cannot be, and the job stops: a full disk or a
    read-only folder fails every item after this one too."""
    try:
        return await _blocking(run, writing.save, run.store, request, images, loaded, made, replacing)
    except StoreError as exc:
        run.stopping.abort(f"cannot write the output: {exc}")
        return None


async def _succeeded(
    run: RunContext,
    request: PlannedRequest,
    stored: list[StoredFile],
    counts: Counts,
    request_fingerprint: str,
    *,
    cost: float,
    version: int,
) -> ItemOutcome:
    if len(stored) < request.n:
        log.warning("%s: asked for %d images, the service sent %d", request.id, request.n, len(stored))
    entry = Entry(
        request.id,
        ItemStatus.SUCCEEDED,
        request_fingerprint,
        request.prompt,
        counts.attempts,
        tuple(JournalFile(f.path, f.sha256, f.bytes, f.width, f.height) for f in stored),
        estimated_cost=cost,
        version=version,
        flags=arrived.check(request, stored, run.folder_name),
    )
    await _journal(run, entry)
    return outcome(entry, request.index, request.prompt, _sent(request, counts))


async def _failed(
    run: RunContext,
    request: PlannedRequest,
    exc: RequestError,
    counts: Counts,
    request_fingerprint: str,
    *,
    cost: float = 0.0,
    replacing: Entry | None = None,
) -> ItemOutcome:
    """``cost``: what the item was billed for nonetheless (images made, then lost).
    ``replacing``: the entry of an image it was to replace, which stays: the failure is
    reported, but not journaled, so that no later run forgets the image it still has."""
    if run.stopping.is_set() and run.policy.should_retry(exc, counts.unconfirmed):
        return pending(request, counts)  # it would have been retried had the job not stopped
    log.warning(
        "%s: failed (%s) after %d attempt(s): %s",
        *(request.id, exc.error_class.value, counts.attempts, exc.message),
    )
    entry = Entry(
        request.id,
        ItemStatus.FAILED,
        request_fingerprint,
        request.prompt,
        counts.attempts,
        error_class=exc.error_class,
        message=exc.message,
        http_status=exc.http_status,
        retryable=exc.retryable,
        estimated_cost=cost,
        links=exc.links if isinstance(exc, LinkError) else (),
    )
    ended = outcome(entry, request.index, request.prompt, _sent(request, counts))
    if replacing is None:
        await _journal(run, entry)
    else:
        ended = _earlier_kept(ended)
    verdict = run.guards.item_failed()
    if verdict:
        run.stopping.abort(verdict)
    return ended


async def blocked(
    run: RunContext, request: PlannedRequest, why: Mapping[str, str], previous: Entry | None
) -> ItemOutcome:
    """A dependent not sent because items it references could not be had (``why``: their ids and
    why), journaled so that ``retry`` sends it; not if it still has an earlier image, which stays.
    Neither a request nor a failure the budgets count: nothing was tried."""
    entry = blocked_entry(request, why)
    ended = outcome(entry, request.index, request.prompt)
    log.warning("%s: %s", request.id, entry.message)
    if previous is not None and previous.succeeded:
        return _earlier_kept(ended)
    await _journal(run, entry)
    return ended


def pending(request: PlannedRequest, counts: Counts, cut_off: bool = False) -> ItemOutcome:
    """An item the job stopped before it ended. ``cut_off``: cancelled while its request was out,
    so perhaps billed."""
    if cut_off and counts.attempts > counts.sent:
        counts.sent += 1
        counts.unconfirmed += 1
    sent = _sent(request, counts)
    return ItemOutcome(
        request.index,
        request.id,
        request.prompt,
        ItemStatus.PENDING,
        counts.attempts,
        requests_sent=sent.requests,
        unconfirmed=sent.unconfirmed,
        unconfirmed_cost=sent.unconfirmed_cost,
    )


def _sent(request: PlannedRequest, counts: Counts) -> Sent:
    return Sent(counts.sent, counts.unconfirmed, round(request.estimated_cost * counts.unconfirmed, 6))


def _earlier_kept(ended: ItemOutcome) -> ItemOutcome:
    """``ended``'s failure, reported for an item whose earlier image stays."""
    assert ended.failure is not None
    message = f"{ended.failure.message} (its earlier image is kept)"
    return replace(ended, failure=replace(ended.failure, message=message))


async def _journal(run: RunContext, entry: Entry) -> None:
    if run.journal is not None:
        await _blocking(run, run.journal.append, entry.to_json(time.time()))


async def _blocking(run: RunContext, fn: Callable[..., T], *args: Any) -> T:
    """Reading references, writing files, appending to the journal: in the I/O threads."""
    return await asyncio.get_running_loop().run_in_executor(run.io, partial(fn, *args))
