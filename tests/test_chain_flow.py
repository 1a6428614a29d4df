"""Chains in the runner, with a fake client whose answers wait on events: no stage barrier, and
what a parent that never finishes does to the items made from it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from batchgen.engine.guards import Guards
from batchgen.engine.retry import RetryPolicy
from batchgen.engine.runner import JobRun, Runner
from batchgen.errors import ErrorClass
from batchgen.manifest.references import ItemReference, ReferenceLoader
from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import ItemStatus
from batchgen.output.journal import Journal
from batchgen.output.journal import read as read_journal
from batchgen.output.store import JobStore
from batchgen.plan.plan import plan_item
from batchgen.plan.pricing import PriceTable
from batchgen.plan.resume import Mode
from batchgen.plan.triage import Triage, decided, parents_of
from batchgen.service.client import Generation, Room, no_wait

from .fakes import OK, FakeClient, make_spec


@dataclass
class Watching(FakeClient):
    """A fake client that sets an event when a prompt is sent."""

    sent: dict[str, asyncio.Event] = field(default_factory=dict)

    async def generate(self, body: Any, idempotency_key: str, room: Room = no_wait) -> Generation:
        self.sent.setdefault(str(body["prompt"]), asyncio.Event()).set()
        return await super().generate(body, idempotency_key, room)

    def event(self, prompt: str) -> asyncio.Event:
        return self.sent.setdefault(prompt, asyncio.Event())


def made_from(index: int, item_id: str, parent: str) -> ItemSpec:
    return make_spec(index, item_id, f"{item_id} view", references=[ItemReference(parent, 1, f"@{parent}")])


def make_runner(tmp_path: Path, client: FakeClient, concurrency: int = 4) -> Runner:
    store = JobStore(tmp_path / "out" / "job")
    store.prepare()
    book = Journal(store.root)
    book.open()
    return Runner(
        job="job",
        client=client,
        store=store,
        policy=RetryPolicy.from_limits(),
        references=ReferenceLoader(20_000_000),
        concurrency=concurrency,
        guards=Guards.from_limits(),
        journal=book,
    )


async def run(r: Runner, specs: list[ItemSpec]) -> JobRun:
    planner = partial(plan_item, reference_field="reference_images", prices=PriceTable.default())
    triage = Triage(planner, {}, r.store, r.references, Mode.RUN, parents=parents_of(specs))
    try:
        return await asyncio.wait_for(r.run(specs, decided(triage, specs), triage), timeout=10)
    finally:
        assert r.journal is not None
        r.journal.close()


async def test_a_slow_parent_holds_up_its_own_dependents_and_no_one_else(tmp_path: Path) -> None:
    client = Watching()
    # a's answer waits until b's grandchild has been sent: with a barrier between the levels of
    # the chains, that never happens and the run times out.
    client.scripts = {"a photo": [client.event("b11 view"), OK]}
    specs = [
        make_spec(0, "a", "a photo"),
        made_from(1, "a1", "a"),
        make_spec(2, "b", "b photo"),
        made_from(3, "b1", "b"),
        made_from(4, "b11", "b1"),  # depth 3, still ahead of a
    ]
    result = await run(make_runner(tmp_path, client), specs)
    assert [o.status for o in result.outcomes] == [ItemStatus.SUCCEEDED] * 5
    answered = client.answered
    assert answered.index("b1 view") < answered.index("a photo") < answered.index("a1 view")


async def test_a_parent_still_out_when_the_run_halts_blocks_its_dependents(tmp_path: Path) -> None:
    client = Watching()
    client.scripts = {"a photo": [asyncio.Event(), OK]}  # never answered
    r = make_runner(tmp_path, client)

    async def halt_once_sent() -> None:
        await client.event("a photo").wait()
        r.halt()

    halting = asyncio.create_task(halt_once_sent())
    result = await run(r, [make_spec(0, "a", "a photo"), made_from(1, "a1", "a"), made_from(2, "a2", "a1")])
    await halting
    a, a1, a2 = result.outcomes
    assert a.status is ItemStatus.PENDING
    assert a1.status is a2.status is ItemStatus.FAILED
    assert a1.failure is not None
    assert a2.failure is not None
    assert a1.failure.error_class is a2.failure.error_class is ErrorClass.DEPENDENCY_FAILED
    assert a1.failure.blocked_by == ("a",)
    assert a2.failure.blocked_by == ("a1",)
    assert "did not finish before the run stopped" in a1.failure.message
    assert (a1.requests_sent, a1.estimated_cost) == (0, 0.0)
    assert [prompt for prompt, _, _ in client.calls] == ["a photo"]
    entries = read_journal(r.store.root).entries
    assert entries["a1"].error_class is ErrorClass.DEPENDENCY_FAILED
    assert entries["a1"].retryable  # retry sends it once a has an image


async def test_an_item_never_reached_is_blocked_if_its_parent_was_not_made_either(tmp_path: Path) -> None:
    client = Watching()
    client.scripts = {"a photo": [asyncio.Event(), OK]}  # never answered
    r = make_runner(tmp_path, client, concurrency=1)

    async def halt_once_sent() -> None:
        await client.event("a photo").wait()
        r.halt()

    halting = asyncio.create_task(halt_once_sent())
    specs = [make_spec(0, "a", "a photo"), make_spec(1, "b", "b photo"), made_from(2, "b1", "b")]
    result = await run(r, specs)
    await halting
    a, b, b1 = result.outcomes
    assert a.status is b.status is ItemStatus.PENDING
    assert b1.status is ItemStatus.FAILED
    assert b1.failure is not None
    assert b1.failure.error_class is ErrorClass.DEPENDENCY_FAILED
    assert b1.failure.blocked_by == ("b",)
    assert [prompt for prompt, _, _ in client.calls] == ["a photo"]
