"""What an answer says of the relay's rate limit: pure readers of a 429's words and of the
``x-ratelimit-*-requests`` headers (docs/real-service.md, "The relay's rate limit")."""

from __future__ import annotations

import re
from collections.abc import Mapping

from batchgen import relay
from batchgen.errors import RateHeaders, RelayLimit

# Rate limits stated in English by other gateways ("60 requests per 1 minute", "60 requests per
# minute"); new-api's own words are the relay's (``relay.STATED_LIMIT``).
_STATED_EN = re.compile(
    r"(\d+)\s*requests?\s+(?:per|every|each|in)\s+(?:(\d+(?:\.\d+)?)\s*)?(minute|min|second|sec|hour)s?\b",
    re.IGNORECASE,
)
_UNIT_S = {"minute": 60.0, "min": 60.0, "second": 1.0, "sec": 1.0, "hour": 3600.0}


def stated_limit(text: str) -> RelayLimit | None:
    """The limit a 429's message states (M requests per N minutes), or None when it states none."""
    chinese = relay.STATED_LIMIT.search(text)
    if chinese:
        window_s, requests = float(chinese.group(1)) * 60, int(chinese.group(2))
    else:
        english = _STATED_EN.search(text)
        if not english:
            return None
        count = float(english.group(2)) if english.group(2) else 1.0
        window_s, requests = count * _UNIT_S[english.group(3).lower()], int(english.group(1))
    if requests < 1 or not window_s > 0:
        return None
    return RelayLimit(requests, window_s)


# A Go duration, as OpenAI-style gateways write x-ratelimit-reset-requests: "1s", "6m0s", "20ms".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float | None:
    """Seconds from ``"6m0s"``, ``"1.5s"``, ``"20ms"`` or a bare number of seconds; None if garbled."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            return None
        seconds = sum(float(n) * _DURATION_UNIT_S[u] for n, u in parts)
    return seconds if seconds >= 0 else None


def rate_headers(headers: Mapping[str, str]) -> RateHeaders | None:
    """The ``x-ratelimit-*-requests`` headers of an answer, or None when it has none of them."""
    limit = _count(headers.get("x-ratelimit-limit-requests"))
    remaining = _count(headers.get("x-ratelimit-remaining-requests"))
    reset = headers.get("x-ratelimit-reset-requests")
    reset_s = parse_duration(reset) if reset is not None else None
    if limit is None and remaining is None and reset_s is None:
        return None
    return RateHeaders(limit, remaining, reset_s)


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None
