"""new-api's per-key rate limit (its ``ModelRequestRateLimit`` middleware), as the relay applies it.

A sliding window of ``rate_limit`` requests per ``rate_window_ms``. The success form counts
requests that succeeded, each recorded when it finished; the total form counts every request
as it arrives, failures included. Over the limit: 429, no Retry-After, the limit in words.
With ``rate_headers``, every answer also carries OpenAI's ``x-ratelimit-*-requests`` headers.
"""

from __future__ import annotations

import time
from collections import deque

from aiohttp import web

from batchgen import relay
from batchgen.sim import faults
from batchgen.sim.settings import SimulatorConfig


class KeyWindow:
    """The window of one key (the simulator serves one)."""

    def __init__(self, config: SimulatorConfig) -> None:
        assert config.rate_limit is not None
        self.requests = config.rate_limit
        self.window_s = config.rate_window_ms / 1000
        self.total = config.rate_form == "total"
        self._times: deque[float] = deque()

    def arrived(self) -> web.Response | None:
        """A request arrives: the 429 that refuses it, or None (for the total form, counted)."""
        now = self._forget()
        if len(self._times) >= self.requests:
            words = relay.RATE_LIMIT_WORDS["total" if self.total else "success"]
            minutes = format(self.window_s / 60, ".12g")
            return faults.error(429, words.format(minutes=minutes, requests=self.requests), "new_api_error")
        if self.total:
            self._times.append(now)
        return None

    def finished(self, succeeded: bool) -> None:
        """A request's answer is made; the success form counts it now, if it succeeded."""
        if succeeded and not self.total:
            self._times.append(self._forget())

    def headers(self) -> dict[str, str]:
        """OpenAI's headers: the limit, what is left of it, and how long until it is all back."""
        now = self._forget()
        reset = self._times[-1] + self.window_s - now if self._times else 0.0
        return {
            "x-ratelimit-limit-requests": str(self.requests),
            "x-ratelimit-remaining-requests": str(max(0, self.requests - len(self._times))),
            "x-ratelimit-reset-requests": go_duration(reset),
        }

    def _forget(self) -> float:
        now = time.monotonic()
        while self._times and self._times[0] + self.window_s <= now:
            self._times.popleft()
        return now


def go_duration(seconds: float) -> str:
    """As Go prints a duration, the way OpenAI's headers carry it: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes < 1:
        return f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest:.3f}".rstrip("0").rstrip(".") + "s"
