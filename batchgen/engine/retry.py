"""Where retries are decided: a policy value, handed to tenacity. One layer only.

docs/failures.md describes the policy for users.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from batchgen.config import Limits
from batchgen.errors import ErrorClass, RequestError


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How many attempts, how long between them, and which failures earn another.

    Made from the job's ``Limits`` (``from_limits``): the defaults are theirs, written in config.
    """

    max_attempts: int
    base_s: float  # exponential backoff, full jitter: U(0, min(cap, base * 2**k))
    cap_s: float
    max_retry_after_s: float  # a server's Retry-After is honoured up to this
    retry_after_send: bool  # false: one that may have been billed is not repeated
    max_unconfirmed: int  # perhaps billed this often without an image: stop
    download_attempts: int = 3  # fetching an image link: its own budget, never a new generation
    download_base_s: float = 1.0
    download_cap_s: float = 10.0

    @classmethod
    def from_limits(cls, limits: Limits | None = None) -> RetryPolicy:
        """The policy of ``limits`` (None: the default limits)."""
        limits = limits or Limits()
        return cls(
            max_attempts=limits.max_attempts,
            base_s=limits.retry_base_s,
            cap_s=limits.retry_cap_s,
            max_retry_after_s=limits.max_retry_after_s,
            retry_after_send=limits.retry_after_send,
            max_unconfirmed=limits.max_unconfirmed_per_item,
            download_base_s=min(1.0, limits.retry_base_s),
            download_cap_s=min(10.0, limits.retry_cap_s),
        )

    def should_retry(self, exc: BaseException, unconfirmed: int) -> bool:
        """Another attempt after ``exc``, for an item with ``unconfirmed`` perhaps-billed attempts
        so far (``exc`` included)?"""
        if not isinstance(exc, RequestError) or not exc.retryable:
            return False
        if is_unconfirmed(exc):
            return self.retry_after_send and unconfirmed < self.max_unconfirmed
        return True

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
        unconfirmed: Callable[[], int] = lambda: 0,
    ) -> AsyncRetrying:
        """A tenacity controller for one item: ``async for attempt in ...: with attempt: ...``.

        ``stopped`` is asked before every retry, so a job that is stopping
        (auth failure, signal) sends nothing more; ``unconfirmed`` counts the
        item's perhaps-billed attempts so far.
        """
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | _StopWhen(stopped),
            wait=_Wait(self),
            retry=retry_if_exception(lambda exc: self.should_retry(exc, unconfirmed())),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def downloading(self, *, sleep: Callable[[float], Awaitable[None]]) -> AsyncRetrying:
        """A tenacity controller for fetching one image link. Not stopped by a stopping job:
        the image is paid for, and fetching it costs nothing more."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.download_attempts),
            wait=wait_random_exponential(multiplier=self.download_base_s, max=self.download_cap_s),
            retry=retry_if_exception(lambda exc: isinstance(exc, RequestError) and exc.retryable),
            sleep=sleep,
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


# A proxy in front of the relay gave up waiting (a gateway's 504, a CDN's 524 after 100 s) while
# the upstream went on, finished and charged: 4K images take longer than such proxies wait.
GAVE_UP_WAITING = frozenset({504, 524})


def is_unconfirmed(exc: RequestError) -> bool:
    """Cut off after the request left: the service may have billed it without an answer arriving."""
    if not exc.sent:
        return False
    if exc.error_class in (ErrorClass.TIMEOUT, ErrorClass.CONNECTION):
        return True
    return exc.http_status in GAVE_UP_WAITING or exc.upstream_status in GAVE_UP_WAITING
