"""One job's decided work through the scheduler: the job's bookkeeping.

The runner keeps what the run knows: which items finished and how, the events the
progress bar and the log read, and the ``JobRun`` at the end. It builds the run's throttles
and hands them to every item as one ``RunContext``; one item's path is ``item``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from batchgen.engine import item, scheduler
from batchgen.engine.chains import Flow
from batchgen.engine.guards import Guards
from batchgen.engine.item import Counts, RunContext, Sleep
from batchgen.engine.ratelimit import RateLimiter
from batchgen.engine.retry import RetryPolicy
from batchgen.engine.room import ImageRoom
from batchgen.engine.stopping import Stopping
from batchgen.errors import RelayLimit
from batchgen.manifest.references import ReferenceLoader
from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import (
    Event,
    ItemFinished,
    ItemOutcome,
    JobStarted,
    LimitSource,
    RateLimitLearned,
    RelaySeen,
)
from batchgen.output.journal import Journal
from batchgen.output.store import JobStore
from batchgen.plan.resume import Mode
from batchgen.plan.triage import Triage, Work
from batchgen.service.client import ImageClient

__all__ = ["JobRun", "Runner", "Sleep"]

log = logging.getLogger(__name__)

Decided = AsyncIterable[tuple[list[Work], list[ItemOutcome]]]


@dataclass(kw_only=True)
class JobRun:
    """What a finished run knows: one outcome per item, and why it stopped early, if it did."""

    outcomes: list[ItemOutcome]
    aborted: str | None = None  # the job stopped itself (bad key, failing service, a budget)
    interrupted: str | None = None  # a signal stopped it
    started_at: float = 0.0
    finished_at: float = 0.0
    relay: RelaySeen | None = None  # the relay's own rate limit, if the run knew it
    learned: RelayLimit | None = None  # the one a 429 stated this run: the next run starts at it


@dataclass(kw_only=True)
class Runner:
    job: str
    client: ImageClient
    store: JobStore
    policy: RetryPolicy
    references: ReferenceLoader
    concurrency: int
    on_event: Callable[[Event], None] = lambda event: None
    sleep: Sleep | None = None  # tests inject one that does not sleep
    clock: Callable[[], float] = time.monotonic
    journal: Journal | None = None
    mode: Mode = Mode.RUN
    guards: Guards = field(default_factory=Guards.from_limits)
    requests_per_minute: float | None = None
    io: Executor | None = None  # threads for blocking file work (None: the loop's default)
    room: ImageRoom = field(default_factory=ImageRoom)  # answers' images held in memory at once
    relay_limit: RelayLimit | None = None  # the relay's limit, remembered from an earlier run
    shards: int = 1  # processes sharing the key: each mirrors its part of the relay's limit
    folder_name: str | None = None  # how messages name the job folder (None: its path)

    def __post_init__(self) -> None:
        self.stopping = Stopping(lambda event: self.on_event(event))
        sleep = self.sleep or self.stopping.sleep
        self.learned: RelayLimit | None = None
        # Every attempt, retries included, takes a turn: the limit is on requests, not items.
        self.limiter = RateLimiter(
            self.requests_per_minute,
            clock=self.clock,
            sleep=sleep,
            relay=self.relay_limit,
            shards=self.shards,
            on_learned=self._learned,
        )
        self.context = RunContext(
            job=self.job,
            client=self.client,
            store=self.store,
            journal=self.journal,
            io=self.io,
            references=self.references,
            policy=self.policy,
            guards=self.guards,
            limiter=self.limiter,
            stopping=self.stopping,
            room=self.room,
            clock=self.clock,
            sleep=sleep,
            fetch_sleep=self.sleep
            or asyncio.sleep,  # not woken by a stopping job: what was paid for is fetched
            mode=self.mode,
            on_event=lambda event: self.on_event(event),
            folder_name=self.folder_name or str(self.store.root),
        )

    def _learned(self, limit: RelayLimit) -> None:
        self.learned = limit
        event = RateLimitLearned(limit, limit.share(self.shards))
        log.info("%s", event.message())
        self.on_event(event)

    def relay_seen(self) -> RelaySeen | None:
        """What the run knew of the relay's own limit, for the report."""
        relay = self.limiter.relay
        if relay is not None:
            source = LimitSource.STATED if self.learned == relay else LimitSource.REMEMBERED
            return RelaySeen(relay.requests, relay.window_s, source)
        if self.limiter.header_limit is not None:
            return RelaySeen(self.limiter.header_limit, None, LimitSource.HEADERS)
        return None

    def abort(self, reason: str) -> None:
        self.stopping.abort(reason)

    def interrupt(self, signal_name: str) -> None:
        self.stopping.interrupt(signal_name)

    def halt(self) -> None:
        self.stopping.halt()

    async def run(self, items: Sequence[ItemSpec], decided: Decided, triage: Triage | None = None) -> JobRun:
        """Every item of ``items`` ends with an outcome: from ``decided``'s work, from what it
        says of the items left alone, or pending (the job stopped before reaching it).
        ``triage``: what decided it, asked again for a dependent once its parents are made."""
        started = time.time()
        done: dict[int, ItemOutcome] = {}
        self.on_event(JobStarted(self.job, len(items)))

        def finished(outcome: ItemOutcome) -> None:
            done[outcome.index] = outcome
            self.on_event(ItemFinished(outcome))

        chained = triage if triage is not None and triage.parents else None
        flow = Flow(finished=finished, run=self.context, triage=chained)

        async def work(job: Work, release: scheduler.Release) -> None:
            counts = Counts()
            task = asyncio.create_task(item.process(self.context, job, counts, release))
            with self.stopping.in_flight(job.request.id, task):
                try:
                    outcome = await task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if not task.cancelled() or (current is not None and current.cancelling()):
                        raise
                    outcome = item.pending(job.request, counts, cut_off=True)  # halted mid-request
            await flow.settle(outcome)

        stop = self.stopping.event
        await scheduler.run_all(flow.todo(decided), work, concurrency=self.concurrency, stop=stop)
        await flow.close()
        outcomes = [done.get(spec.index) or flow.unreached(spec) for spec in items]
        return JobRun(
            outcomes=outcomes,
            aborted=self.stopping.aborted,
            interrupted=self.stopping.interrupted,
            started_at=started,
            finished_at=time.time(),
            relay=self.relay_seen(),
            learned=self.learned,
        )
