"""Retry decisions: tenacity driven by our policy, with a sleep that records instead of sleeping."""

from __future__ import annotations

import pytest

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
    calls, waits, outcome = await attempts_until_done(RetryPolicy(), [err(error_class)] * 4)
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
    calls, waits, outcome = await attempts_until_done(RetryPolicy(max_attempts=4), [err(error_class)] * 4)
    assert calls == 4
    assert len(waits) == 3
    assert isinstance(outcome, RequestError)


async def test_success_after_failures_stops_retrying() -> None:
    calls, waits, outcome = await attempts_until_done(
        RetryPolicy(), [err(ErrorClass.SERVER_ERROR), None, None]
    )
    assert (calls, len(waits), outcome) == (2, 1, None)


async def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(max_attempts=8, base_s=2.0, cap_s=10.0)
    for _ in range(30):
        _, waits, _ = await attempts_until_done(policy, [err(ErrorClass.SERVER_ERROR)] * 8)
        ceilings = [min(10.0, 2.0 * 2**k) for k in range(7)]
        assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits


async def test_jitter_spreads_the_waits() -> None:
    policy = RetryPolicy(max_attempts=2, base_s=2.0)
    firsts = set()
    for _ in range(20):
        _, waits, _ = await attempts_until_done(policy, [err(ErrorClass.SERVER_ERROR)] * 2)
        firsts.add(round(waits[0], 6))
    assert len(firsts) > 10  # not a fixed delay: workers that failed together do not retry together


async def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_after_s=30)
    errors = [
        err(ErrorClass.RATE_LIMITED, retry_after=7.0),
        err(ErrorClass.RATE_LIMITED, retry_after=3600.0),
        None,
    ]
    _, waits, _ = await attempts_until_done(policy, errors)
    assert waits == [7.0, 30.0]


async def test_x_should_retry_false_stops_a_retryable_class() -> None:
    calls, _, _ = await attempts_until_done(
        RetryPolicy(), [err(ErrorClass.SERVER_ERROR, should_retry=False)] * 4
    )
    assert calls == 1


async def test_x_should_retry_true_retries_a_final_class() -> None:
    calls, _, _ = await attempts_until_done(
        RetryPolicy(), [err(ErrorClass.INVALID_REQUEST, should_retry=True), None]
    )
    assert calls == 2


async def test_a_stopped_job_makes_no_retry() -> None:
    calls, waits, outcome = await attempts_until_done(
        RetryPolicy(), [err(ErrorClass.SERVER_ERROR)] * 4, stopped=True
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


async def test_limits_give_the_backoff_its_base_and_its_cap() -> None:
    # retry_base_s is the first ceiling and the one that doubles; retry_cap_s is where doubling stops.
    from batchgen.config import Limits

    policy = RetryPolicy.from_limits(Limits(max_attempts=8, retry_base_s=0.5, retry_cap_s=3.0))
    ceilings = [min(3.0, 0.5 * 2**k) for k in range(7)]  # 0.5, 1, 2, 3, 3, 3, 3
    longest = 0.0
    for _ in range(10):
        calls, waits, _ = await attempts_until_done(policy, [err(ErrorClass.SERVER_ERROR)] * 8)
        assert calls == 8
        assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
        longest = max(longest, *waits)
    # Ten runs of six waits allowed past 0.5 s: all staying under it has odds of ~1e-40.
    assert longest > 0.5
