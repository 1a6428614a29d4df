"""Per-item results and the events a run emits: plain records, no live exceptions."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from batchgen.errors import ErrorClass


class ItemStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"  # images written this run
    FAILED = "failed"  # gave up: a final error, or attempts used up
    SKIPPED = "skipped"  # already done by an earlier run with the same request
    PENDING = "pending"  # never finished: the job stopped first


class JobStatus(enum.StrEnum):
    COMPLETED = "completed"  # every item succeeded or was skipped
    PARTIAL = "partial"  # the job ran, but some items failed or never finished
    ABORTED = "aborted"  # the job stopped itself (bad key, ...)


@dataclass(frozen=True, slots=True)
class Failure:
    error_class: ErrorClass
    message: str
    http_status: int | None
    retryable: bool
    links: tuple[str, ...] = ()  # download_failed: the image links the service answered with
    blocked_by: tuple[str, ...] = ()  # dependency_failed: the referenced items that did not succeed


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


Event = JobStarted | ItemRetrying | ItemFinished | JobStopping
