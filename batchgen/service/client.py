"""The HTTP boundary: the only module that imports aiohttp.

Every aiohttp/asyncio exception and every error response is translated here
into a ``RequestError`` with its ``ErrorClass`` (docs/failures.md); nothing above this
module knows HTTP exists. ``ImageClient`` is the interface the engine uses
(``engine.item``); tests of the engine use a fake of it.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from batchgen import __version__
from batchgen.config import Proxies, Secret, is_loopback_host
from batchgen.errors import ErrorClass, RateHeaders, RequestError
from batchgen.images import SNIFF_BYTES, GeneratedImage, sniff
from batchgen.service import limits, responses

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 512 * 1024 * 1024
CONNECT_TIMEOUT_S = 30.0  # at most; and at most half of the request's own timeout
USER_AGENT = f"batchgen/{__version__}"
LARGE_BODY = 1 << 20
_MASKED_KEY = re.compile(r"sk-[A-Za-z0-9_-]*\*{2,}[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class Generation:
    """An attempt's answer: images that came inline, and links to the ones that did not.
    Both were generated and billed."""

    images: tuple[GeneratedImage, ...]
    created: int | None
    links: tuple[str, ...] = ()
    rate: RateHeaders | None = None  # what the answer's x-ratelimit-*-requests headers said


# Awaited just before an answer's body is read: the caller's room in memory for its images.
Room = Callable[[], Awaitable[None]]


async def no_wait() -> None:
    return None


class ImageClient(Protocol):
    async def generate(
        self, body: Mapping[str, Any], idempotency_key: str, room: Room = no_wait
    ) -> Generation:
        """One attempt; raises RequestError with its ErrorClass (docs/failures.md)."""
        ...

    async def download(self, url: str) -> GeneratedImage:
        """One attempt at fetching an image link; raises RequestError(DOWNLOAD_FAILED)."""
        ...


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits for fetching an image the service answered with as a ``url``."""

    max_bytes: int = 64 * 1024 * 1024
    timeout_s: float = 60.0
    max_redirects: int = 3
    allow_loopback: bool = False  # only when the API itself is on loopback (the simulator)


