"""The scheduler, watched by spies that record how many calls ran at once and in what order."""

from __future__ import annotations

import asyncio

import pytest

from batchgen.engine.scheduler import Release, run_all


class Spy:
    def __init__(self, gate: asyncio.Event | None = None, notify_at: int = 0) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[int] = []
        self.gate = gate
        self.notify_at = notify_at
        self.reached = asyncio.Event()

    async def __call__(self, item: int, release: Release) -> None:
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

    async def work(item: int, release: Release) -> None:
        if item == 9:
            stop.set()

    await run_all(source(), work, concurrency=2, stop=stop)
    assert len(pulled) <= 12


async def test_an_exception_in_work_propagates() -> None:
    async def work(item: int, release: Release) -> None:
        if item == 3:
            raise RuntimeError("bug")
        await asyncio.sleep(0)

    with pytest.raises(ExceptionGroup) as caught:
        await run_all(range(10), work, concurrency=2)
    assert caught.group_contains(RuntimeError, match="bug")


async def test_concurrency_must_be_positive() -> None:
    async def work(item: int, release: Release) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        await run_all([1], work, concurrency=0)


class Releasing:
    """A spy whose items give up their slot halfway, then wait at a gate to finish."""

    def __init__(self) -> None:
        self.holding = 0  # items that have not released yet
        self.peak_holding = 0
        self.running = 0  # items started, not finished
        self.peak_running = 0
        self.started: list[int] = []
        self.finish = asyncio.Event()

    async def __call__(self, item: int, release: Release) -> None:
        self.started.append(item)
        self.holding += 1
        self.running += 1
        self.peak_holding = max(self.peak_holding, self.holding)
        self.peak_running = max(self.peak_running, self.running)
        await asyncio.sleep(0)
        self.holding -= 1
        release()
        release()  # twice is harmless: a slot is given back once
        await self.finish.wait()
        self.running -= 1


async def test_a_released_slot_starts_the_next_item_before_this_one_finishes() -> None:
    spy = Releasing()
    task = asyncio.create_task(run_all(range(100), spy, concurrency=4))
    for _ in range(50):  # every chance to start as many as it will
        await asyncio.sleep(0)
    assert spy.started == list(range(8))  # 4 slots, then 4 more once those were released
    assert spy.peak_holding <= 4
    assert spy.peak_running == 8  # never more than the slots again, finishing
    spy.finish.set()
    await task
    assert spy.started == list(range(100))
    assert spy.peak_holding <= 4
    assert spy.peak_running <= 8


async def test_stop_after_release_still_lets_the_finishing_ones_finish() -> None:
    stop = asyncio.Event()
    finished: list[int] = []
    gate = asyncio.Event()

    async def work(item: int, release: Release) -> None:
        release()
        if item == 5:
            stop.set()
            gate.set()
        await gate.wait()
        finished.append(item)

    await run_all(range(100), work, concurrency=3, stop=stop)
    assert sorted(finished) == list(range(6))
