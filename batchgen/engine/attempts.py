"""One item's request, attempted until it is answered, refused, given up on, or the job stops.

The answer is a value: the ``Generation``, the last ``RequestError`` (given up, or the job
stopped after a failed attempt), or ``None`` (the job stopped before anything was sent).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState

from batchgen.engine.guards import Guards
from batchgen.engine.ratelimit import RateLimiter
from batchgen.engine.retry import RetryPolicy, is_unconfirmed
from batchgen.engine.room import Place
from batchgen.engine.stopping import Stopping
from batchgen.errors import ErrorClass, RequestError
from batchgen.outcomes import Event, ItemRetrying
from batchgen.service.client import Generation, ImageClient

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Counts:
    """What one item's attempts came to."""

    attempts: int = 0
    sent: int = 0  # attempts that may have reached the service
    unconfirmed: int = 0  # of those, ones cut off after sending: perhaps billed, no image


@dataclass
class Sender:
    client: ImageClient
    policy: RetryPolicy
    guards: Guards
    limiter: RateLimiter
    stopping: Stopping
    folder: str  # the job's, as messages name it: what to run once the credit is topped up
    sleep: Sleep
    on_event: Callable[[Event], None] = field(default=lambda event: None)

    async def send(
        self, item_id: str, body: dict[str, Any], key: str, counts: Counts, place: Place
    ) -> Generation | RequestError | None:
        """``place``: where the answer's images will be held; taken as its body is read, and
        given back here if the attempt fails (the caller gives it back once they are written)."""
        retrying = self.policy.retrying(
            sleep=self.sleep,
            stopped=self.stopping.is_set,
            before_sleep=lambda state: self._retrying(item_id, state),
            unconfirmed=lambda: counts.unconfirmed,
        )
        last: RequestError | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    while True:  # until an answer that is not the relay's throttle
                        # tenacity asks `stop` before the backoff sleep, not after it: a job
                        # that stopped during the sleep must not send this retry.
                        go, is_probe = await self.guards.admit(self.stopping.event)
                        admitted = go and await self.limiter.acquire(self.stopping.is_set)
                        if not admitted or self.stopping.is_set():
                            return last
                        try:
                            generation = await self._attempt(item_id, body, key, counts, place, is_probe)
                        except RequestError as exc:
                            last = exc
                            raise
                        if generation is not None:
                            return generation
        except RequestError as exc:  # given up on: tenacity hands back the last failure
            return exc
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _attempt(
        self,
        item_id: str,
        body: dict[str, Any],
        key: str,
        counts: Counts,
        place: Place,
        is_probe: bool,
    ) -> Generation | None:
        """One request; None when the relay's own limit turned it away (it waits for its turn
        again, and it is not an attempt of the item: the throttle says nothing about the item)."""
        counts.attempts += 1
        log.debug("%s: sending attempt %d%s", item_id, counts.attempts, " (probe)" * is_probe)
        try:
            generation = await self.client.generate(body, key, place.take)
        except RequestError as exc:
            place.give_back()
            self.limiter.answered(exc.rate_headers)
            if exc.error_class is ErrorClass.RATE_LIMITED and self.limiter.refused(
                exc.stated_limit, exc.rate_headers
            ):
                counts.attempts -= 1
                if is_probe:  # a probe that met the throttle met a relay that is up
                    self.guards.attempt_done(ok=False, retryable_failure=False, is_probe=True)
                log.debug("%s: the relay's rate limit; waiting for room in its window", item_id)
                return None
            self._count_failure(item_id, exc, counts, is_probe)
            raise
        except BaseException:
            self.limiter.answered(None)  # cancelled: its slot ages from now
            raise
        self.limiter.answered(generation.rate)
        counts.sent += 1
        self.guards.attempt_done(ok=True, retryable_failure=False, is_probe=is_probe)
        self.limiter.succeeded()
        return generation

    def _retrying(self, item_id: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RequestError):
            wait = state.upcoming_sleep
            log.info(
                "%s: attempt %d failed (%s: %s); %s",
                *(item_id, state.attempt_number, error.error_class.value, error.message, when(wait)),
            )
            self.on_event(ItemRetrying(item_id, state.attempt_number, error.error_class, error.message, wait))

    def _count_failure(self, item_id: str, exc: RequestError, counts: Counts, is_probe: bool) -> None:
        counts.sent += exc.sent
        counts.unconfirmed += is_unconfirmed(exc)
        if exc.error_class.stops_job:
            self.stopping.abort(_stop_reason(item_id, exc, self.folder))
        if exc.error_class is ErrorClass.RATE_LIMITED:
            self.limiter.rate_limited(self.policy.wait_after(exc))
        verdict = self.guards.attempt_done(ok=False, retryable_failure=exc.retryable, is_probe=is_probe)
        if verdict:
            self.stopping.abort(verdict)


def _stop_reason(item_id: str, exc: RequestError, folder: str) -> str:
    if exc.error_class is ErrorClass.QUOTA_EXHAUSTED:
        return (
            f"the API credit ran out ({item_id}: {exc.message}); top up the account or key,"
            f" then run `batchgen retry {folder}`"
        )
    return f"{item_id}: {exc.message} (check the API key)"


def when(wait_s: float) -> str:
    """ "retrying in 2.5s", and "retrying now" rather than "in 0.0s"."""
    return "retrying now" if wait_s < 0.05 else f"retrying in {wait_s:.1f}s"
