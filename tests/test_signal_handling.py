"""The signal handlers in this process, with a spy for the runner: which signal interrupts, which
halts, when the grace period ends it, and what is given back when the block ends.
(tests/test_signals.py sends real signals to a real run in a subprocess.)"""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest

from batchgen.job.signals import Caught, signals


class SpyRunner:
    """Records every call the handlers make, and wakes a waiter on each."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.called = asyncio.Event()

    def interrupt(self, signal_name: str) -> None:
        self.calls.append(f"interrupt {signal_name}")
        self.called.set()

    def halt(self) -> None:
        self.calls.append("halt")
        self.called.set()

    async def next_call(self) -> None:
        async with asyncio.timeout(5):  # not a wait for time: a handler that raised never calls
            await self.called.wait()
        self.called.clear()


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
async def test_a_first_signal_stops_sending_and_a_second_halts_now(
    first: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    spy, caught = SpyRunner(), Caught()
    with caplog.at_level(logging.WARNING), signals(spy, 3600, caught):  # type: ignore[arg-type]
        signal.raise_signal(first)
        await spy.next_call()
        assert spy.calls == [f"interrupt {first.name}"]
        assert caught.signum == first
        signal.raise_signal(signal.SIGINT)
        await spy.next_call()
    assert spy.calls == [f"interrupt {first.name}", "halt"]
    assert caught.signum == first  # the first signal is the one the run ends by
    assert caplog.messages == [
        f"{first.name}: no new requests; waiting up to 3600s for those in flight (again to stop now)"
    ]


async def test_the_grace_period_ends_in_a_halt() -> None:
    spy = SpyRunner()
    with signals(spy, 0.001, Caught()):  # type: ignore[arg-type]
        signal.raise_signal(signal.SIGTERM)
        await spy.next_call()
        await spy.next_call()
    assert spy.calls == ["interrupt SIGTERM", "halt"]


async def test_the_block_ending_cancels_the_grace_period_and_gives_the_signals_back() -> None:
    spy = SpyRunner()
    with signals(spy, 0, Caught()) as handlers:  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        handlers.on_signal(signal.SIGTERM)  # the loop has not run since: the halt is still due
    for _ in range(3):
        await asyncio.sleep(0)  # a timer due now would run here
    assert spy.calls == ["interrupt SIGTERM"]
    # asyncio gives a removed handler back to Python's default, not to the one before the block.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def test_a_block_without_a_signal_interrupts_nothing() -> None:
    spy, caught = SpyRunner(), Caught()
    with signals(spy, 0, caught):  # type: ignore[arg-type]
        await asyncio.sleep(0)
    assert spy.calls == []
    assert caught.signum is None
