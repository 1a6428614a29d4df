"""Per-item results and the events a run emits: plain records, no live exceptions."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from batchgen.errors import ErrorClass, RelayLimit


class ItemStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"  # images written this run
    FAILED = "failed"  # gave up: a final error, or attempts used up
    SKIPPED = "skipped"  # already done by an earlier run with the same request
    PENDING = "pending"  # never finished: the job stopped first


class JobStatus(enum.StrEnum):
    COMPLETED = "completed"  # every item succeeded or was skipped
    PARTIAL = "partial"  # the job ran, but some items failed or never finished
    ABORTED = "aborted"  # the job stopped itself (bad key, ...)


class Flag(enum.StrEnum):
    """What an item that succeeded may still be flagged for: kept, counted in the report, shown in
    the gallery, and remade only when asked (``batchgen redo DIR --flag NAME``). A new check adds
    a member here and puts it in the item's flags; the report, gallery and redo need no change."""

    SIZE_MISMATCH = "size_mismatch"  # an image smaller than its class, or of another shape, than asked


FLAGS = {flag.value: flag for flag in Flag}  # looked up when a record is read, not called


@dataclass(frozen=True, slots=True)
class Failure:
    error_class: ErrorClass
    message: str
    http_status: int | None
    retryable: bool
    links: tuple[str, ...] = ()  # download_failed: the image links the service answered with
    blocked_by: tuple[str, ...] = ()  # dependency_failed: the referenced items that did not succeed


@dataclass(frozen=True, slots=True)
class Derived:
    """What the derivation stage left of an item's images (docs/variants.md)."""

    files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (variant name, its files), thumb included
    sizes: tuple[tuple[int, ...], ...] = ()  # of each of those files, in bytes
    upscaled: tuple[str, ...] = ()  # variants that enlarged an original more than 1.25x
    errors: tuple[tuple[str, str], ...] = ()  # (variant name, why it was not made)

    @property
    def channels(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The channel variants, without the gallery's thumbnail."""
        return tuple((name, files) for name, files in self.files if name != "thumb")


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    index: int
    id: str
    prompt: str
    status: ItemStatus
    attempts: int = 0
    files: tuple[str, ...] = ()
    failure: Failure | None = None
    sizes: tuple[int, ...] = ()  # of each file, as journaled
    requests_sent: int = 0  # attempts that may have reached the service
    unconfirmed: int = 0  # of those, ones cut off after sending: perhaps billed, no image
    estimated_cost: float = 0.0  # of the images this item produced (billed, even if they were lost)
    unconfirmed_cost: float = 0.0  # of its unconfirmed attempts: perhaps billed
    version: int = 1  # of its image: 2 and up once redone (earlier ones are in history/)
    pixels: tuple[int, int] | None = None  # width and height of its (first) image, when known
    flags: tuple[Flag, ...] = ()
    derived: Derived | None = None  # its variants, once the derivation stage made them
    digests: tuple[str, ...] = ()  # sha256 of each file written this run (what its dependents name)


@dataclass(frozen=True, slots=True)
class JobStarted:
    job: str
    total: int


@dataclass(frozen=True, slots=True)
class ItemRetrying:
    id: str
    attempt: int  # the attempt that failed
    error_class: ErrorClass
    message: str
    wait_s: float


@dataclass(frozen=True, slots=True)
class ItemFinished:
    outcome: ItemOutcome


@dataclass(frozen=True, slots=True)
class JobStopping:
    reason: str


class LimitSource(enum.StrEnum):
    """Where a run knew the relay's rate limit from."""

    STATED = "stated"  # a 429 said it in words, this run
    REMEMBERED = "remembered"  # an earlier run of the job learned it
    HEADERS = "headers"  # the answers' x-ratelimit-limit-requests header


@dataclass(frozen=True, slots=True)
class RelaySeen:
    """The relay's own rate limit as a run knew it: ``requests`` per ``window_s`` (None: the
    headers' period, which they do not say), for the whole key, all shards together."""

    requests: int
    window_s: float | None
    source: LimitSource

    def describe(self) -> str:
        if self.window_s is None:
            return f"{self.requests} requests (x-ratelimit-limit-requests)"
        return RelayLimit(self.requests, self.window_s).describe()


@dataclass(frozen=True, slots=True)
class RateLimitLearned:
    """A 429 stated the relay's limit; the run now runs at ``running_at`` (its shard's part)."""

    limit: RelayLimit
    running_at: RelayLimit

    def message(self) -> str:
        if self.running_at == self.limit:
            return f"the relay allows {self.limit.describe()}: running at that"
        return f"the relay allows {self.limit.describe()}: this shard runs at {self.running_at.describe()}"


Event = JobStarted | ItemRetrying | ItemFinished | JobStopping | RateLimitLearned
