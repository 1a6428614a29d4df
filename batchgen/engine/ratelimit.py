"""Requests per minute for the whole job, the relay's own limit, and slowing down after a 429.

Admissions are spaced at least ``60 / rpm`` seconds apart, measured when
they happen (not when they were booked), so no 60-second window ever holds
more than ``rpm`` of them, and there is no burst at start. A 429 that says
nothing pauses every worker (for the server's Retry-After, or one interval)
and halves the rate; each success wins back 5% of it, until the configured
rate is reached again.

A limit the relay states (``RelayLimit``, from a 429's words or remembered from an
earlier run) is mirrored as its sliding window, and ``x-ratelimit-*`` headers are
obeyed (``engine.window``): a turn then waits until the window has room, with no
fixed spacing, and a 429 they explain is a throttle, not a failure.

Not aiolimiter: its only burst-free mode is a fixed spacing, it cannot be
slowed down and sped up again while running, and its clock is the event
loop's, where tests need to inject one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from batchgen.engine.window import HeaderGate, Window
from batchgen.errors import RateHeaders, RelayLimit

Sleep = Callable[[float], Awaitable[None]]

_SLOWEST_FACTOR = 64.0  # after many 429s in a row, at most this much slower
_RECOVERY = 0.95  # each success takes this much off the slowdown


class RateLimiter:
    """Turns for requests. ``relay``: the relay's limit, known before the run (remembered);
    ``shards``: how many processes share the key, each mirroring its part of the relay's limit;
    ``on_learned``: called when a 429 states a limit not known before."""

    def __init__(
        self,
        per_minute: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        relay: RelayLimit | None = None,
        shards: int = 1,
        on_learned: Callable[[RelayLimit], None] = lambda limit: None,
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
        self._shards = shards
        self._on_learned = on_learned
        self.relay = relay  # the relay's whole limit (all shards), as stated
        self._window = Window(relay.share(shards) if relay else None)
        self._headers = HeaderGate(shards)
        self._answered = asyncio.Event()

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def mirrored(self) -> RelayLimit | None:
        """This process's part of the relay's limit, mirrored as a sliding window."""
        return self._window.limit

    @property
    def header_limit(self) -> int | None:
        """The limit the relay's x-ratelimit-limit-requests header said, if one did."""
        return self._headers.limit

    async def acquire(self, stopped: Callable[[], bool] = lambda: False) -> bool:
        """Wait for this request's turn; turns go first come, first served. True: admitted (call
        ``answered`` once its answer is in); False: ``stopped``, and nothing was admitted."""
        async with self._lock:
            while True:
                if stopped():
                    return False
                now = self._clock()
                due = self._due(now)
                if due is not None and due <= now:
                    break
                await self._wait(None if due is None else due - now)
            self._last = self._clock()
            self._recent.append(self._last)
            self._window.admitted()
            self._headers.admitted()
            return True

    async def _wait(self, seconds: float | None) -> None:
        """Sleep ``seconds`` (None: until an answer), or less: an answer's headers may say
        there is room sooner than the last one did."""
        self._answered.clear()
        answer = asyncio.ensure_future(self._answered.wait())
        if seconds is None:
            await answer
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait((answer, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            answer.cancel()
            sleeper.cancel()

    def _due(self, now: float) -> float | None:
        due = max(self._paused_until, self._last + self._interval if self._last is not None else now)
        window = self._window.due(now)
        headers = self._headers.due(now)
        if window is None or headers is None:
            return None
        return max(due, window, headers)

    def answered(self, headers: RateHeaders | None) -> None:
        """An admitted request was answered (or given up on): its slot starts to age."""
        now = self._clock()
        self._window.answered(now)
        if headers is not None:
            self._headers.update(headers, self._window.in_flight, now)
        self._answered.set()

    def refused(self, stated: RelayLimit | None, headers: RateHeaders | None) -> bool:
        """A 429 (after ``answered``). True when the relay's limit explains it: that limit is now
        mirrored, and the request waits for its turn again; False: a 429 that says nothing."""
        if stated is not None:
            if stated != self.relay:
                self.relay = stated
                self._window.limit = stated.share(self._shards)
                self._on_learned(stated)
            self._window.full(self._clock())
            return True
        return headers is not None and headers.remaining == 0

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
