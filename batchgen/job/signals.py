"""Ctrl-C and SIGTERM during a run: the first stops sending and gives the requests in flight
a grace period; the second stops them now. Either way the journal and report are written."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchgen.engine.runner import Runner

log = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Caught:
    signum: int | None = None


class Signals:
    """SIGINT and SIGTERM handled on the running loop while the block runs, and given back after
    (made inside that loop).

    A class, not a generator context manager, so that mutation testing reaches its every line
    (mutmut leaves decorated functions alone)."""

    def __init__(self, runner: Runner, grace_s: float, caught: Caught) -> None:
        self._runner = runner
        self._grace_s = grace_s
        self._caught = caught
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> Signals:
        for sig in HANDLED:
            self._loop.add_signal_handler(sig, self.on_signal, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in HANDLED:
            self._loop.remove_signal_handler(sig)
        if self._timer is not None:
            self._timer.cancel()

    def on_signal(self, signum: int) -> None:
        """First signal: stop sending, halt after the grace period. Second: halt now."""
        if self._caught.signum is not None:
            self._runner.halt()
            return
        self._caught.signum = signum
        name = signal.Signals(signum).name
        log.warning(
            "%s: no new requests; waiting up to %gs for those in flight (again to stop now)",
            name,
            self._grace_s,
        )
        self._runner.interrupt(name)
        self._timer = self._loop.call_later(self._grace_s, self._runner.halt)


def signals(runner: Runner, grace_s: float, caught: Caught) -> Signals:
    """First SIGINT/SIGTERM: stop sending, give in-flight requests ``grace_s``. Second: stop now."""
    return Signals(runner, grace_s, caught)
