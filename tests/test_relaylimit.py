"""The relay's own rate limit: reading it from a 429's words and from the headers, and mirroring
it as a sliding window, on an injected clock (no test here waits for real time)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from batchgen.engine.ratelimit import RateLimiter
from batchgen.errors import ErrorClass, RateHeaders, RelayLimit
from batchgen.service.limits import parse_duration, rate_headers, stated_limit
from batchgen.service.responses import error_from_response

from .test_ratelimit import FakeTime, RacingTime, most_in_any_window

SUCCESS_FORM = "您已达到请求数限制：1分钟内最多请求120次"  # noqa: RUF001
TOTAL_FORM = "您已达到总请求数限制：2分钟内最多请求30次，包括失败次数，请检查您的请求是否正确"  # noqa: RUF001


@pytest.mark.parametrize(
    ("message", "limit"),
    [
        (SUCCESS_FORM, RelayLimit(120, 60.0)),
        (f"{SUCCESS_FORM} (request id: 20261203abc)", RelayLimit(120, 60.0)),
        (TOTAL_FORM, RelayLimit(30, 120.0)),
        ("您已达到请求数限制：0.05分钟内最多请求6次", RelayLimit(6, 3.0)),  # noqa: RUF001 (the simulator's short windows)
        ("Rate limit reached: 60 requests per 1 minute", RelayLimit(60, 60.0)),
        ("You can make 60 requests per minute", RelayLimit(60, 60.0)),
        ("limit: 500 requests per 5 minutes", RelayLimit(500, 300.0)),
        ("10 requests per 30 seconds", RelayLimit(10, 30.0)),
        ("1 request per hour", RelayLimit(1, 3600.0)),
        # Garbled or wordless: no limit is read, and a 429 keeps today's behaviour.
        ("您已达到请求数限制：分钟内最多请求次", None),  # noqa: RUF001
        ("您已达到请求数限制：N分钟内最多请求M次", None),  # noqa: RUF001
        ("您已达到请求数限制：1分钟内最多请求0次", None),  # noqa: RUF001
        ("Rate limit reached for requests", None),
        ("too many requests per minute", None),
        ("", None),
    ],
)
def test_the_limit_is_read_from_the_words(message: str, limit: RelayLimit | None) -> None:
    assert stated_limit(message) == limit


def new_api_429(message: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    body = orjson.dumps({"error": {"message": message, "type": "new_api_error", "param": "", "code": ""}})
    return 429, headers or {}, body


def test_a_new_api_429_carries_its_limit_and_no_wait() -> None:
    error = error_from_response(*new_api_429(SUCCESS_FORM))
    assert error.error_class is ErrorClass.RATE_LIMITED
    assert error.stated_limit == RelayLimit(120, 60.0)
    assert error.retry_after is None


def test_only_a_rate_limit_carries_a_stated_limit() -> None:
    # A no-credit 429 that happens to mention a rate is a quota, not a throttle.
    error = error_from_response(*new_api_429("insufficient_quota: 60 requests per minute"))
    assert error.error_class is ErrorClass.QUOTA_EXHAUSTED
    assert error.stated_limit is None
    garbled = error_from_response(*new_api_429("您已达到请求数限制：分钟内最多请求次", {"Retry-After": "7"}))  # noqa: RUF001
    assert garbled.error_class is ErrorClass.RATE_LIMITED
    assert (garbled.stated_limit, garbled.retry_after) == (None, 7.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("30", 30.0),
        ("0.5", 0.5),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s later", None),
        ("-1", None),
    ],
)
def test_reset_durations_as_go_writes_them(text: str, seconds: float | None) -> None:
    assert (
        parse_duration(text) == pytest.approx(seconds)
        if seconds is not None
        else parse_duration(text) is None
    )


def test_the_headers_are_read_when_present_and_only_then() -> None:
    found = rate_headers(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "6m0s",
        }
    )
    assert found == RateHeaders(60, 0, 360.0)
    assert rate_headers({"x-ratelimit-remaining-requests": "3"}) == RateHeaders(None, 3, None)
    assert rate_headers({"x-ratelimit-remaining-requests": "many"}) is None
    assert rate_headers({"Content-Type": "application/json"}) is None
    # A 429 carries its headers to the limiter, which reads "none left" as a throttle.
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"}
    error = error_from_response(*new_api_429("too many requests", headers))
    assert error.rate_headers == RateHeaders(None, 0, 20.0)


@pytest.mark.parametrize(
    ("shards", "part"),
    [
        (1, RelayLimit(60, 60.0)),
        (4, RelayLimit(15, 60.0)),
        (7, RelayLimit(8, 60.0)),
        (120, RelayLimit(1, 120.0)),
    ],
)
def test_shards_take_their_part_of_the_limit(shards: int, part: RelayLimit) -> None:
    assert RelayLimit(60, 60.0).share(shards) == part


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        (RelayLimit(120, 60.0), "120 requests a minute"),
        (RelayLimit(30, 120.0), "30 requests every 2 minutes"),
        (RelayLimit(1, 60.0), "1 request a minute"),
        (RelayLimit(6, 3.0), "6 requests every 3 s"),
    ],
)
def test_the_limit_in_words(limit: RelayLimit, words: str) -> None:
    assert limit.describe() == words


# --- the window, mirrored ---------------------------------------------------------------------


async def run_items(
    limiter: RateLimiter, racing: RacingTime, items: int, workers: int, latency: float
) -> tuple[list[float], list[float]]:
    """Workers taking turns for ``items`` requests that each take ``latency``; returns when each
    was admitted and when each was answered."""
    admitted: list[float] = []
    answered: list[float] = []
    queue = iter(range(items))

    async def worker() -> None:
        for _ in queue:
            assert await limiter.acquire()
            admitted.append(racing.now)
            await racing.sleep(latency)
            answered.append(racing.now)
            limiter.answered(None)

    await racing.run([asyncio.create_task(worker()) for _ in range(workers)])
    return admitted, answered


@pytest.mark.parametrize("workers", [8, 5, 3])
async def test_the_window_is_mirrored_exactly(workers: int) -> None:
    """5 per 10 s, answers after 1 s: a slot frees 10 s after its answer (when new-api forgets
    the success it recorded then), and the next request goes out at that moment, not later."""
    racing = RacingTime()
    limiter = RateLimiter(None, clock=racing.clock, sleep=racing.sleep, relay=RelayLimit(5, 10.0))
    admitted, answered = await run_items(limiter, racing, items=17, workers=workers, latency=1.0)
    if workers >= 5:
        assert admitted == [0.0] * 5 + [11.0] * 5 + [22.0] * 5 + [33.0] * 2
    else:  # fewer workers than slots: each goes again as soon as it is answered
        assert (
            admitted == [0.0] * 3 + [1.0] * 2 + [11.0] * 3 + [12.0] * 2 + [22.0] * 3 + [23.0] * 2 + [33.0] * 2
        )
    # The relay's view: successes recorded at their answers; at each arrival fewer than 5 in its window.
    for t in admitted:
        assert (
            sum(1 for a in answered if t - 10.0 < a <= t)
            + sum(1 for s, a in zip(admitted, answered, strict=False) if s < t < a)
            < 5
            or t == 0.0
        )


async def test_never_more_than_the_limit_in_any_window_and_no_idle_gap() -> None:
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, relay=RelayLimit(4, 60.0))
    times: list[float] = []
    for _ in range(13):
        assert await limiter.acquire()
        times.append(fake.now)
        limiter.answered(None)  # answered at once
    assert most_in_any_window(times) <= 4
    assert times == [0.0] * 4 + [60.0] * 4 + [120.0] * 4 + [180.0]  # no fixed spacing wastes the window


async def test_a_429_in_words_is_learned_mid_run_and_then_mirrored() -> None:
    learned: list[RelayLimit] = []
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, on_learned=learned.append)
    for _ in range(3):
        await limiter.acquire()
    assert fake.now == 0.0  # nothing known: no waiting
    fake.now = 2.0
    for _ in range(3):
        limiter.answered(None)
    assert limiter.refused(RelayLimit(3, 60.0), None) is True  # a throttle: the request goes again
    assert learned == [RelayLimit(3, 60.0)]
    assert limiter.refused(RelayLimit(3, 60.0), None) is True
    assert learned == [RelayLimit(3, 60.0)]  # said once
    await limiter.acquire()
    assert fake.now == pytest.approx(62.0)  # when the oldest of our own answers leaves the window


def test_a_limit_known_from_an_earlier_run_is_not_learned_again() -> None:
    learned: list[RelayLimit] = []
    fake = FakeTime()
    known = RelayLimit(3, 60.0)
    limiter = RateLimiter(None, relay=known, clock=fake.clock, sleep=fake.sleep, on_learned=learned.append)
    assert limiter.relay == known  # what the run's report says it knew
    assert limiter.refused(known, None) is True
    assert learned == []  # nothing new to keep for the next run


async def test_a_full_window_the_client_cannot_account_for_is_someone_elses() -> None:
    """Another process on the key filled the relay's window: the unknown slots count as just taken."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await limiter.acquire()
    fake.now = 1.0
    limiter.answered(None)
    limiter.refused(RelayLimit(10, 60.0), None)
    await limiter.acquire()
    assert fake.now == pytest.approx(61.0)


