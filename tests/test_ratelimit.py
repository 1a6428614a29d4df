"""The job-wide rate limit, on an injected clock: no test here waits for real time."""

from __future__ import annotations

import asyncio
import bisect
import itertools

import pytest

from batchgen.engine.ratelimit import RateLimiter


class FakeTime:
    """A clock that moves only when someone sleeps (the limiter sleeps one waiter at a time)."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def most_in_any_window(times: list[float], window: float = 60.0) -> int:
    """The largest number of admissions in any half-open window [t, t + window)."""
    return max(bisect.bisect_left(times, t + window) - k for k, t in enumerate(times))


async def admit_all(limiter: RateLimiter, fake: FakeTime, requests: int, workers: int) -> list[float]:
    times: list[float] = []
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            await limiter.acquire()
            times.append(fake.now)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return times


@pytest.mark.parametrize(("rpm", "workers"), [(60, 1), (120, 16), (7, 3), (600, 64), (1000, 8)])
async def test_never_more_than_rpm_in_any_window_no_burst_and_full_use(rpm: int, workers: int) -> None:
    fake = FakeTime()
    limiter = RateLimiter(rpm, clock=fake.clock, sleep=fake.sleep)
    times = await admit_all(limiter, fake, requests=rpm * 3, workers=workers)
    assert times == sorted(times)
    assert most_in_any_window(times) <= rpm
    assert times[0] == 0.0
    assert times[1] >= 60 / rpm  # no burst at start
    assert sum(1 for t in times if t < 60) >= 0.9 * rpm  # the limit is used when the work is there


async def test_no_rate_set_means_no_waiting() -> None:
    fake = FakeTime()
    times = await admit_all(RateLimiter(None, clock=fake.clock, sleep=fake.sleep), fake, 100, 8)
    assert times == [0.0] * 100


async def test_a_429_pauses_everyone_and_halves_the_rate_then_it_recovers() -> None:
    fake = FakeTime()
    limiter = RateLimiter(60, clock=fake.clock, sleep=fake.sleep)
    await admit_all(limiter, fake, 5, 2)
    assert fake.now == pytest.approx(4.0)
    limiter.rate_limited(retry_after=30.0)
    await limiter.acquire()
    assert fake.now == pytest.approx(34.0)  # nobody went before the Retry-After
    await limiter.acquire()
    assert fake.now == pytest.approx(36.0)  # and then at half the rate
    for _ in range(200):
        limiter.succeeded()
    assert limiter.interval == pytest.approx(1.0)  # back to the configured rate, never faster


async def test_a_429_without_a_configured_rate_slows_down_from_the_observed_one() -> None:
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    for _ in range(10):
        await limiter.acquire()
        fake.now += 0.5  # requests were going out every half second
    limiter.rate_limited(retry_after=None)
    assert limiter.interval == pytest.approx(1.0)
    for _ in range(500):
        limiter.succeeded()
    assert limiter.interval == 0.0


@pytest.mark.parametrize(
    ("gaps", "slowed_to"),
    [
        ([0.5], 1.0),  # two requests are enough to see a rate
        ([5.0] * 10 + [0.5] * 31, 1.0),  # the recent rate (the last 32 requests), not the run's average
    ],
)
async def test_a_429_without_a_rate_halves_the_rate_of_the_latest_requests(
    gaps: list[float], slowed_to: float
) -> None:
    fake = FakeTime()
    fake.now = 5000.0  # a monotonic clock starts anywhere
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await limiter.acquire()
    for gap in gaps:
        fake.now += gap
        await limiter.acquire()
    limiter.rate_limited(retry_after=None)
    assert limiter.interval == pytest.approx(slowed_to)


async def test_repeated_429s_slow_down_only_so_far() -> None:
    fake = FakeTime()
    limiter = RateLimiter(60, clock=fake.clock, sleep=fake.sleep)
    for _ in range(50):
        limiter.rate_limited(retry_after=0)
    assert limiter.interval <= 64 * 1.0 + 1e-6


async def test_a_stopped_job_is_not_kept_waiting() -> None:
    fake = FakeTime()
    limiter = RateLimiter(1, clock=fake.clock, sleep=fake.sleep)
    await limiter.acquire()
    await limiter.acquire(stopped=lambda: True)
    assert fake.now == 0.0


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="above 0"):
        RateLimiter(0)


class RacingTime:
    """Sleepers as real ones behave: each waits for its own deadline, every sleeper that is due
    wakes in the same step, and they then run interleaved at their awaits, in the order they
    went to sleep. ``FakeTime`` above runs one sleeper at a time, which hides what a lock is for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, woken))
        await woken

    async def run(self, tasks: list[asyncio.Task[None]]) -> None:
        """Let every task run until it sleeps or ends, then move the clock to the next deadline."""
        while True:
            for _ in range(20):  # nothing here waits on I/O: a few loop turns reach every await
                await asyncio.sleep(0)
            if all(task.done() for task in tasks):
                return
            assert self._sleepers, "no task is sleeping, yet some never end"
            self.now = max(self.now, min(due for due, _ in self._sleepers))
            due = [woken for when, woken in self._sleepers if when <= self.now]
            self._sleepers = [(when, woken) for when, woken in self._sleepers if when > self.now]
            for woken in due:
                if not woken.done():  # a sleeper woken early by something else was cancelled
                    woken.set_result(None)


async def test_turns_go_first_come_first_served_when_waiters_wake_together() -> None:
    racing = RacingTime()
    limiter = RateLimiter(60, clock=racing.clock, sleep=racing.sleep)
    asked: list[int] = []  # worker ids, in the order they asked for a turn
    admitted: list[tuple[float, int]] = []

    async def worker(name: int) -> None:
        for _ in range(3):
            asked.append(name)
            await limiter.acquire()
            admitted.append((racing.now, name))

    tasks = [asyncio.create_task(worker(k)) for k in range(4)]
    await racing.run(tasks)
    times = [t for t, _ in admitted]
    assert len(times) == 12
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))  # 60 rpm: a second apart
    # Whoever asked first goes first: a worker back for its next turn queues behind the ones
    # already waiting, instead of winning every race at the moment they all wake up.
    assert [name for _, name in admitted] == asked
    assert racing.sleeps <= len(times)  # one waiter sleeps per turn, not all of them each time
