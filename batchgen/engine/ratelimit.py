"""Requests per minute for the whole job, and slowing the whole job down after a 429.

Admissions are spaced at least ``60 / rpm`` seconds apart, measured when
they happen (not when they were booked), so no 60-second window ever holds
more than ``rpm`` of them, and there is no burst at start. A 429 pauses every
worker (for the server's Retry-After, or one interval) and halves the rate;
each success wins back 5% of it, until the configured rate is reached again.

Not aiolimiter: its only burst-free mode is a fixed spacing, it cannot be
slowed down and sped up again while running, and its clock is the event
loop's, where tests need to inject one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]

_SLOWEST_FACTOR = 64.0  # after many 429s in a row, at most this much slower
_RECOVERY = 0.95  # each success takes this much off the slowdown


class RateLimiter:
    def __init__(
        self,
        per_minute: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_minute is not None and per_minute <= 0:
            raise ValueError(f"requests per minute must be above 0, not {per_minute}")
        # A hair over 60/rpm, so float rounding can never fit rpm + 1 into a window.
        self._base = 60.0 / per_minute * (1 + 1e-9) if per_minute else 0.0
        self._interval = self._base
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._last: float | None = None
        self._paused_until = 0.0
        self._recent: deque[float] = deque(maxlen=32)

    @property
    def interval(self) -> float:
        return self._interval

    async def acquire(self, stopped: Callable[[], bool] = lambda: False) -> None:
        """Wait for this request's turn; turns go first come, first served. Returns early if ``stopped``."""
        async with self._lock:
            while not stopped():
                now = self._clock()
                due = max(self._paused_until, self._last + self._interval if self._last is not None else now)
                if due <= now:
                    break
                await self._sleep(due - now)
            self._last = self._clock()
            self._recent.append(self._last)

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause everyone, then go on at half the rate."""
        now = self._clock()
        if self._interval == 0.0:
            self._interval = self._observed_interval()
        self._interval = min(self._interval * 2, max(self._base, self._observed_interval()) * _SLOWEST_FACTOR)
        pause = retry_after if retry_after is not None else self._interval
        self._paused_until = max(self._paused_until, now + pause)

    def succeeded(self) -> None:
        if self._interval > self._base:
            self._interval = max(self._base, self._interval * _RECOVERY)
            if self._base == 0.0 and self._interval < 1e-3:
                self._interval = 0.0  # no configured rate: back to unlimited

    def _observed_interval(self) -> float:
        """The spacing of recent admissions: where to start slowing down from when no rate is set."""
        if len(self._recent) < 2:
            return 0.1
        return max(1e-3, (self._recent[-1] - self._recent[0]) / (len(self._recent) - 1))