def test_a_429_that_says_nothing_is_not_a_throttle() -> None:
    limiter = RateLimiter(None)
    assert limiter.refused(None, None) is False
    assert limiter.refused(None, RateHeaders(60, 5, 1.0)) is False
    assert limiter.mirrored is None


def test_a_429_whose_headers_say_none_is_left_is_a_throttle() -> None:
    limiter = RateLimiter(None)
    assert limiter.refused(None, RateHeaders(60, 0, 1.0)) is True  # sent again in its turn
    assert limiter.refused(None, RateHeaders(None, 1, None)) is False


async def test_shards_mirror_their_part() -> None:
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, relay=RelayLimit(6, 60.0), shards=3)
    times = []
    for _ in range(5):
        await limiter.acquire()
        times.append(fake.now)
        limiter.answered(None)
    assert times == [0.0, 0.0, 60.0, 60.0, 120.0]


# --- the headers ------------------------------------------------------------------------------


async def test_zero_remaining_stops_until_the_reset_then_the_limit_is_back() -> None:
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await limiter.acquire()
    await limiter.acquire()  # sent before the first answer came
    fake.now = 1.0
    # The first answer: 2 left as the relay answered, but the second is still in flight: 1 left.
    limiter.answered(RateHeaders(limit=3, remaining=2, reset_s=9.0))
    await limiter.acquire()
    assert fake.now == 1.0
    await limiter.acquire()
    assert fake.now == pytest.approx(10.0)  # none left: nothing goes before the reset
    for _ in range(2):
        await limiter.acquire()
    assert fake.now == pytest.approx(10.0)  # after it, the whole limit (3)
    # The limit is spent: the next waits for an answer to say what is left.
    waiting = asyncio.create_task(limiter.acquire())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    fake.now = 11.0
    limiter.answered(RateHeaders(limit=3, remaining=5, reset_s=5.0))  # 4 others still in flight
    await asyncio.wait_for(waiting, timeout=5)
    assert fake.now == pytest.approx(11.0)
    await limiter.acquire()
    assert fake.now == pytest.approx(16.0)  # 5 - 4 in flight - 1 sent since: none left until the reset


