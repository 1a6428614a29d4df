"""The scheduler, watched by spies that record how many calls ran at once and in what order."""

from __future__ import annotations

import asyncio

import pytest

from batchgen.scheduler import run_all


class Spy:
    def __init__(self, gate: asyncio.Event | None = None, notify_at: int = 0) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[int] = []
        self.gate = gate
        self.notify_at = notify_at
        self.reached = asyncio.Event()

    async def __call__(self, item: int) -> None:
        self.started.append(item)
        if len(self.started) == self.notify_at:
            self.reached.set()
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0)  # let the others start before this one ends
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        self.running -= 1


@pytest.mark.parametrize(("items", "concurrency", "peak"), [(50, 8, 8), (3, 8, 3), (10, 1, 1), (100, 64, 64)])
async def test_every_item_once_never_more_than_the_bound(items: int, concurrency: int, peak: int) -> None:
    spy = Spy()
    await run_all(range(items), spy, concurrency=concurrency)
    assert sorted(spy.started) == list(range(items))
    assert spy.peak == peak


async def test_items_start_in_order() -> None:
    spy = Spy()
    await run_all(range(20), spy, concurrency=4)
    assert spy.started == list(range(20))


async def test_stop_lets_started_ones_finish_and_starts_no_more() -> None:
    gate, stop = asyncio.Event(), asyncio.Event()
    spy = Spy(gate, notify_at=5)
    task = asyncio.create_task(run_all(range(100), spy, concurrency=5, stop=stop))
    await spy.reached.wait()
    stop.set()
    gate.set()
    await task
    assert spy.started == [0, 1, 2, 3, 4]
    assert spy.running == 0


async def test_items_are_pulled_lazily() -> None:
    pulled = []

    def source():  # type: ignore[no-untyped-def]
        for k in range(10_000):
            pulled.append(k)
            yield k

    stop = asyncio.Event()

    async def work(item: int) -> None:
        if item == 9:
            stop.set()

    await run_all(source(), work, concurrency=2, stop=stop)
    assert len(pulled) <= 12


async def test_an_exception_in_work_propagates() -> None:
    async def work(item: int) -> None:
        if item == 3:
            raise RuntimeError("bug")
        await asyncio.sleep(0)

    with pytest.raises(ExceptionGroup) as caught:
        await run_all(range(10), work, concurrency=2)
    assert caught.group_contains(RuntimeError, match="bug")


async def test_concurrency_must_be_positive() -> None:
    async def work(item: int) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        await run_all([1], work, concurrency=0)
