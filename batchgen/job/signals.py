"""Ctrl-C and SIGTERM during a run: the first stops sending and gives the requests in flight
a grace period; the second stops them now. Either way the journal and report are written."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchgen.engine.runner import Runner

log = logging.getLogger(__name__)


@dataclass
class Caught:
    signum: int | None = None


@contextlib.contextmanager
def signals(runner: Runner, grace_s: float, caught: Caught) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop sending, give in-flight requests ``grace_s``. Second: stop now."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def on_signal(signum: int) -> None:
        nonlocal timer
        if caught.signum is None:
            caught.signum = signum
            name = signal.Signals(signum).name
            log.warning(
                "%s: no new requests; waiting up to %gs for those in flight (again to stop now)",
                name,
                grace_s,
            )
            runner.interrupt(name)
            timer = loop.call_later(grace_s, runner.halt)
        else:
            runner.halt()

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if timer is not None:
            timer.cancel()
