"""Retry decisions: tenacity driven by our policy, with a sleep that records instead of sleeping."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from batchgen.config import Limits
from batchgen.engine.retry import RetryPolicy
from batchgen.errors import ErrorClass, RequestError


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def attempts_until_done(
    policy: RetryPolicy, errors: list[RequestError | None], stopped: bool = False
) -> tuple[int, list[float], BaseException | None]:
    """Run a call that fails with ``errors`` in turn (None = success); count attempts."""
    sleep = RecordingSleep()
    calls = 0
    outcome: BaseException | None = None
    try:
        async for attempt in policy.retrying(sleep=sleep, stopped=lambda: stopped):
            with attempt:
                error = errors[calls]
                calls += 1
                if error is not None:
                    raise error
    except RequestError as exc:
        outcome = exc
    return calls, sleep.waits, outcome


def err(error_class: ErrorClass, **kw: object) -> RequestError:
    return RequestError(error_class, error_class.value, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error_class",
    [
        ErrorClass.SAFETY_FILTER,
        ErrorClass.NO_IMAGE,
        ErrorClass.INVALID_REQUEST,
        ErrorClass.AUTH,
        ErrorClass.QUOTA_EXHAUSTED,
        ErrorClass.REFERENCE_ERROR,
        ErrorClass.DOWNLOAD_FAILED,  # the image exists: fetched again by its own budget, never made again
    ],
)
async def test_final_classes_are_tried_once(error_class: ErrorClass) -> None:
    calls, waits, outcome = await attempts_until_done(RetryPolicy.from_limits(), [err(error_class)] * 4)
    assert (calls, waits) == (1, [])
    assert isinstance(outcome, RequestError)
    assert outcome.error_class is error_class


@pytest.mark.parametrize(
    "error_class",
    [
        ErrorClass.RATE_LIMITED,
        ErrorClass.SERVER_ERROR,
        ErrorClass.TIMEOUT,
        ErrorClass.CONNECTION,
        ErrorClass.INVALID_RESPONSE,
    ],
)
async def test_retryable_classes_use_every_attempt_then_raise_the_last(error_class: ErrorClass) -> None:
    calls, waits, outcome = await attempts_until_done(
        RetryPolicy.from_limits(Limits(max_attempts=4)), [err(error_class)] * 4
    )
    assert calls == 4
    assert len(waits) == 3
    assert isinstance(outcome, RequestError)


async def test_success_after_failures_stops_retrying() -> None:
    calls, waits, outcome = await attempts_until_done(
        RetryPolicy.from_limits(), [err(ErrorClass.SERVER_ERROR), None, None]
    )
    assert (calls, len(waits), outcome) == (2, 1, None)


async def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy.from_limits(Limits(max_attempts=8, retry_base_s=2.0, retry_cap_s=10.0))
    for _ in range(30):
        _, waits, _ = await attempts_until_done(policy, [err(ErrorClass.SERVER_ERROR)] * 8)
        ceilings = [min(10.0, 2.0 * 2**k) for k in range(7)]
        assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits


async def test_jitter_spreads_the_waits() -> None:
    policy = RetryPolicy.from_limits(Limits(max_attempts=2, retry_base_s=2.0))
    firsts = set()
    for _ in range(20):
        _, waits, _ = await attempts_until_done(policy, [err(ErrorClass.SERVER_ERROR)] * 2)
        firsts.add(round(waits[0], 6))
    assert len(firsts) > 10  # not a fixed delay: workers that failed together do not retry together


async def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy.from_limits(Limits(max_attempts=3, max_retry_after_s=30))
    errors = [
        err(ErrorClass.RATE_LIMITED, retry_after=7.0),
        err(ErrorClass.RATE_LIMITED, retry_after=3600.0),
        None,
    ]
    _, waits, _ = await attempts_until_done(policy, errors)
    assert waits == [7.0, 30.0]


async def test_x_should_retry_false_stops_a_retryable_class() -> None:
    calls, _, _ = await attempts_until_done(
        RetryPolicy.from_limits(), [err(ErrorClass.SERVER_ERROR, should_retry=False)] * 4
    )
    assert calls == 1


async def test_x_should_retry_true_retries_a_final_class() -> None:
    calls, _, _ = await attempts_until_done(
        RetryPolicy.from_limits(), [err(ErrorClass.INVALID_REQUEST, should_retry=True), None]
    )
    assert calls == 2


async def test_a_stopped_job_makes_no_retry() -> None:
    calls, waits, outcome = await attempts_until_done(
        RetryPolicy.from_limits(), [err(ErrorClass.SERVER_ERROR)] * 4, stopped=True
    )
    assert (calls, waits) == (1, [])
    assert isinstance(outcome, RequestError)


@pytest.mark.parametrize(
    ("error", "unconfirmed"),
    [
        (RequestError(ErrorClass.TIMEOUT, "read timeout"), True),
        (RequestError(ErrorClass.TIMEOUT, "connect timeout", sent=False), False),
        (RequestError(ErrorClass.CONNECTION, "reset"), True),
        (RequestError(ErrorClass.CONNECTION, "refused", sent=False), False),
        (RequestError(ErrorClass.SERVER_ERROR, "gateway timeout", http_status=504), True),
        (RequestError(ErrorClass.SERVER_ERROR, "a timeout occurred", http_status=524), True),
        (RequestError(ErrorClass.SERVER_ERROR, "bad", http_status=500, upstream_status=524), True),
        (RequestError(ErrorClass.SERVER_ERROR, "bad gateway", http_status=502), False),
        (RequestError(ErrorClass.SERVER_ERROR, "unavailable", http_status=503), False),
    ],
)
def test_what_may_have_been_billed(error: RequestError, unconfirmed: bool) -> None:
    from batchgen.engine.retry import is_unconfirmed

    assert is_unconfirmed(error) is unconfirmed


def test_a_gateway_naming_the_upstream_524_is_unconfirmed() -> None:
    from batchgen.engine.retry import is_unconfirmed
    from batchgen.service.responses import error_from_response

    body = b'{"error": {"message": "bad response status code 524", "type": "upstream_error",'
    body += b' "param": "524", "code": "bad_response_status_code"}}'
    error = error_from_response(500, {}, body)
    assert error.upstream_status == 524
    assert is_unconfirmed(error)


@pytest.fixture
def widest_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter draws each wait from U(0, ceiling); this draw is always the ceiling, so the
    waits show the ceilings themselves."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)


@pytest.mark.usefixtures("widest_jitter")
async def test_limits_give_the_backoff_its_base_and_its_cap() -> None:
    # retry_base_s is the first ceiling and the one that doubles; retry_cap_s is where doubling stops.
    policy = RetryPolicy.from_limits(Limits(max_attempts=8, retry_base_s=0.5, retry_cap_s=3.0))
    calls, waits, _ = await attempts_until_done(policy, [err(ErrorClass.SERVER_ERROR)] * 8)
    assert calls == 8
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]


async def test_limits_set_how_long_a_retry_after_is_honoured() -> None:
    policy = RetryPolicy.from_limits(Limits(max_retry_after_s=9.0))
    errors = [
        err(ErrorClass.RATE_LIMITED, retry_after=100.0),
        err(ErrorClass.RATE_LIMITED, retry_after=4.0),
        None,
    ]
    assert (await attempts_until_done(policy, errors))[1] == [9.0, 4.0]


def test_limits_set_how_often_a_perhaps_billed_attempt_is_repeated() -> None:
    timed_out = err(ErrorClass.TIMEOUT, sent=True)
    three = RetryPolicy.from_limits(Limits(max_unconfirmed_per_item=3))
    assert [three.should_retry(timed_out, unconfirmed=k) for k in (1, 2, 3)] == [True, True, False]
    never = RetryPolicy.from_limits(Limits(retry_after_send=False, max_unconfirmed_per_item=3))
    assert never.should_retry(timed_out, unconfirmed=1) is False
    assert never.should_retry(err(ErrorClass.TIMEOUT, sent=False), unconfirmed=0) is True  # never left


async def downloads_until_done(policy: RetryPolicy, attempts: int) -> tuple[int, list[float]]:
    """Fetch a link that fails ``attempts`` times with a retryable error; count the tries."""
    sleep = RecordingSleep()
    calls = 0
    try:
        async for attempt in policy.downloading(sleep=sleep):
            with attempt:
                calls += 1
                if calls <= attempts:
                    raise err(ErrorClass.DOWNLOAD_FAILED, should_retry=True)
    except RequestError:
        return calls, sleep.waits
    raise AssertionError("the link was never fetched, yet no error was raised")


@pytest.mark.usefixtures("widest_jitter")
async def test_a_link_is_fetched_again_with_its_own_backoff_and_budget() -> None:
    policy = replace(
        RetryPolicy.from_limits(), download_attempts=4, download_base_s=0.01, download_cap_s=0.03
    )
    assert await downloads_until_done(policy, attempts=10) == (4, [0.01, 0.02, 0.03])


@pytest.mark.usefixtures("widest_jitter")
@pytest.mark.parametrize(
    ("base", "cap", "waits"),
    [
        (0.25, 0.3, [0.25, 0.3]),  # the job's own backoff, when it is shorter
        (1.5, 60.0, [1.0, 2.0]),  # but a link's first wait is never over 1 s
    ],
)
async def test_limits_give_link_fetches_a_backoff_no_longer_than_the_jobs(
    base: float, cap: float, waits: list[float]
) -> None:
    policy = RetryPolicy.from_limits(Limits(retry_base_s=base, retry_cap_s=cap))
    assert await downloads_until_done(policy, attempts=10) == (3, waits)
