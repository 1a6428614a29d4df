"""batchgen's one exception tree, and the error classes of a failed item.

    BatchgenError
    ├── ManifestError          the manifest is invalid (carries every Problem found)
    ├── UsageError             the command line or environment is wrong
    ├── JobLockedError         another run holds the job folder
    ├── RequestError           one attempt at one item failed (carries an ErrorClass)
    │   ├── ReferenceImageError   a local reference could not be read at send time
    │   └── LinkError             the image was made and billed, but its link could not be fetched
    └── StoreError             an output could not be written safely

Errors of the libraries underneath (aiohttp, asyncio, OSError while reading
references) are translated at their one boundary and chained with ``from exc``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class ErrorClass(enum.StrEnum):
    """Why an item failed; the values are part of the report format.

    docs/failures.md lists them for the people and scripts that read them.
    """

    SAFETY_FILTER = "safety_filter"  # refused by a safety filter
    NO_IMAGE = "no_image"  # the model answered without an image
    INVALID_REQUEST = "invalid_request"  # 400, 404, 413, 422
    AUTH = "auth"  # 401, 403: stops the whole job
    QUOTA_EXHAUSTED = "quota_exhausted"  # the account or key has no credit left: stops the whole job
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx, 408, 409
    TIMEOUT = "timeout"  # connect or read timeout
    CONNECTION = "connection"  # refused, reset, dropped, DNS, TLS
    INVALID_RESPONSE = "invalid_response"  # 200 that is not a usable answer
    # A returned image link could not be fetched. The image was made and billed: it is fetched
    # again (free), never generated again unless asked (`retry --all-failed`).
    DOWNLOAD_FAILED = "download_failed"
    REFERENCE_ERROR = "reference_error"  # a local reference image went bad before sending
    # An item it references (``@ID``) failed or never finished: it was not sent. Not retried within
    # the run; ``batchgen retry`` sends it once that item has succeeded.
    DEPENDENCY_FAILED = "dependency_failed"

    @property
    def retryable(self) -> bool:
        """Worth another attempt within the run."""
        return self in _RETRYABLE

    @property
    def stops_job(self) -> bool:
        """Says nothing about the item and everything about the account: nothing else may be sent.
        ``batchgen retry`` resends such items once the key or the credit is fixed."""
        return self in (ErrorClass.AUTH, ErrorClass.QUOTA_EXHAUSTED)


_RETRYABLE = frozenset(
    {
        ErrorClass.RATE_LIMITED,
        ErrorClass.SERVER_ERROR,
        ErrorClass.TIMEOUT,
        ErrorClass.CONNECTION,
        ErrorClass.INVALID_RESPONSE,
    }
)


@dataclass(frozen=True)
class RelayLimit:
    """A rate limit the relay stated: at most ``requests`` in any ``window_s`` seconds, per key."""

    requests: int
    window_s: float

    def __post_init__(self) -> None:
        if self.requests < 1 or not self.window_s > 0:
            raise ValueError(f"a rate limit needs requests >= 1 and a window above 0, not {self}")

    def describe(self) -> str:
        """``120 requests a minute``, ``30 requests every 2 minutes``, ``5 requests every 1.5 s``."""
        count = f"{self.requests} request" + "s" * (self.requests != 1)
        minutes = self.window_s / 60
        if minutes == 1:
            return f"{count} a minute"
        if minutes >= 1 and minutes == int(minutes):
            return f"{count} every {int(minutes)} minutes"
        return f"{count} every {self.window_s:g} s"

    def share(self, shards: int) -> RelayLimit:
        """One of ``shards`` processes' part of the limit: the same window, ``1/shards`` of the
        requests (at least one, the window stretched to keep the rate when fewer than one is left)."""
        if shards <= 1:
            return self
        part = self.requests / shards
        if part >= 1:
            return RelayLimit(int(part), self.window_s)
        return RelayLimit(1, self.window_s / part)


@dataclass(frozen=True)
class RateHeaders:
    """What one answer's ``x-ratelimit-*-requests`` headers said; None where a header was absent."""

    limit: int | None = None  # requests allowed in the relay's period
    remaining: int | None = None  # left in it, this request counted
    reset_s: float | None = None  # seconds until the count is back to ``limit``


class BatchgenError(Exception):
    """Base of every error batchgen raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One mistake in a manifest, located as precisely as we can."""

    file: str
    message: str
    item: int | None = None
    item_id: str | None = None
    field: str | None = None
    line: int | None = None
    label: str | None = None  # names a generated item ("generate[0] row 12"), instead of items[i]

    @property
    def where_item(self) -> str | None:
        """Which item: ``items[3]``, a generated one's label, or None for the manifest as a whole."""
        return self.label if self.label is not None else None if self.item is None else f"items[{self.item}]"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.where_item is not None:
            where += f": {self.where_item}"
            if self.item_id:
                where += f" (id {self.item_id})"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.message}"


class ManifestError(BatchgenError):
    """The manifest is invalid; nothing may be sent."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(BatchgenError):
    """The command line or the environment is wrong; nothing may be sent."""


class JobLockedError(BatchgenError):
    """Another batchgen run holds the job folder's lock."""


class StoreError(BatchgenError):
    """An output could not be written inside the job folder."""


class RequestError(BatchgenError):
    """One attempt at one item failed.

    ``sent`` is true when the request may have reached the service (so it may
    have been billed); ``should_retry`` is the server's ``x-should-retry``
    verdict when it gave one, which overrides the class; ``upstream_status``
    is the status of the service behind a gateway, when the gateway names it;
    ``stated_limit`` and ``rate_headers`` are what the answer said of the relay's rate limit.
    """

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        sent: bool = True,
        upstream_status: int | None = None,
        stated_limit: RelayLimit | None = None,
        rate_headers: RateHeaders | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.sent = sent
        self.upstream_status = upstream_status  # what the service behind a gateway answered, if it says
        self.stated_limit = stated_limit  # a 429 that says the relay's limit in words
        self.rate_headers = rate_headers  # the answer's x-ratelimit-*-requests headers

    @property
    def retryable(self) -> bool:
        if self.error_class in _NEVER_OVERRIDDEN:
            return False
        if self.should_retry is not None:
            return self.should_retry
        return self.error_class.retryable

    def __repr__(self) -> str:
        return f"RequestError({self.error_class.value}, {self.message!r}, http_status={self.http_status})"


# A refusal is final whatever a proxy's header says: resending it only burns money.
_NEVER_OVERRIDDEN = frozenset(
    {ErrorClass.SAFETY_FILTER, ErrorClass.AUTH, ErrorClass.QUOTA_EXHAUSTED, ErrorClass.REFERENCE_ERROR}
)


class ReferenceImageError(RequestError):
    """A local reference image could not be read when its item was about to be sent."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorClass.REFERENCE_ERROR, message, sent=False)


class LinkError(RequestError):
    """The service made (and billed) the images, but a link to one could not be fetched.

    ``links`` are all of the answer's links, kept in the journal and report so
    that a later run fetches them again instead of paying for a new generation.
    """

    def __init__(self, message: str, links: Sequence[str], http_status: int | None = None) -> None:
        super().__init__(ErrorClass.DOWNLOAD_FAILED, message, http_status=http_status, should_retry=False)
        self.links = tuple(links)
