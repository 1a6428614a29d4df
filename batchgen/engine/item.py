"""One item, from its references to its journal line: sent (or its paid-for links fetched
again), written, and ended as an ``ItemOutcome``. Item failures never escape as exceptions."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from batchgen.engine.attempts import Counts, Sender, Sleep
from batchgen.engine.ending import Endings, pending
from batchgen.engine.guards import Guards
from batchgen.engine.links import fetch_all
from batchgen.engine.retry import RetryPolicy
from batchgen.engine.room import ImageRoom
from batchgen.engine.stopping import Stopping
from batchgen.engine.writing import Made, Writer
from batchgen.errors import LinkError, RequestError, StoreError
from batchgen.images import GeneratedImage
from batchgen.manifest.references import LoadedReference, ReferenceLoader
from batchgen.outcomes import ItemOutcome
from batchgen.output.journal import Entry
from batchgen.plan.plan import PlannedRequest, build_body, fingerprint
from batchgen.plan.resume import Action, Mode
from batchgen.plan.triage import Work

log = logging.getLogger(__name__)


@dataclass
class ItemAttempt:
    job: str
    sender: Sender
    writer: Writer
    references: ReferenceLoader
    policy: RetryPolicy
    guards: Guards
    stopping: Stopping
    clock: Callable[[], float]
    fetch_sleep: Sleep
    room: ImageRoom
    endings: Endings
    mode: Mode = Mode.RUN

    async def process(self, work: Work, counts: Counts, release: Callable[[], None]) -> ItemOutcome:
        """``release`` is called once its request is answered: concurrency counts requests at the
        service, and writing the answer down should not keep the next request waiting."""
        request, entry = work.request, work.entry
        try:
            loaded = (
                await self.writer.blocking(_load_all, self.references, request) if request.references else []
            )
            request_fingerprint = fingerprint(request, [r.digest for r in loaded])
            if work.action is Action.FETCH:
                assert entry is not None
                try:
                    return await self._refetch(request, entry, loaded)
                except LinkError as exc:
                    if self.mode is not Mode.ALL_FAILED:
                        counts.attempts = entry.attempts
                        return await self.endings.failed(request, exc, counts, entry.fingerprint)
                    # --all-failed: the links are dead, so the image is made again (and paid again).
            replacing = entry if work.replaces else None
            return await self._send(
                request, loaded, request_fingerprint, counts, release, work.version, replacing
            )
        except RequestError as exc:  # a reference that went bad before sending
            return await self.endings.failed(request, exc, counts, "")

    async def _send(
        self,
        request: PlannedRequest,
        loaded: list[LoadedReference],
        request_fingerprint: str,
        counts: Counts,
        release: Callable[[], None],
        version: int = 1,
        replacing: Entry | None = None,
    ) -> ItemOutcome:
        """``replacing``: the entry of the image this one replaces (a redo, a changed request, --force),
        kept in history/ as it is replaced."""
        refusal = self.guards.reserve(request.estimated_cost)
        if refusal:
            self.stopping.abort(refusal)
            return pending(request, counts)
        produced = False
        started = self.clock()
        place = self.room.place()
        try:
            body = build_body(request, [ref.uri for ref in loaded])
            key = idempotency_key(self.job, request.id, request_fingerprint, version)
            answer = await self.sender.send(request.id, body, key, counts, place)
            if answer is None:
                return pending(request, counts)
            if isinstance(answer, RequestError):
                return await self.endings.failed(
                    request, answer, counts, request_fingerprint, replacing=replacing
                )
            produced = True  # billed, whatever happens to the bytes now
            release()
            images = answer.images
            if answer.links:
                images += await self._fetch(request, answer.links)
            made = Made(answer.created, counts.attempts, self.clock() - started)
            stored = await self.writer.blocking(self.writer.save, request, images, loaded, made, replacing)
        except LinkError as exc:
            cost = request.estimated_cost
            return await self.endings.failed(request, exc, counts, request_fingerprint, cost, replacing)
        except RequestError as exc:
            return await self.endings.failed(request, exc, counts, request_fingerprint, replacing=replacing)
        except StoreError as exc:
            # A full disk or a read-only folder fails every item after this one too.
            self.stopping.abort(f"cannot write the output: {exc}")
            return pending(request, counts)
        finally:
            place.give_back()  # its images are on disk or lost, or it was cancelled mid-body
            self.guards.settle(request.estimated_cost, produced=produced, unconfirmed=counts.unconfirmed)
        return await self.endings.succeeded(
            request, stored, request_fingerprint, counts, request.estimated_cost, version
        )

    async def _refetch(
        self, request: PlannedRequest, entry: Entry, loaded: list[LoadedReference]
    ) -> ItemOutcome:
        """An image made and billed by an earlier run whose link failed then: fetched, not made again."""
        counts = Counts(attempts=entry.attempts)
        started = self.clock()
        images = await self._fetch(request, entry.links)
        try:
            made = Made(None, counts.attempts, self.clock() - started)
            stored = await self.writer.blocking(self.writer.save, request, images, loaded, made)
        except StoreError as exc:
            self.stopping.abort(f"cannot write the output: {exc}")
            return pending(request, counts)
        log.info("%s: fetched the image an earlier run paid for", request.id)
        return await self.endings.succeeded(request, stored, entry.fingerprint, counts, 0.0, entry.version)

    async def _fetch(self, request: PlannedRequest, links: tuple[str, ...]) -> tuple[GeneratedImage, ...]:
        return await fetch_all(self.sender.client, request.id, links, self.policy, self.fetch_sleep)


def idempotency_key(job: str, item_id: str, request_fingerprint: str, version: int = 1) -> str:
    """The same on every attempt of an item, and across runs for the same request and version
    (so a run that stopped after sending gets the image it paid for); another for each version."""
    seed = f"{job}\0{item_id}\0{request_fingerprint}" + (f"\0v{version}" if version > 1 else "")
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"batchgen-{digest[:32]}"


def _load_all(loader: ReferenceLoader, request: PlannedRequest) -> list[LoadedReference]:
    return [loader.load(ref) for ref in request.references]