async def test_requests_in_flight_are_taken_off_what_is_left() -> None:
    """new-api counts a success when it finishes: those in flight are not in ``remaining`` yet."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        await limiter.acquire()
    limiter.answered(RateHeaders(remaining=2, reset_s=5.0))  # two still in flight
    await limiter.acquire()
    assert fake.now == pytest.approx(5.0)


async def test_zero_remaining_and_no_reset_asks_again_after_a_pause() -> None:
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await limiter.acquire()
    limiter.answered(RateHeaders(remaining=0))
    await limiter.acquire()
    assert fake.now == pytest.approx(1.0)


async def test_a_later_answer_with_room_wakes_a_turn_waiting_for_the_reset() -> None:
    """Answers come back one by one: the first said none left (while the others were in flight),
    a later one says there is room. The turn goes then, not at the first answer's reset."""
    racing = RacingTime()
    limiter = RateLimiter(None, clock=racing.clock, sleep=racing.sleep)
    admitted: list[float] = []

    async def relay() -> None:
        for _ in range(3):
            await limiter.acquire()
        await racing.sleep(0.5)
        limiter.answered(RateHeaders(limit=10, remaining=2, reset_s=60.0))  # 2 in flight: none left
        await racing.sleep(0.5)
        limiter.answered(RateHeaders(limit=10, remaining=7, reset_s=60.0))  # 1 in flight: 6 left

    async def turn() -> None:
        await racing.sleep(0.7)  # after the first answer: it waits
        await limiter.acquire()
        admitted.append(racing.now)

    await racing.run([asyncio.create_task(relay()), asyncio.create_task(turn())])
    assert admitted == [pytest.approx(1.0)]


async def test_after_a_reset_each_shard_takes_its_part_of_the_headers_limit() -> None:
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep, shards=4)
    await limiter.acquire()
    limiter.answered(RateHeaders(limit=8, remaining=0, reset_s=10.0))
    times = []
    for _ in range(2):
        await limiter.acquire()
        times.append(fake.now)
    assert times == [10.0, 10.0]  # 8 / 4 shards: two, then an answer must say more
    waiting = asyncio.create_task(limiter.acquire())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    limiter.answered(RateHeaders(limit=8, remaining=5, reset_s=10.0))
    await asyncio.wait_for(waiting, timeout=5)