class HttpImageClient:
    """Talks to ``{base_url}/images/generations`` over one shared session."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret | None,
        *,
        timeout_s: float,
        download: DownloadPolicy | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_request_bytes: int | None = None,
        proxies: Proxies | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self._url = base_url.rstrip("/") + "/images/generations"
        self._proxies = proxies or Proxies()
        self._proxy = self._proxies.for_url(self._url)
        self._key = api_key
        # Connecting gives up well before the request does: a connection never made is an attempt
        # never sent (not billed), told apart from an answer that did not come in ``timeout_s``.
        connect = min(connect_timeout_s, timeout_s / 2)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect)
        host = URL(base_url).host or ""
        self._download = download or DownloadPolicy(allow_loopback=is_loopback_host(host))
        self._max_response_bytes = max_response_bytes
        self._max_request_bytes = max_request_bytes
        self._session: aiohttp.ClientSession | None = None
        self._download_session: aiohttp.ClientSession | None = None
        self._proxied_downloads: aiohttp.ClientSession | None = None
        self._guard: _FilteringResolver | None = None  # checks a link's host when a proxy resolves it
        self._warned_hosts: set[str] = set()

    async def __aenter__(self) -> HttpImageClient:
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        # The scheduler bounds concurrency; the connector must not queue below it.
        self._session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0), timeout=self._timeout
        )
        return self

    def _downloads(self, proxied: bool) -> aiohttp.ClientSession:
        # Made on first use: most services answer b64_json, and each session costs an SSL context.
        # Straight to the link, the resolver refuses private addresses as it resolves; through a
        # proxy (often on a private address itself) the link's host is checked before sending.
        timeout = self._download.timeout_s
        if proxied and self._proxied_downloads is None:
            self._proxied_downloads = _download_session(aiohttp.TCPConnector(limit=0), timeout)
        if not proxied and self._download_session is None:
            resolver = _FilteringResolver(self._download.allow_loopback)
            self._download_session = _download_session(
                aiohttp.TCPConnector(limit=0, resolver=resolver), timeout
            )
        session = self._proxied_downloads if proxied else self._download_session
        assert session is not None
        return session

    async def __aexit__(self, *exc: object) -> None:
        for session in (self._session, self._download_session, self._proxied_downloads):
            if session is not None:
                await session.close()
        if self._guard is not None:
            await self._guard.close()

    async def generate(
        self, body: Mapping[str, Any], idempotency_key: str, room: Room = no_wait
    ) -> Generation:
        assert self._session is not None, "use HttpImageClient as an async context manager"
        data = orjson.dumps(body)
        if self._max_request_bytes is not None and len(data) > self._max_request_bytes:
            raise RequestError(
                ErrorClass.INVALID_REQUEST,
                f"the request body is {len(data) / 1048576:.1f} MB, over api.max_request_mb"
                f" ({self._max_request_bytes / 1048576:g}); not sent",
                sent=False,
                should_retry=False,
            )
        try:
            async with self._session.post(
                self._url,
                # Bodies with reference images run to megabytes: aiohttp writes a stream in chunks,
                # where raw bytes of that size would hold the loop (and make it warn).
                data=io.BytesIO(data) if len(data) > LARGE_BODY else data,
                headers={"Idempotency-Key": idempotency_key},
                allow_redirects=False,
                proxy=self._proxy,
            ) as resp:
                await room()  # the body waits in the kernel until the caller has room for it
                raw = await _read_capped(resp, self._max_response_bytes)
                status, headers = resp.status, resp.headers
        except RequestError:
            raise
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise _scrubbed(map_exception(exc), self._key) from exc
        if status != 200:
            raise _scrubbed(responses.error_from_response(status, headers, raw), self._key)
        try:
            # The fast path runs on the loop (pybase64 holds the GIL anyway, and briefly: see
            # docs/performance.md); a full JSON parse, when needed, goes to a worker thread.
            parsed = responses.parse_success_fast(raw)
            if parsed is None:
                parsed = await asyncio.to_thread(responses.parse_success, raw)
        except RequestError as exc:
            raise _scrubbed(exc, self._key) from exc
        del raw  # the encoded body is not needed once decoded: let it go before the images are written
        return Generation(parsed.images, parsed.created, parsed.links, limits.rate_headers(headers))

    async def download(self, url: str) -> GeneratedImage:
        """Fetch an image the service answered with as a link: https, or plain http with a warning,
        never to a private, link-local or (unless the API is there) loopback address."""
        policy = self._download
        target = URL(url)
        try:
            for _ in range(policy.max_redirects + 1):
                _check_download_url(target, policy.allow_loopback)
                _warn_if_plain(target, self._warned_hosts)
                proxy = self._proxies.for_url(str(target))
                if proxy is not None:
                    self._guard = self._guard or _FilteringResolver(policy.allow_loopback)
                    await self._guard.resolve(target.host or "", target.port or 0)
                async with self._downloads(proxy is not None).get(
                    target, allow_redirects=False, proxy=proxy
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        target = target.join(URL(resp.headers["Location"]))
                        continue
                    if resp.status != 200:
                        raise _download_failed(f"image url answered HTTP {resp.status}", resp.status)
                    data = await _read_capped(resp, policy.max_bytes, ErrorClass.DOWNLOAD_FAILED)
                    break
            else:
                raise _download_failed(
                    f"image url redirected more than {policy.max_redirects} times", final=True
                )
        except RequestError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            cause = getattr(exc, "os_error", exc)
            if isinstance(cause, _RefusedAddress):
                raise _download_failed(f"image url refused: {cause}", final=True) from exc
            raise _download_failed(f"image url could not be fetched: {plain(exc)}") from exc
        fmt = sniff(data[:SNIFF_BYTES])
        if fmt is None:
            raise _download_failed("image url did not return a PNG, JPEG, WebP or GIF image")
        return GeneratedImage(data, fmt)


def _warn_if_plain(url: URL, warned: set[str]) -> None:
    """Once per host: a link from a public host over plain http."""
    host = url.host or ""
    if url.scheme == "http" and not is_loopback_host(host) and host not in warned:
        warned.add(host)
        log.warning(
            "image links from %s are plain http: fetched, but anyone on the way could read or alter them",
            host,
        )


def _scrubbed(error: RequestError, key: Secret | None) -> RequestError:
    """The same error, with the key cut out of its message should a proxy echo it, and the
    ends of it that new-api shows in its quota messages ("[sk-abcd***wxyz]") too."""
    message = error.message
    if key is not None and key.reveal() in message:
        message = message.replace(key.reveal(), "********")
    message = _MASKED_KEY.sub("sk-********", message)
    if message != error.message:
        error.message = message
        error.args = (message,)
    return error


def _download_session(connector: aiohttp.TCPConnector, timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT},
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


def map_exception(exc: BaseException) -> RequestError:
    """aiohttp/asyncio failures as error classes; ``sent`` says whether it may have been billed."""
    text = plain(exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return RequestError(ErrorClass.TIMEOUT, "could not connect to the service in time", sent=False)
    if isinstance(exc, TimeoutError):
        return RequestError(ErrorClass.TIMEOUT, "timed out waiting for the service")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # DNS, refused, TLS: the request never left.
        return RequestError(ErrorClass.CONNECTION, text, sent=False)
    return RequestError(ErrorClass.CONNECTION, text)


def plain(exc: BaseException) -> str:
    """What went wrong on the connection, in words for the person reading the report: never a
    library's class name, nor its numbers (aiohttp's ``ContentLengthError: 400, message=...``
    puts a code where an HTTP status is expected)."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off: the connection closed before all of it arrived"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the service closed the connection without answering"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"the TLS certificate of {exc.host} could not be verified"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve the host name {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or 'no reason given'})"
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts among them
        return "no answer in time"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"not a valid URL: {exc.url}"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}" + (f": {exc.message}" if exc.message else "")
    return "the connection failed"


