"""What stops a job on its own: a failing service, too many failed items, the money.

docs/nightly.md describes these budgets for users.

- Circuit breaker: after ``max_consecutive_failures`` retryable failures in a
  row with no success, every worker pauses; one attempt goes out as a probe
  after ``pause_s``. If it succeeds the job goes on, if it fails the job stops.
- ``max_failures``: stop once that many items have failed.
- ``max_cost``: stop before the estimated spend would pass it. Unconfirmed
  attempts (cut off after sending) count as spent: they may have been billed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from batchgen.config import Limits


@dataclass(kw_only=True)
class Guards:
    max_consecutive_failures: int
    pause_s: float  # how long the breaker stays open before its probe
    max_failures: int | None = None
    max_cost: float | None = None

    consecutive_failures: int = 0
    failed_items: int = 0
    spent: float = 0.0
    reserved: float = 0.0
    _probe: asyncio.Future[bool] | None = field(default=None, repr=False)
    _tripped: bool = False

    @classmethod
    def from_limits(
        cls, limits: Limits | None = None, max_failures: int | None = None, max_cost: float | None = None
    ) -> Guards:
        """The budgets of ``limits`` (None: the default limits) and of the command line."""
        limits = limits or Limits()
        return cls(
            max_consecutive_failures=limits.max_consecutive_failures,
            pause_s=limits.retry_cap_s,
            max_failures=max_failures,
            max_cost=max_cost,
        )

    async def admit(self, stopped: asyncio.Event) -> tuple[bool, bool]:
        """May an attempt go out now? Returns (go, is_probe); waits while the breaker is open."""
        while self._tripped and not stopped.is_set():
            if self._probe is None:
                self._probe = asyncio.get_running_loop().create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), timeout=self.pause_s)
                return (not stopped.is_set(), True)
            stop_waiter = asyncio.ensure_future(stopped.wait())
            try:
                waiters: list[asyncio.Future[Any]] = [self._probe, stop_waiter]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_waiter.cancel()
        return (not stopped.is_set(), False)

    def attempt_done(self, *, ok: bool, retryable_failure: bool, is_probe: bool) -> str | None:
        """Record an attempt; returns why the job must stop, if it must."""
        if ok or (is_probe and not retryable_failure):
            # A refusal or a bad request is still an answer: the service is up.
            self.consecutive_failures = 0
            self._close(True)
            return None
        if is_probe:
            self._close(False)
            return (
                f"the service failed {self.consecutive_failures} times in a row"
                f" and a probe after {self.pause_s:g}s failed too"
            )
        if retryable_failure:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.max_consecutive_failures and not self._tripped:
                self._tripped = True
        return None

    def _close(self, healthy: bool) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.set_result(healthy)
        self._probe = None
        if healthy:
            self._tripped = False

    def item_failed(self) -> str | None:
        self.failed_items += 1
        if self.max_failures is not None and self.failed_items >= self.max_failures:
            return f"--max-failures {self.max_failures} reached"
        return None

    def reserve(self, cost: float) -> str | None:
        """Before sending an item: refuse if its cost could take the spend past max_cost."""
        if self.max_cost is not None and self.spent + self.reserved + cost > self.max_cost + 1e-9:
            return f"--max-cost {self.max_cost:g} reached (spent ~{self.spent:.2f}, next item ~{cost:.2f})"
        self.reserved += cost
        return None

    def unconfirmed(self, cost: float) -> str | None:
        """An attempt cut off after sending: perhaps billed, so spent now. The item keeps its
        reservation for the retry; returns why the job must stop if that retry could pass max_cost."""
        self.spent += cost
        if self.max_cost is not None and self.spent + self.reserved > self.max_cost + 1e-9:
            return (
                f"--max-cost {self.max_cost:g} reached (spent ~{self.spent:.2f} with attempts perhaps billed)"
            )
        return None

    def settle(self, cost: float, *, produced: bool) -> None:
        """After an item: its reservation becomes spend if it produced images."""
        self.reserved = max(0.0, self.reserved - cost)
        self.spent += cost * produced
