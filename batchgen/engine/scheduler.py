"""Bounded fan-out of any async callable over any iterable. Knows nothing of HTTP or images."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

Release = Callable[[], None]


async def run_all(
    items: Iterable[T] | AsyncIterable[T],
    work: Callable[[T, Release], Awaitable[None]],
    *,
    concurrency: int,
    stop: asyncio.Event | None = None,
) -> None:
    """Call ``work(item, release)`` on every item, in order of ``items``, each holding one of
    ``concurrency`` slots.

    ``work`` may call ``release()`` to hand its slot to the next item before it returns: the
    part that needs the slot is over (a request has been answered) and the rest (writing the
    answer down) overlaps with the next item's. At most ``concurrency`` items hold a slot, and
    at most ``concurrency`` more may be finishing after giving theirs up.

    Items are pulled lazily, once a slot is free, so a generator of 100,000 is never
    materialised; an async iterable may do work of its own between items (deciding which
    items need any work at all). Once ``stop`` is set no new item starts; those already started finish.
    An exception from ``work`` cancels the rest and propagates.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    source = _aiter(items)
    stop = stop or asyncio.Event()
    slots = asyncio.Semaphore(concurrency)
    started = asyncio.Semaphore(2 * concurrency)  # holding a slot, or finishing after release

    async def one(item: T) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                slots.release()

        try:
            await work(item, release)
        finally:
            release()
            started.release()

    async with asyncio.TaskGroup() as group:
        while True:
            await started.acquire()
            await slots.acquire()
            item = _DONE if stop.is_set() else await anext(source, _DONE)
            if item is _DONE:
                slots.release()
                started.release()
                break
            group.create_task(one(item))  # type: ignore[arg-type]


_DONE = object()


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
