"""The relay's own limit, seen from the client: its sliding window mirrored, and its headers obeyed.

``Window`` mirrors a limit the relay stated ("N分钟内最多请求M次"): at most M requests hold a
slot in any window. A slot is held from admission until one window after the answer came
back, because new-api records a success when it finishes, not when it arrives: counting
from the answer keeps each of our slots at least as long as the relay keeps its own.

``HeaderGate`` obeys ``x-ratelimit-remaining-requests`` / ``-reset-requests``: at zero
remaining, nothing goes out until the reset. docs/real-service.md says what users see.
"""

from __future__ import annotations

import math
from collections import deque

from batchgen.errors import RateHeaders, RelayLimit

_KEEP = 100_000  # answer times remembered: a limit of more requests than this is not mirrored whole
_NO_RESET_S = 1.0  # zero remaining and no reset said: wait this long, then send one to ask again


class Window:
    """Requests in flight and recent answers; with a ``limit``, when the next slot is free."""

    def __init__(self, limit: RelayLimit | None = None) -> None:
        self.limit = limit
        self.in_flight = 0
        self._ended: deque[float] = deque(maxlen=_KEEP)  # answer times, oldest first

    def admitted(self) -> None:
        self.in_flight += 1

    def answered(self, now: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._ended.append(now)

    def due(self, now: float) -> float | None:
        """When a slot is free (``now`` if one is); None: not before a request in flight is answered."""
        if self.limit is None:
            return now
        self._forget(now)
        excess = self.in_flight + len(self._ended) - self.limit.requests + 1
        if excess <= 0:
            return now
        if excess > len(self._ended):
            return None
        return self._ended[excess - 1] + self.limit.window_s

    def full(self, now: float) -> None:
        """The relay says its window is full. Slots our own requests do not account for were taken
        by someone else on the same key (another shard, another tool): assume just now."""
        if self.limit is None:
            return
        self._forget(now)
        missing = self.limit.requests - self.in_flight - len(self._ended)
        self._ended.extend([now] * max(0, missing))

    def _forget(self, now: float) -> None:
        assert self.limit is not None
        while self._ended and self._ended[0] + self.limit.window_s <= now:
            self._ended.popleft()


class HeaderGate:
    """How many more requests the relay's headers allow before their reset.

    An answer's ``remaining`` is what the relay had left as it answered. The requests still in
    flight may not be counted in it yet (new-api counts a success when it finishes), so each
    is taken off: the safe side. Answers are read in the order they arrive, the last one's
    count the freshest.
    """

    def __init__(self, shards: int = 1) -> None:
        self.limit: int | None = None
        self._shards = shards  # processes on the same key: after a reset, each takes its part
        self._budget: int | None = None  # None: the headers said nothing yet
        self._reset_at = 0.0

    def admitted(self) -> None:
        if self._budget is not None:
            self._budget -= 1

    def update(self, headers: RateHeaders, in_flight: int, now: float) -> None:
        """An answer came with ``headers``, while ``in_flight`` other requests wait for theirs."""
        if headers.limit is not None:
            self.limit = headers.limit
        if headers.remaining is None:
            return
        self._budget = headers.remaining - in_flight
        self._reset_at = now + (headers.reset_s if headers.reset_s is not None else _NO_RESET_S)

    def due(self, now: float) -> float | None:
        """When the headers allow the next request; None: not before an answer says more."""
        if self._budget is None or self._budget > 0:
            return now
        if now < self._reset_at:
            return None if self._reset_at == math.inf else self._reset_at
        # Reset: the full limit again (one request to learn it, if no header said it), and then
        # an answer to say more.
        self._budget = max(1, (self.limit or 1) // self._shards)
        self._reset_at = math.inf
        return now
