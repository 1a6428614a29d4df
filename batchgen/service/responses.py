"""What a response means: pure functions from status, headers and bytes to results or errors."""

from __future__ import annotations

import binascii
import email.utils
import html
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
import pybase64

from batchgen import relay
from batchgen.errors import ErrorClass, RequestError
from batchgen.images import SNIFF_BYTES, GeneratedImage, ImageFormat, sniff
from batchgen.service.limits import rate_headers, stated_limit

MAX_MESSAGE = 300

# An error answer's class by its status, where no message rule of the relay says otherwise.
_STATUS_CLASSES = {
    400: ErrorClass.INVALID_REQUEST,
    404: ErrorClass.INVALID_REQUEST,
    413: ErrorClass.INVALID_REQUEST,
    422: ErrorClass.INVALID_REQUEST,
    401: ErrorClass.AUTH,
    402: ErrorClass.QUOTA_EXHAUSTED,
    403: ErrorClass.AUTH,
    429: ErrorClass.RATE_LIMITED,
    408: ErrorClass.SERVER_ERROR,
    409: ErrorClass.SERVER_ERROR,
}


def classify(status: int, text: str) -> ErrorClass:
    """The class of an error response: what its message says first (the relay's message rules,
    in order), then its status."""
    for rule in relay.MESSAGE_RULES:
        if rule.words.search(text):
            return rule.means
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if 500 <= status <= 599:
        return ErrorClass.SERVER_ERROR
    if 400 <= status <= 499:
        return ErrorClass.INVALID_REQUEST
    return ErrorClass.INVALID_RESPONSE


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_should_retry(value: str | None) -> bool | None:
    if value is None:
        return None
    return {"true": True, "false": False}.get(value.strip().lower())


def error_from_response(status: int, headers: Mapping[str, str], raw: bytes) -> RequestError:
    """A non-200 response as a classified RequestError."""
    message, kind = describe_body(raw)
    error_class = classify(status, f"{message} {kind}")
    upstream = _UPSTREAM_STATUS.search(kind)
    limited = error_class is ErrorClass.RATE_LIMITED
    if status == 413:
        message += (
            " (the relay or a proxy in front of it refused the request's size:"
            " lower limits.reference_max_mb or api.max_request_mb)"
        )
    return RequestError(
        error_class,
        f"HTTP {status}: {message}" if message else f"HTTP {status}",
        http_status=status,
        retry_after=parse_retry_after(headers.get("Retry-After")),
        should_retry=parse_should_retry(headers.get("x-should-retry")),
        upstream_status=int(upstream.group(1)) if upstream else None,
        stated_limit=stated_limit(message) if limited else None,
        rate_headers=rate_headers(headers),
    )


# new-api passes an upstream's bad status on as code bad_response_status_code, the status in param.
_UPSTREAM_STATUS = re.compile(r"bad_response_status_code ([1-5][0-9][0-9])\b")


