"""Where retries are decided: a policy value, handed to tenacity (SPEC §2). One layer only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from .config import Limits
from .errors import ErrorClass, RequestError


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, how long between them, and which failures earn another."""

    max_attempts: int = 4
    base_s: float = 2.0  # exponential backoff with full jitter: U(0, min(cap, base * 2**k))
    cap_s: float = 60.0
    max_retry_after_s: float = 120.0  # a server's Retry-After is honoured up to this
    retry_after_send: bool = True  # false: an attempt that may have been billed is not repeated

    @classmethod
    def from_limits(cls, limits: Limits) -> RetryPolicy:
        return cls(
            limits.max_attempts,
            limits.retry_base_s,
            limits.retry_cap_s,
            limits.max_retry_after_s,
            limits.retry_after_send,
        )

    def should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, RequestError) or not exc.retryable:
            return False
        return self.retry_after_send or not is_unconfirmed(exc)

    def wait_after(self, error: BaseException | None) -> float | None:
        """The server's own wait, if it named one (capped); None means back off with jitter."""
        if isinstance(error, RequestError) and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after_s)
        return None

    def retrying(
        self,
        *,
        sleep: Callable[[float], Awaitable[None]],
        stopped: Callable[[], bool],
        before_sleep: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
    ) -> AsyncRetrying:
        """A tenacity controller for one item: ``async for attempt in ...: with attempt: ...``.

        ``stopped`` is asked before every retry, so a job that is stopping
        (auth failure, signal) sends nothing more.
        """
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | _StopWhen(stopped),
            wait=_Wait(self),
            retry=retry_if_exception(self.should_retry),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


class _StopWhen(stop_base):
    def __init__(self, stopped: Callable[[], bool]) -> None:
        self._stopped = stopped

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._stopped()


class _Wait(wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._jitter = wait_random_exponential(multiplier=policy.base_s, max=policy.cap_s)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        server_wait = self._policy.wait_after(error)
        return server_wait if server_wait is not None else float(self._jitter(retry_state))


def is_unconfirmed(exc: RequestError) -> bool:
    """Cut off after the request left: the service may have billed it without an answer arriving."""
    return exc.sent and exc.error_class in (ErrorClass.TIMEOUT, ErrorClass.CONNECTION)
