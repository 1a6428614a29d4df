"""What a run does with each item: its request planned, then decided against the job folder.

The decision (``resume.decide``) needs three answers besides the request: the journal's
last word on the item, whether the store still holds that entry's files whole, and the
digests of its reference images. Triage gathers them and hands the engine only decided
work, so the engine never plans; the ``--max-cost`` check before a run uses the same
triage, so it prices exactly what the run will send.

An item that references another (``@ID``, docs/chains.md) is decided with that item's image:
its content hash is in the fingerprint, so a parent made again makes its dependents stale. A
dependent whose parent this run still has to make is work ``after`` that parent: the engine holds
it back and asks triage again once the parent is made. One whose parent cannot be had (failed and
not resent, never made) is reported ``dependency_failed`` without being sent.

Reads file metadata (the store's sizes, reference digests), so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from batchgen.errors import ErrorClass, RequestError
from batchgen.manifest.references import ItemReference, ParentImage, Reference, ReferenceLoader
from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import ItemOutcome, ItemStatus
from batchgen.output.journal import Entry, JournalFile, outcome
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
    after: tuple[str, ...] = ()  # items it references that this run makes first: triage it again then
    spec: ItemSpec | None = None  # with ``after``: what to triage again

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


# What a dependent finds of an item it references: its image files, None while this run is still
# to make it, or why it cannot have it.
ParentState = tuple[JournalFile, ...] | None | str


@dataclass(frozen=True)
class Triage:
    planner: Callable[[ItemSpec], PlannedRequest]
    previous: Mapping[str, Entry]  # the journal's last word on each item
    store: JobStore
    references: ReferenceLoader
    mode: Mode
    redo: frozenset[str] = frozenset()  # ids to make again whatever the journal says
    parents: Mapping[str, ItemSpec] = field(default_factory=dict)  # this run's referenced items
    # Images of referenced items made by this run, by id: the engine adds each as it is written.
    made: MutableMapping[str, tuple[JournalFile, ...]] = field(default_factory=dict)
    _states: dict[str, ParentState] = field(default_factory=dict)  # referenced items, as first decided

    def chunk(self, specs: Sequence[ItemSpec]) -> tuple[list[Work], list[ItemOutcome]]:
        """The work among ``specs``, and an outcome for each item this run leaves alone."""
        todo: list[Work] = []
        left: list[ItemOutcome] = []
        for spec in specs:
            found = self._decide(spec)
            if isinstance(found, Work):
                todo.append(found)
            else:
                left.append(found)
        return todo, left

    def _decide(self, spec: ItemSpec) -> Work | ItemOutcome:
        request = self.planner(spec)
        entry = self.previous.get(request.id)
        mode = Mode.FORCE if request.id in self.redo else self.mode
        if mode is Mode.REDO:  # an item the redo does not name: left as it is, whatever it was made from
            return _from_journal(request, entry, decide(entry, "", self._intact(entry), mode))
        if spec.parents:
            found = self._parent_images(spec, request)
            if isinstance(found, Work):
                return found
            if isinstance(found, ItemOutcome):
                return found
            request = dataclasses.replace(request, references=found)
        try:
            digests = [self.references.digest(ref) for ref in request.references]
        except RequestError:
            return Work(request, Action.SEND, entry)  # sending it reports why not
        intact = self._intact(entry)
        action = decide(entry, fingerprint(request, digests), intact, mode)
        if action in (Action.SEND, Action.FETCH):
            return Work(request, action, entry, intact)
        return _from_journal(request, entry, action)

    def _intact(self, entry: Entry | None) -> bool:
        return entry is not None and self.store.intact([(f.path, f.bytes) for f in entry.files])

    def _parent_images(
        self, spec: ItemSpec, request: PlannedRequest
    ) -> tuple[Reference, ...] | Work | ItemOutcome:
        """``request``'s references with each ``@ID`` found in the job folder; or work to do once
        this run has made them; or why it cannot be sent."""
        refs: list[Reference] = []
        after: list[str] = []
        blocked: dict[str, str] = {}
        for ref in request.references:
            if not isinstance(ref, ItemReference):
                refs.append(ref)
                continue
            state = self.parent_state(ref.item_id)
            if isinstance(state, str):
                blocked[ref.item_id] = state
            elif state is None:
                after.append(ref.item_id)
            elif ref.k > len(state):
                blocked[ref.item_id] = f"made {len(state)} image(s), not {ref.k}"
            else:
                image = state[ref.k - 1]
                refs.append(ParentImage(self.store.root / image.path, ref.written, image.sha256))
        entry = self.previous.get(request.id)
        if blocked:
            if entry is not None and entry.succeeded and self._intact(entry):
                return _from_journal(request, entry, Action.SKIP)  # its image stays as it is
            return blocked_outcome(request, blocked)
        if after:
            return Work(request, Action.SEND, entry, self._intact(entry), tuple(dict.fromkeys(after)), spec)
        return tuple(refs)

    def parent_state(self, item_id: str) -> ParentState:
        """What this run makes of the referenced item ``item_id``, decided once."""
        files = self.made.get(item_id)
        if files is not None:
            return files
        if item_id not in self._states:
            self._states[item_id] = self._first_state(item_id)
        return self._states[item_id]

    def _first_state(self, item_id: str) -> ParentState:
        spec = self.parents.get(item_id)
        if spec is None:
            return "is not among this run's items"
        found = self._decide(spec)
        if isinstance(found, Work):
            return None  # this run makes it (sends it, or fetches what an earlier run paid for)
        entry = self.previous.get(item_id)
        if found.status is ItemStatus.SKIPPED and entry is not None:
            return entry.files
        if found.failure is not None:
            return f"failed ({found.failure.error_class.value})"
        return "has no image yet"

    def earlier_parents(self, specs: Sequence[ItemSpec]) -> list[JournalFile]:
        """The images of items made by an earlier run that the dependents among ``specs`` this run
        sends are made from: what a job folder that no longer holds them must have back first."""
        wanted: dict[str, JournalFile] = {}
        for spec in specs:
            if not spec.parents:
                continue
            found = self._decide(spec)
            if not isinstance(found, Work) or found.action is not Action.SEND:
                continue
            for ref in spec.references:
                if not isinstance(ref, ItemReference):
                    continue
                state = self.parent_state(ref.item_id)
                if isinstance(state, tuple) and ref.k <= len(state):
                    image = state[ref.k - 1]
                    wanted.setdefault(image.path, image)
        return list(wanted.values())

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


def parents_of(items: Iterable[ItemSpec]) -> dict[str, ItemSpec]:
    """The items among ``items`` that another one references, by id."""
    items = list(items)
    wanted = {parent for item in items for parent in item.parents}
    return {item.id: item for item in items if item.id in wanted} if wanted else {}


def blocked_entry(request: PlannedRequest, blocked: Mapping[str, str]) -> Entry:
    """The journal line of an item not sent because items it references could not be had:
    ``blocked``, their ids and why. ``batchgen retry`` sends it once they have succeeded."""
    why = "; ".join(f"{item_id} {reason}" for item_id, reason in blocked.items())
    return Entry(
        request.id,
        ItemStatus.FAILED,
        "",
        request.prompt,
        0,
        error_class=ErrorClass.DEPENDENCY_FAILED,
        message=f"not sent: an item it references did not succeed ({why})",
        retryable=True,
        blocked_by=tuple(blocked),
    )


def blocked_outcome(request: PlannedRequest, blocked: Mapping[str, str]) -> ItemOutcome:
    """The outcome of ``blocked_entry``."""
    return outcome(blocked_entry(request, blocked), request.index, request.prompt)


def _from_journal(request: PlannedRequest, entry: Entry | None, action: Action) -> ItemOutcome:
    """An item this run leaves alone (SKIP, KEEP or LEAVE), reported as the journal has it."""
    if entry is None or action is Action.LEAVE:
        return ItemOutcome(request.index, request.id, request.prompt, ItemStatus.PENDING)
    return outcome(entry, request.index, request.prompt)
