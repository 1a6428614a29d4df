"""Chains in a run: a dependent is sent as soon as the items it references are made, and never
if one of them fails or does not finish (docs/chains.md).

There is no stage barrier. The work triage decides streams through as before; a dependent whose
parent this run still makes is held back (its spec only, never its request), and is triaged again
the moment its last parent is written, ahead of the rest of the stream. A parent that fails, or
is still pending when the run stops, blocks its dependents, and theirs in turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field

from batchgen.engine import item
from batchgen.engine.item import RunContext
from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import ItemOutcome, ItemStatus
from batchgen.output.journal import JournalFile
from batchgen.plan.triage import Triage, Work, blocked_outcome

Decided = AsyncIterable[tuple[list[Work], list[ItemOutcome]]]

STOPPED = "did not finish before the run stopped"


@dataclass(kw_only=True)
class Flow:
    """The run's work in the order it may be sent, and what each ending item releases or blocks."""

    finished: Callable[[ItemOutcome], None]
    run: RunContext
    triage: Triage | None = None  # None: no item references another
    # Parent id: the dependents held for it; a held dependent's index: its parents still to go;
    # referenced ids that did not succeed: why; held dependents whose parents are all made.
    _on: dict[str, list[ItemSpec]] = field(default_factory=dict, init=False)
    _left: dict[int, set[str]] = field(default_factory=dict, init=False)
    _failed: dict[str, str] = field(default_factory=dict, init=False)
    _ready: list[ItemSpec] = field(default_factory=list, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def todo(self, decided: Decided) -> AsyncIterator[Work]:
        """``decided``'s work, held dependents released as their parents are made; ends once
        nothing is held. What triage leaves alone is settled on the way."""
        async for chunk, left in decided:
            for outcome in left:
                await self.settle(outcome)
            for work in chunk:
                if work.after:
                    await self._hold(work)
                else:
                    yield work
                async for ready in self._released():
                    yield ready
        while (self._left or self._ready) and not self.run.stopping.event.is_set():
            self._changed.clear()
            async for ready in self._released():
                yield ready
            if self._left and not self._ready:
                await _first(self._changed, self.run.stopping.event)

    async def settle(self, outcome: ItemOutcome) -> None:
        """``outcome`` recorded; if others reference it, they are released or blocked."""
        self.finished(outcome)
        if self.triage is None or outcome.id not in self.triage.parents:
            return
        triage = self.triage
        if outcome.status is ItemStatus.SUCCEEDED:
            files = zip(outcome.files, outcome.digests, outcome.sizes, strict=True)
            triage.made[outcome.id] = tuple(JournalFile(path, sha, size) for path, sha, size in files)
        elif outcome.status is ItemStatus.SKIPPED and (entry := triage.previous.get(outcome.id)) is not None:
            triage.made[outcome.id] = entry.files
        else:
            failure = outcome.failure
            why = f"failed ({failure.error_class.value})" if failure else STOPPED
            self._failed[outcome.id] = why
        for spec in self._on.pop(outcome.id, []):
            left = self._left.get(spec.index)
            if left is None:
                continue  # blocked already, through another of its parents
            if outcome.id in self._failed:
                del self._left[spec.index]
                await self._block(spec, {outcome.id: self._failed[outcome.id]})
            else:
                left.discard(outcome.id)
                if not left:
                    del self._left[spec.index]
                    self._ready.append(spec)
        self._changed.set()  # after the whole change: the stream must not wait on a half-made one

    async def close(self) -> None:
        """The run is over: what is still held waited for a parent that never finished."""
        while self._on:
            parent, specs = self._on.popitem()
            for spec in specs:
                if self._left.pop(spec.index, None) is not None:
                    await self._block(spec, {parent: self._failed.get(parent, STOPPED)})
        ready, self._ready = self._ready, []
        for spec in ready:  # released, but the run stopped before it could be sent
            await self._block(spec, {}, pending=True)

    def unreached(self, spec: ItemSpec) -> ItemOutcome:
        """An item the run stopped before reaching: pending, or, if an item it references was not
        made either, failed ``dependency_failed`` (``retry`` sends it once that one is made)."""
        missing = {}
        if self.triage is not None and spec.parents:
            made = self.triage.made
            missing = {p: self._failed.get(p, STOPPED) for p in spec.parents if p not in made}
        if not missing:
            return ItemOutcome(spec.index, spec.id, spec.prompt, ItemStatus.PENDING)
        assert self.triage is not None
        return blocked_outcome(self.triage.planner(spec), missing)

    async def _hold(self, work: Work) -> None:
        assert self.triage is not None
        assert work.spec is not None
        for parent in work.after:
            if parent in self._failed:
                await self._block(work.spec, {parent: self._failed[parent]})
                return
        left = {parent for parent in work.after if parent not in self.triage.made}
        if not left:
            self._ready.append(work.spec)
            return
        self._left[work.spec.index] = left
        for parent in left:
            self._on.setdefault(parent, []).append(work.spec)

    async def _released(self) -> AsyncIterator[Work]:
        """The held dependents now free, triaged again with their parents' new images."""
        while self._ready and self.triage is not None and not self.run.stopping.event.is_set():
            specs, self._ready = self._ready, []
            todo, left = await asyncio.get_running_loop().run_in_executor(None, self.triage.chunk, specs)
            for outcome in left:
                await self.settle(outcome)
            for work in todo:
                if work.after:
                    await self._hold(work)
                else:
                    yield work

    async def _block(self, spec: ItemSpec, blocked: dict[str, str], pending: bool = False) -> None:
        assert self.triage is not None
        request = self.triage.planner(spec)
        if pending:
            await self.settle(ItemOutcome(request.index, request.id, request.prompt, ItemStatus.PENDING))
            return
        await self.settle(await item.blocked(self.run, request, blocked, self.triage.previous.get(spec.id)))


async def _first(*events: asyncio.Event) -> None:
    """Until one of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
