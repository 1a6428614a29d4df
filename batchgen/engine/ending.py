"""How an item ends: its journal line and its ``ItemOutcome``, succeeded, failed or pending.

A failure is journaled unless the item still has an earlier image (which stays); every
failure counts towards --max-failures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from batchgen.engine import arrived
from batchgen.engine.attempts import Counts
from batchgen.engine.guards import Guards
from batchgen.engine.retry import RetryPolicy
from batchgen.engine.stopping import Stopping
from batchgen.engine.writing import Writer
from batchgen.errors import LinkError, RequestError
from batchgen.outcomes import Failure, ItemOutcome, ItemStatus
from batchgen.output.journal import Entry, JournalFile
from batchgen.output.store import StoredFile
from batchgen.plan.plan import PlannedRequest

log = logging.getLogger(__name__)


@dataclass
class Endings:
    writer: Writer
    policy: RetryPolicy
    guards: Guards
    stopping: Stopping
    folder: str  # the job's, as messages name it

    async def succeeded(
        self,
        request: PlannedRequest,
        stored: list[StoredFile],
        request_fingerprint: str,
        counts: Counts,
        cost: float,
        version: int = 1,
    ) -> ItemOutcome:
        if len(stored) < request.n:
            log.warning("%s: asked for %d images, the service sent %d", request.id, request.n, len(stored))
        files = tuple(JournalFile(f.path, f.sha256, f.bytes, f.width, f.height) for f in stored)
        flags = arrived.check(request, stored, self.folder)
        entry = Entry(
            request.id,
            ItemStatus.SUCCEEDED,
            request_fingerprint,
            request.prompt,
            counts.attempts,
            files,
            estimated_cost=cost,
            version=version,
            flags=flags,
        )
        await self.writer.journal_entry(entry)
        return outcome(
            request,
            ItemStatus.SUCCEEDED,
            counts,
            files=tuple(f.path for f in stored),
            sizes=tuple(f.bytes for f in stored),
            estimated_cost=cost,
            version=version,
            pixels=stored[0].pixels if stored else None,
            flags=flags,
            digests=tuple(f.sha256 for f in stored),
        )

    async def failed(
        self,
        request: PlannedRequest,
        exc: RequestError,
        counts: Counts,
        request_fingerprint: str,
        cost: float = 0.0,
        replacing: Entry | None = None,
    ) -> ItemOutcome:
        """``cost``: what the item was billed for nonetheless (images made, then lost).
        ``replacing``: the entry of an image it was to replace, which stays: the failure is
        reported, but not journaled, so that no later run forgets the image it still has."""
        if self.stopping.is_set() and self.policy.should_retry(exc, counts.unconfirmed):
            return pending(request, counts)  # it would have been retried had the job not stopped
        log.warning(
            "%s: failed (%s) after %d attempt(s): %s",
            *(request.id, exc.error_class.value, counts.attempts, exc.message),
        )
        links = exc.links if isinstance(exc, LinkError) else ()
        failure = Failure(exc.error_class, exc.message, exc.http_status, exc.retryable, links)
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
            links=links,
        )
        if replacing is None:
            await self.writer.journal_entry(entry)
        else:
            failure = replace(failure, message=f"{exc.message} (its earlier image is kept)")
        verdict = self.guards.item_failed()
        if verdict:
            self.stopping.abort(verdict)
        return outcome(request, ItemStatus.FAILED, counts, failure=failure, estimated_cost=cost)

    async def blocked(self, outcome: ItemOutcome, entry: Entry | None) -> ItemOutcome:
        """A dependent not sent (``triage.blocked_outcome``), journaled so that ``retry`` sends it;
        not if it still has an earlier image, which stays. Neither a request nor a failure the
        budgets count: nothing was tried."""
        failure = outcome.failure
        assert failure is not None
        log.warning("%s: %s", outcome.id, failure.message)
        if entry is not None and entry.succeeded:
            kept = replace(failure, message=f"{failure.message} (its earlier image is kept)")
            return replace(outcome, failure=kept)
        await self.writer.journal_entry(
            Entry(
                outcome.id,
                ItemStatus.FAILED,
                "",
                outcome.prompt,
                0,
                error_class=failure.error_class,
                message=failure.message,
                retryable=failure.retryable,
                blocked_by=failure.blocked_by,
            )
        )
        return outcome


def pending(request: PlannedRequest, counts: Counts, cut_off: bool = False) -> ItemOutcome:
    """``cut_off``: cancelled while its request was out, so perhaps billed."""
    if cut_off and counts.attempts > counts.sent:
        counts.sent += 1
        counts.unconfirmed += 1
    return outcome(request, ItemStatus.PENDING, counts)


def outcome(request: PlannedRequest, status: ItemStatus, counts: Counts, **rest: Any) -> ItemOutcome:
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
