"""What a run does with each item: its request planned, then decided against the job folder.

The decision (``resume.decide``) needs three answers besides the request: the journal's
last word on the item, whether the store still holds that entry's files whole, and the
digests of its reference images. Triage gathers them and hands the engine only decided
work, so the engine never plans; the ``--max-cost`` check before a run uses the same
triage, so it prices exactly what the run will send.

Reads file metadata (the store's sizes, reference digests), so it runs in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from batchgen.errors import ErrorClass, RequestError
from batchgen.manifest.references import ReferenceLoader
from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import Failure, ItemOutcome, ItemStatus
from batchgen.output.journal import Entry
from batchgen.output.store import JobStore
from batchgen.plan.plan import PlannedRequest, fingerprint
from batchgen.plan.resume import Action, Mode, decide

CHUNK = 512  # items decided per trip to a thread


@dataclass(frozen=True, slots=True)
class Work:
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
        return self.entry is not None and self.entry.succeeded

    @property
    def version(self) -> int:
        """Of the image this run makes: one more than the last one made, kept or not (a fresh
        Idempotency-Key: under the old one the service may answer with the image being replaced)."""
        if self.entry is None:
            return 1
        return self.entry.version + 1 if self.made else self.entry.version


@dataclass(frozen=True)
class Triage:
    planner: Callable[[ItemSpec], PlannedRequest]
    previous: Mapping[str, Entry]  # the journal's last word on each item
    store: JobStore
    references: ReferenceLoader
    mode: Mode
    redo: frozenset[str] = frozenset()  # ids to make again whatever the journal says

    def chunk(self, specs: Sequence[ItemSpec]) -> tuple[list[Work], list[ItemOutcome]]:
        """The work among ``specs``, and an outcome for each item this run leaves alone."""
        todo: list[Work] = []
        left: list[ItemOutcome] = []
        for spec in specs:
            request = self.planner(spec)
            entry = self.previous.get(request.id)
            try:
                digests = [self.references.digest(ref) for ref in request.references]
            except RequestError:
                todo.append(Work(request, Action.SEND, entry))  # sending it reports why not
                continue
            mode = Mode.FORCE if request.id in self.redo else self.mode
            intact = entry is not None and self.store.intact([(f.path, f.bytes) for f in entry.files])
            action = decide(entry, fingerprint(request, digests), intact, mode)
            if action in (Action.SEND, Action.FETCH):
                todo.append(Work(request, action, entry, intact))
            else:
                left.append(_from_journal(request, entry, action))
        return todo, left

    def to_send(self, specs: Sequence[ItemSpec]) -> Iterator[PlannedRequest]:
        """The requests a run may send. A link fetched again is not one (it was paid for),
        except with --all-failed, where a dead link's image is made, and paid for, again."""
        paid = (Action.SEND, Action.FETCH) if self.mode is Mode.ALL_FAILED else (Action.SEND,)
        for start in range(0, len(specs), CHUNK):
            todo, _ = self.chunk(specs[start : start + CHUNK])
            yield from (work.request for work in todo if work.action in paid)


async def decided(
    triage: Triage, specs: Sequence[ItemSpec]
) -> AsyncIterator[tuple[list[Work], list[ItemOutcome]]]:
    """``specs`` triaged a chunk at a time in a thread, as the engine asks for more: an item
    already done is never a task, and a re-run of a finished catalog is a pass over the
    journal, not 100,000 coroutines."""
    loop = asyncio.get_running_loop()
    for start in range(0, len(specs), CHUNK):
        # The loop's default threads, not the I/O threads: behind a burst of image writes,
        # triage would hold up sending.
        yield await loop.run_in_executor(None, triage.chunk, specs[start : start + CHUNK])


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
            pixels=entry.files[0].pixels if entry.files else None,
            flags=entry.flags,
        )
    failure = Failure(
        entry.error_class or ErrorClass.INVALID_RESPONSE,
        entry.message or "",
        entry.http_status,
        bool(entry.retryable),
        entry.links,
    )
    return ItemOutcome(
        request.index, request.id, request.prompt, ItemStatus.FAILED, attempts=entry.attempts, failure=failure
    )