async def _read_capped(
    resp: aiohttp.ClientResponse, cap: int, error_class: ErrorClass = ErrorClass.INVALID_RESPONSE
) -> bytes:
    if resp.content_length is not None:
        if resp.content_length > cap:
            raise RequestError(
                error_class,
                f"response of {resp.content_length} bytes is over the {cap}-byte cap",
                should_retry=False,  # it would be again
            )
        return await resp.read()
    chunks = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 20):
        chunks += chunk
        if len(chunks) > cap:
            raise RequestError(error_class, f"response is over the {cap}-byte cap", should_retry=False)
    return bytes(chunks)


def _download_failed(message: str, status: int | None = None, *, final: bool = False) -> RequestError:
    """``final``: fetching again cannot help (a refused address, a file over the cap)."""
    return RequestError(ErrorClass.DOWNLOAD_FAILED, message, http_status=status, should_retry=not final)


def _address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


def _check_download_url(url: URL, allow_loopback: bool) -> None:
    host = url.host or ""
    if url.scheme not in ("http", "https"):
        raise _download_failed(
            f"image url has scheme {url.scheme!r}; only https and http are fetched", final=True
        )
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if is_loopback_host(host) and not allow_loopback:
            raise _download_failed("image url points at a loopback address", final=True) from None
        return  # a name: the resolver filters what it resolves to
    if not _address_allowed(host.strip("[]"), allow_loopback):
        raise _download_failed(f"image url points at a non-public address {host}", final=True)


class _RefusedAddress(OSError):
    """A link's host resolves only to addresses batchgen does not fetch from."""


class _FilteringResolver(AbstractResolver):
    """Resolves names, dropping private, link-local and (unless allowed) loopback addresses.

    Filtering at resolution time, rather than checking the URL beforehand,
    also covers redirects and DNS answers that change between check and use.
    """

    def __init__(self, allow_loopback: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if _address_allowed(r["host"], self._allow_loopback)]
        if not allowed:
            raise _RefusedAddress(f"{host} resolves only to non-public addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