def describe_body(raw: bytes) -> tuple[str, str]:
    """A short message and an error type/code from whatever a server or proxy sent."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _describe_text(raw), ""
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            kind = " ".join(str(error.get(k) or "") for k in ("type", "code", "param")).strip()
            return _short(message or kind or "error without a message"), kind
        if isinstance(error, str):
            return _short(error), ""
    return _short(raw.decode("utf-8", "replace")), ""


def _describe_text(raw: bytes) -> str:
    text = raw[:4096].decode("utf-8", "replace")
    if not text.strip():
        return "empty body"
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        return _short(f"HTML page: {html.unescape(title.group(1)).strip()}")
    if "<html" in text.lower() or "<!doctype" in text.lower():
        return "HTML page"
    return _short(text)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True, slots=True)
class ParsedSuccess:
    images: tuple[GeneratedImage, ...]  # decoded from b64_json, or from a data: URI in url
    links: tuple[str, ...]  # image urls to download: the images exist, and were billed
    created: int | None


# Values the fast path lifts out of the raw bytes: any b64_json, and a url holding a data: URI.
_B64_KEY, _URL_KEY = b'"b64_json"', b'"url"'
_COLON_QUOTE = re.compile(rb"\s*:\s*\"")
# Stands in for a lifted value; written with an escape, so a real inline value (which the fast
# path only takes without escapes) can never be mistaken for one.
_PLACEHOLDER = b"\\u0000batchgen-inline:"
_PLACEHOLDER_TEXT = "\x00batchgen-inline:"


def parse_success_fast(raw: bytes) -> ParsedSuccess | None:
    """The common answer without running megabytes of base64 through a JSON parser, or None.

    Each inline image value (``"b64_json": "..."``, or ``"url": "data:image/...;base64,..."``)
    is found in the raw bytes (base64 holds no quote, so the next quote ends it), the small
    rest is parsed as JSON with those values emptied, and the values are decoded straight
    from the bytes, a small fraction of a full parse (docs/performance.md). None
    means "not sure": an escaped character in a value, a cut-off body, values outside
    ``data``; then ``parse_success`` decides.
    """
    spans = _inline_spans(raw)
    if spans is None:
        return None
    if not spans:
        return None
    # Each value gives way to a placeholder naming it, so the parsed entries say which is which.
    pieces: list[bytes] = []
    last = 0
    for k, (start, end) in enumerate(spans):
        pieces += (raw[last:start], b"%s%d" % (_PLACEHOLDER, k))
        last = end
    pieces.append(raw[last:])
    try:
        data = orjson.loads(b"".join(pieces))
    except orjson.JSONDecodeError:
        return None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or "error" in data or not all(isinstance(e, dict) for e in entries):
        return None
    found: list[tuple[int, str, int] | str] = []  # (entry, field, span) for an inline image, or a link
    for k, entry in enumerate(entries):
        b64, url = entry.get("b64_json"), entry.get("url")
        if isinstance(b64, str) and b64.startswith(_PLACEHOLDER_TEXT):
            found.append((k, "b64_json", int(b64[len(_PLACEHOLDER_TEXT) :])))
        elif isinstance(url, str) and url.startswith(_PLACEHOLDER_TEXT):
            found.append((k, "url", int(url[len(_PLACEHOLDER_TEXT) :])))
        elif isinstance(url, str) and url:
            found.append(url)
    if sorted(f[2] for f in found if isinstance(f, tuple)) != list(range(len(spans))):
        return None  # a value outside data, or two in one entry: let the full parser judge
    view = memoryview(raw)
    images: list[GeneratedImage] = []
    links: list[str] = []
    for f in found:
        if isinstance(f, str):
            links.append(f)
        else:
            k, field, span = f
            start, end = spans[span]
            images.append(GeneratedImage(*_decode(view[start:end], k, field)))
    created = data.get("created")
    return ParsedSuccess(tuple(images), tuple(links), created if isinstance(created, int) else None)


def _inline_spans(raw: bytes) -> list[tuple[int, int]] | None:
    """(start, end) of every inline image value; None when unsure.

    Walks from quote to quote with ``bytes.find`` of one byte (memchr speed), jumping over
    each value it lifts: base64 holds no quote, so its megabytes are skipped, where a
    search for a longer key (or a regex) would crawl through them on the event loop.
    """
    spans: list[tuple[int, int]] = []
    quote = raw.find(b'"')
    while quote != -1:
        is_b64 = raw.startswith(_B64_KEY, quote)
        if not (is_b64 or raw.startswith(_URL_KEY, quote)):
            quote = raw.find(b'"', quote + 1)
            continue
        key_end = quote + len(_B64_KEY if is_b64 else _URL_KEY)
        opening = _COLON_QUOTE.match(raw, key_end)
        if opening is None or not (is_b64 or raw.startswith(b"data:", opening.end())):
            quote = raw.find(b'"', key_end)  # not an inline image (a link, a null): walk on
            continue
        start = opening.end()
        end = raw.find(b'"', start)
        if end == -1 or raw.find(b"\\", start, end) != -1:
            return None
        if end > start:
            spans.append((start, end))
        quote = raw.find(b'"', end + 1)
    return spans or None


def parse_success(raw: bytes) -> ParsedSuccess:
    """A 200 body: decoded images and image links, or RequestError.

    The full parse, for whatever ``parse_success_fast`` is not sure of: CPU-heavy for
    large images, so the client runs it off the event loop.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        what = _describe_text(raw)
        raise RequestError(
            ErrorClass.INVALID_RESPONSE,
            f"HTTP 200 with a body that is not JSON ({what})",
            http_status=200,
        ) from None
    if not isinstance(data, dict):
        raise RequestError(
            ErrorClass.INVALID_RESPONSE, "HTTP 200 with JSON that is not an object", http_status=200
        )
    if "error" in data and not data.get("data"):
        message, kind = describe_body(raw)
        error_class = classify(200, f"{message} {kind}")
        raise RequestError(error_class, f"HTTP 200 with an error: {message}", http_status=200)
    entries = data.get("data")
    if not isinstance(entries, list) or not entries:
        raise RequestError(ErrorClass.NO_IMAGE, "the service answered without any image", http_status=200)
    images: list[GeneratedImage] = []
    links: list[str] = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise RequestError(ErrorClass.INVALID_RESPONSE, f"data[{k}] is not an object", http_status=200)
        b64 = entry.get("b64_json")
        url = entry.get("url")
        if isinstance(b64, str) and b64:
            images.append(GeneratedImage(*_decode(b64, k, "b64_json")))
        elif isinstance(url, str) and url.startswith("data:"):
            images.append(GeneratedImage(*_decode(url, k, "url")))
        elif isinstance(url, str) and url:
            links.append(url)
    if not images and not links:
        raise RequestError(ErrorClass.NO_IMAGE, "the service answered without any image", http_status=200)
    created = data.get("created")
    return ParsedSuccess(tuple(images), tuple(links), created if isinstance(created, int) else None)


def _decode(b64: str | memoryview, k: int, field: str) -> tuple[bytes, ImageFormat]:
    """Base64 image bytes, bare or as a ``data:`` URI, decoded and sniffed."""
    if isinstance(b64, str) and b64.startswith("data:"):
        header, _, b64 = b64.partition(",")
    elif isinstance(b64, memoryview) and bytes(b64[:5]) == b"data:":
        comma = bytes(b64[:256]).find(b",")
        if comma < 0:  # a long header, or none: look further, as the full parse does
            comma = bytes(b64).find(b",")
        end = comma if comma >= 0 else len(b64)
        header, b64 = bytes(b64[:end]).decode("ascii", "replace"), b64[end + 1 :]
    else:
        header = ""
    if header and not header.endswith(";base64"):
        raise RequestError(
            ErrorClass.INVALID_RESPONSE,
            f"data[{k}].{field} is a data: URI that is not base64",
            http_status=200,
        )
    try:
        data = pybase64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            ErrorClass.INVALID_RESPONSE, f"data[{k}].{field} is not valid base64", http_status=200
        ) from None
    fmt = sniff(data[:SNIFF_BYTES])
    if fmt is None:
        raise RequestError(
            ErrorClass.INVALID_RESPONSE,
            f"data[{k}] is not a PNG, JPEG, WebP or GIF image",
            http_status=200,
        )
    return data, fmt
