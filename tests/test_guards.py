"""What stops a job on its own: breaker with probe, failed-item budget, cost budget."""

from __future__ import annotations

import asyncio

from batchgen.config import Limits
from batchgen.engine.guards import Guards


async def test_breaker_trips_after_n_failures_and_a_good_probe_closes_it() -> None:
    guards, stop = Guards(max_consecutive_failures=3, pause_s=0), asyncio.Event()
    for _ in range(3):
        assert await guards.admit(stop) == (True, False)
        assert guards.attempt_done(ok=False, retryable_failure=True, is_probe=False) is None
    go, probe = await guards.admit(stop)
    assert (go, probe) == (True, True)
    waiter = asyncio.create_task(guards.admit(stop))  # everyone else waits for the probe
    await asyncio.sleep(0)
    assert not waiter.done()
    assert guards.attempt_done(ok=True, retryable_failure=False, is_probe=True) is None
    assert await waiter == (True, False)
    assert guards.consecutive_failures == 0


async def test_a_failed_probe_stops_the_job_and_releases_the_waiters() -> None:
    guards, stop = Guards(max_consecutive_failures=2, pause_s=0), asyncio.Event()
    for _ in range(2):
        guards.attempt_done(ok=False, retryable_failure=True, is_probe=False)
    await guards.admit(stop)
    waiter = asyncio.create_task(guards.admit(stop))
    await asyncio.sleep(0)
    verdict = guards.attempt_done(ok=False, retryable_failure=True, is_probe=True)
    assert verdict is not None
    assert "failed 2 times in a row" in verdict
    stop.set()  # what the runner does with a verdict
    assert await waiter == (False, False)


async def test_a_failed_probe_leaves_the_breaker_open_until_the_job_stops() -> None:
    guards, stop = Guards(max_consecutive_failures=1, pause_s=3600), asyncio.Event()
    guards.attempt_done(ok=False, retryable_failure=True, is_probe=False)
    assert guards.attempt_done(ok=False, retryable_failure=True, is_probe=True) is not None
    late = asyncio.create_task(guards.admit(stop))  # an attempt that comes along before the stop
    for _ in range(5):
        await asyncio.sleep(0)
    assert not late.done()  # nothing goes out to a service that just failed its probe
    stop.set()
    assert await asyncio.wait_for(late, timeout=5) == (False, True)


async def test_a_refused_probe_still_proves_the_service_up() -> None:
    guards, stop = Guards(max_consecutive_failures=1, pause_s=0), asyncio.Event()
    guards.attempt_done(ok=False, retryable_failure=True, is_probe=False)
    assert (await guards.admit(stop))[1]
    assert guards.attempt_done(ok=False, retryable_failure=False, is_probe=True) is None
    assert await guards.admit(stop) == (True, False)


async def test_refusals_neither_trip_nor_reset_the_breaker() -> None:
    guards = Guards.from_limits(Limits(max_consecutive_failures=3))
    guards.attempt_done(ok=False, retryable_failure=True, is_probe=False)
    guards.attempt_done(ok=False, retryable_failure=False, is_probe=False)
    guards.attempt_done(ok=False, retryable_failure=True, is_probe=False)
    assert guards.consecutive_failures == 2


async def test_stop_during_the_pause_sends_no_probe() -> None:
    guards, stop = Guards(max_consecutive_failures=1, pause_s=3600), asyncio.Event()
    guards.attempt_done(ok=False, retryable_failure=True, is_probe=False)
    task = asyncio.create_task(guards.admit(stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) == (False, True)


def test_max_failures() -> None:
    guards = Guards.from_limits(max_failures=2)
    assert guards.item_failed() is None
    assert guards.item_failed() == "--max-failures 2 reached"


def test_max_cost_counts_reservations_spend_and_unconfirmed_attempts() -> None:
    guards = Guards.from_limits(max_cost=1.0)
    assert guards.reserve(0.4) is None
    assert guards.reserve(0.4) is None
    refusal = guards.reserve(0.4)  # 1.2 would pass 1.0 with both in flight
    assert refusal is not None
    assert refusal.startswith("--max-cost 1 reached")
    guards.settle(0.4, produced=False)  # failed cleanly: not billed
    assert guards.unconfirmed(0.4) is None  # the other cut off after sending: 0.4 spent, 0.4 held
    guards.settle(0.4, produced=True)  # then its image
    assert round(guards.spent, 6) == 0.8
    assert guards.reserve(0.4) is not None


def test_an_attempt_perhaps_billed_counts_at_once_not_when_its_item_ends() -> None:
    # Two items in flight at 0.3 under 1.0; one is cut off after sending and waits to retry.
    # Meanwhile a third item asks: 0.3 spent and 0.6 reserved leave no room for it.
    guards = Guards.from_limits(max_cost=1.0)
    assert guards.reserve(0.3) is None
    assert guards.reserve(0.3) is None
    assert guards.unconfirmed(0.3) is None
    assert round(guards.spent, 6) == 0.3
    assert guards.reserve(0.3) is not None


def test_a_retry_that_could_pass_max_cost_stops_the_job() -> None:
    guards = Guards.from_limits(max_cost=1.0)
    assert guards.reserve(0.3) is None
    assert guards.reserve(0.3) is None
    assert guards.unconfirmed(0.3) is None  # 0.3 spent and 0.6 held: both items may still end in 0.9
    reason = guards.unconfirmed(0.3)  # 0.6 spent: its retry and the other item could reach 1.2
    assert reason is not None
    assert reason.startswith("--max-cost 1 reached")


def test_max_cost_can_be_spent_to_the_cent_despite_float_rounding() -> None:
    guards = Guards.from_limits(max_cost=0.3)
    assert guards.reserve(0.1) is None
    assert guards.reserve(0.2) is None  # 0.1 + 0.2 is 0.30000000000000004 in floats
    assert guards.reserve(0.01) is not None
    # An attempt perhaps billed that leaves the retry room to the cent lets it go.
    guards = Guards.from_limits(max_cost=0.3)
    assert guards.reserve(0.1) is None
    assert guards.reserve(0.1) is None
    assert guards.unconfirmed(0.1) is None  # 0.1 spent, 0.2 held: 0.30000000000000004
    assert guards.reserve(0.01) is not None


def test_the_budgets_come_from_the_limits_and_the_command_line() -> None:
    guards = Guards.from_limits(Limits(max_consecutive_failures=5, retry_cap_s=7.0), 3, 1.5)
    assert (guards.max_consecutive_failures, guards.pause_s) == (
        5,
        7.0,
    )  # the breaker's pause: the backoff cap
    assert (guards.max_failures, guards.max_cost) == (3, 1.5)
    default = Guards.from_limits()
    assert (default.max_consecutive_failures, default.pause_s) == (
        Limits().max_consecutive_failures,
        Limits().retry_cap_s,
    )
