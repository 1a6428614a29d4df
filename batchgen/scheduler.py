"""Bounded fan-out of any async callable over any iterable. Knows nothing of HTTP or images."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def run_all(
    items: Iterable[T],
    work: Callable[[T], Awaitable[None]],
    *,
    concurrency: int,
    stop: asyncio.Event | None = None,
) -> None:
    """Call ``work`` on every item, at most ``concurrency`` at once, in order of ``items``.

    Items are pulled lazily, so a generator of 100,000 is never materialised.
    Once ``stop`` is set no new item starts; those already started finish.
    An exception from ``work`` cancels the rest and propagates.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    source = iter(items)
    stop = stop or asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            item = next(source, _DONE)
            if item is _DONE:
                return
            await work(item)  # type: ignore[arg-type]

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


_DONE = object()
