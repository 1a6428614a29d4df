"""The HTTP boundary, with MockedApi standing in for the service: every error class, both formats."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pybase64
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from batchgen.config import Proxies, Secret
from batchgen.errors import ErrorClass, RateHeaders, RequestError
from batchgen.service import client as client_module
from batchgen.service.client import DownloadPolicy, HttpImageClient

from .conftest import CANARY_KEY, MockedApi, png_bytes

BASE = "https://api.test/v1"
URL_GEN = f"{BASE}/images/generations"
BODY = {"model": "nano-banana-2", "prompt": "a tote", "size": "1K", "n": 1, "response_format": "b64_json"}


def b64_payload(*images: bytes) -> dict[str, object]:
    return {"created": 9, "data": [{"b64_json": pybase64.b64encode(i).decode()} for i in images]}


@pytest.fixture
async def client() -> AsyncIterator[HttpImageClient]:
    async with HttpImageClient(BASE, Secret(CANARY_KEY), timeout_s=5) as c:
        yield c


async def failure(client: HttpImageClient) -> RequestError:
    with pytest.raises(RequestError) as caught:
        await client.generate(BODY, "key-1")
    return caught.value


class FakeResolver:
    """A DNS that answers every name with the given addresses."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, object]]:
        self.asked.append((host, port))
        return [
            {"hostname": host, "host": a, "port": port, "family": 0, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def download_failure(client: HttpImageClient, url: str) -> RequestError:
    with pytest.raises(RequestError) as caught:
        await client.download(url)
    return caught.value


async def test_b64_json_success_sends_key_body_and_idempotency_key(
    client: HttpImageClient, mocked: MockedApi
) -> None:
    png = png_bytes()
    mocked.post(URL_GEN, payload=b64_payload(png, png))
    result = await client.generate(BODY, "idem-123")
    assert [i.data for i in result.images] == [png, png]
    assert result.created == 9
    ((_, calls),) = mocked.requests.items()
    (call,) = calls
    assert orjson.loads(call.kwargs["data"]) == BODY
    assert call.kwargs["headers"]["Idempotency-Key"] == "idem-123"


JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 100


def escaped(b64: str) -> str:
    """The same base64 with every "/" written as JSON's "\\/": valid JSON that the fast path
    leaves to the full parser."""
    assert "/" in b64
    return b64.replace("/", "\\/")


def shapes() -> list[tuple[str, bytes, int]]:
    """(name, raw 200 body, images inline) for every success shape the relay sends, on both paths."""
    png = png_bytes(64, 64)
    b64 = pybase64.b64encode(png).decode()
    while "/" not in b64:  # the escaped variants need a slash to escape
        png += b"\0"
        b64 = pybase64.b64encode(png).decode()
    data_uri = "data:image/png;base64," + b64
    link = "https://cdn.test/img/1"
    return [
        ("b64_json", orjson.dumps({"created": 9, "data": [{"b64_json": b64}]}), 1),
        ("b64_json, full parse", b'{"created": 9, "data": [{"b64_json": "%s"}]}' % escaped(b64).encode(), 1),
        ("data: URI in b64_json", orjson.dumps({"created": 9, "data": [{"b64_json": data_uri}]}), 1),
        ("data: URI in url", orjson.dumps({"created": 9, "data": [{"url": data_uri}]}), 1),
        (
            "data: URI in url, full parse",
            b'{"created": 9, "data": [{"url": "%s"}]}' % escaped(data_uri).encode(),
            1,
        ),
        (
            "data: URI and revised_prompt, as new-api writes them",
            orjson.dumps({"created": 9, "data": [{"url": data_uri, "b64_json": "", "revised_prompt": "p"}]}),
            1,
        ),
        ("link", orjson.dumps({"created": 9, "data": [{"url": link}]}), 0),
        ("link and inline", orjson.dumps({"created": 9, "data": [{"url": link}, {"b64_json": b64}]}), 1),
    ]


@pytest.mark.parametrize(("name", "raw", "inline"), shapes(), ids=[s[0] for s in shapes()])
async def test_every_success_shape(name: str, raw: bytes, inline: int, mocked: MockedApi) -> None:
    mocked.post(URL_GEN, body=raw, content_type="application/json")
    mocked.get("https://cdn.test/img/1", body=JPEG, content_type="image/jpeg")
    async with HttpImageClient(BASE, Secret("k"), timeout_s=5) as client:
        result = await client.generate(BODY, "k")
        assert len(result.images) == inline
        assert all(i.format.ext == "png" and i.data.startswith(b"\x89PNG") for i in result.images)
        assert result.created == 9
        # A link is not fetched as part of the generation: the runner fetches it with its own budget.
        assert result.links == (("https://cdn.test/img/1",) if "link" in name else ())
        assert len(mocked.requests) == 1
        if result.links:
            image = await client.download(result.links[0])
            assert (image.data, image.format.ext) == (JPEG, "jpg")


@pytest.mark.parametrize(
    ("status", "payload", "headers", "error_class", "retryable", "retry_after"),
    [
        (
            500,
            {"error": {"message": "chat response contains no choices"}},
            {},
            ErrorClass.SAFETY_FILTER,
            False,
            None,
        ),
        (
            500,
            {"error": {"message": "no base64 image found in response"}},
            {},
            ErrorClass.NO_IMAGE,
            False,
            None,
        ),
        (500, {"error": {"message": "failed to upload image"}}, {}, ErrorClass.SERVER_ERROR, True, None),
        (
            400,
            {"error": {"message": "bad size", "type": "invalid_request_error"}},
            {},
            ErrorClass.INVALID_REQUEST,
            False,
            None,
        ),
        (401, {"error": {"message": "Incorrect API key"}}, {}, ErrorClass.AUTH, False, None),
        (403, {"error": {"message": "forbidden"}}, {}, ErrorClass.AUTH, False, None),
        (
            429,
            {"error": {"message": "slow down"}},
            {"Retry-After": "12"},
            ErrorClass.RATE_LIMITED,
            True,
            12.0,
        ),
        (
            503,
            {"error": {"message": "overloaded"}},
            {"x-should-retry": "false"},
            ErrorClass.SERVER_ERROR,
            False,
            None,
        ),
        (408, {}, {}, ErrorClass.SERVER_ERROR, True, None),
    ],
)
async def test_error_statuses(
    client: HttpImageClient,
    mocked: MockedApi,
    status: int,
    payload: dict[str, object],
    headers: dict[str, str],
    error_class: ErrorClass,
    retryable: bool,
    retry_after: float | None,
) -> None:
    mocked.post(URL_GEN, status=status, payload=payload, headers=headers)
    error = await failure(client)
    assert (error.error_class, error.retryable, error.retry_after, error.http_status) == (
        error_class,
        retryable,
        retry_after,
        status,
    )


async def test_html_error_page(client: HttpImageClient, mocked: MockedApi) -> None:
    mocked.post(
        URL_GEN, status=502, body="<html><title>502 Bad Gateway</title></html>", content_type="text/html"
    )
    error = await failure(client)
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert error.message == "HTTP 502: HTML page: 502 Bad Gateway"


@pytest.mark.parametrize(
    ("body", "error_class"),
    [
        ("<html>maintenance</html>", ErrorClass.INVALID_RESPONSE),
        ('{"data": [{"b64_json": "iVBO', ErrorClass.INVALID_RESPONSE),
        ('{"data": [{"b64_json": "@@@"}]}', ErrorClass.INVALID_RESPONSE),
        ('{"data": []}', ErrorClass.NO_IMAGE),
    ],
)
async def test_bad_200_bodies(
    client: HttpImageClient, mocked: MockedApi, body: str, error_class: ErrorClass
) -> None:
    mocked.post(URL_GEN, status=200, body=body)
    assert (await failure(client)).error_class is error_class


def connector_error(
    os_error: OSError, cls: type[aiohttp.ClientConnectorError] = aiohttp.ClientConnectorError
) -> Exception:
    key = ConnectionKey("api.test", 443, True, True, None, None, None, None)
    return cls(key, os_error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exception", "error_class", "sent"),
    [
        (connector_error(ConnectionRefusedError(111, "refused")), ErrorClass.CONNECTION, False),
        (
            connector_error(OSError(-2, "Name or service not known"), aiohttp.ClientConnectorDNSError),
            ErrorClass.CONNECTION,
            False,
        ),
        (aiohttp.ConnectionTimeoutError("connect"), ErrorClass.TIMEOUT, False),
        (aiohttp.SocketTimeoutError("read"), ErrorClass.TIMEOUT, True),
        (TimeoutError(), ErrorClass.TIMEOUT, True),
        (aiohttp.ServerDisconnectedError(), ErrorClass.CONNECTION, True),
        (aiohttp.ClientPayloadError("cut"), ErrorClass.CONNECTION, True),
        (ConnectionResetError(104, "reset by peer"), ErrorClass.CONNECTION, True),
    ],
)
async def test_transport_failures(
    client: HttpImageClient, mocked: MockedApi, exception: Exception, error_class: ErrorClass, sent: bool
) -> None:
    mocked.post(URL_GEN, exception=exception)
    error = await failure(client)
    assert (error.error_class, error.sent, error.retryable) == (error_class, sent, True)


@pytest.mark.parametrize("status", [401, 200])  # an error answer, and a 200 whose body is an error
async def test_key_echoed_by_a_proxy_is_scrubbed(
    client: HttpImageClient, mocked: MockedApi, status: int
) -> None:
    mocked.post(URL_GEN, status=status, payload={"error": {"message": f"bad header: Bearer {CANARY_KEY}"}})
    error = await failure(client)
    assert CANARY_KEY not in error.message
    assert CANARY_KEY not in str(error)
    assert CANARY_KEY not in repr(error)
    assert "bad header: Bearer ********" in error.message


async def test_key_in_a_proxys_refusal_of_the_connection_is_scrubbed(
    client: HttpImageClient, mocked: MockedApi
) -> None:
    # The company's proxy refuses the tunnel, its reason phrase quoting the request's header.
    refusal = aiohttp.ClientHttpProxyError(None, (), status=400, message=f"bad header: Bearer {CANARY_KEY}")  # type: ignore[arg-type]
    mocked.post(URL_GEN, exception=refusal)
    error = await failure(client)
    assert (error.error_class, error.message) == (
        ErrorClass.CONNECTION,
        "HTTP 400: bad header: Bearer ********",
    )
    assert CANARY_KEY not in str(error) + repr(error)


class TestDownloads:
    async def test_redirects_are_followed_up_to_three(self, mocked: MockedApi) -> None:
        png = png_bytes()
        mocked.post(URL_GEN, payload={"data": [{"url": "https://cdn.test/0"}]})
        for k in range(3):
            mocked.get(f"https://cdn.test/{k}", status=302, headers={"Location": f"/{k + 1}"})
        mocked.get("https://cdn.test/3", body=png)
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            assert (await client.download("https://cdn.test/0")).data == png

    @pytest.mark.parametrize("status", [301, 303, 307, 308])
    async def test_every_redirect_status_is_followed(self, mocked: MockedApi, status: int) -> None:
        mocked.get("https://cdn.test/0", status=status, headers={"Location": "https://img.test/1"})
        mocked.get("https://img.test/1", body=png_bytes())
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            assert (await client.download("https://cdn.test/0")).data == png_bytes()

    async def test_a_redirect_without_a_location_fails_as_its_status(self, mocked: MockedApi) -> None:
        mocked.get("https://cdn.test/0", status=302)
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            error = await download_failure(client, "https://cdn.test/0")
        assert (error.message, error.http_status, error.retryable) == (
            "image url answered HTTP 302",
            302,
            True,
        )

    async def test_a_fourth_redirect_fails_the_item(self, mocked: MockedApi) -> None:
        mocked.post(URL_GEN, payload={"data": [{"url": "https://cdn.test/0"}]})
        for k in range(4):
            mocked.get(f"https://cdn.test/{k}", status=302, headers={"Location": f"/{k + 1}"})
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            error = await download_failure(client, "https://cdn.test/0")
        assert error.error_class is ErrorClass.DOWNLOAD_FAILED
        assert "more than 3 times" in error.message
        assert not error.retryable

    @pytest.mark.parametrize(
        ("body", "status", "fragment", "worth_again"),
        [
            (b"<html>login</html>", 200, "image url did not return a PNG, JPEG, WebP or GIF image", True),
            (b"", 404, "image url answered HTTP 404", True),  # a CDN may not have the file yet
            (b"", 503, "image url answered HTTP 503", True),
            (
                b"\x89PNG\r\n\x1a\n" + b"\0" * 2000,
                200,
                "response is over the 1000-byte cap",
                False,
            ),
        ],
    )
    async def test_bad_downloads(
        self, mocked: MockedApi, body: bytes, status: int, fragment: str, worth_again: bool
    ) -> None:
        mocked.get("https://cdn.test/x", status=status, body=body)
        async with HttpImageClient(
            BASE, None, timeout_s=5, download=DownloadPolicy(max_bytes=1000)
        ) as client:
            error = await download_failure(client, "https://cdn.test/x")
        assert error.error_class is ErrorClass.DOWNLOAD_FAILED
        assert error.message == fragment
        assert error.retryable is worth_again

    @pytest.mark.parametrize(
        "url",
        [
            "https://10.0.0.5/a.png",
            "https://192.168.1.1/a.png",
            "https://172.16.0.1/a.png",
            "https://169.254.169.254/latest/meta-data",  # cloud metadata
            "https://127.0.0.1/a.png",
            "https://[::1]/a.png",
            "https://[::ffff:10.0.0.1]/a.png",
            "https://localhost/a.png",
            "https://224.0.0.1/a.png",  # multicast
            "https://[ff02::1]/a.png",
            "file:///etc/passwd",
        ],
    )
    async def test_private_addresses_are_refused(self, url: str, mocked: MockedApi) -> None:
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            error = await download_failure(client, url)
        assert error.error_class is ErrorClass.DOWNLOAD_FAILED
        assert not error.retryable  # asking again will not make it public

    @pytest.mark.parametrize(
        "url",
        ["https://cdn.test/a.png", "https://8.8.8.8/a.png", "http://cdn.test/a.png", "http://8.8.8.8/a"],
    )
    async def test_public_hosts_are_allowed(self, url: str, mocked: MockedApi) -> None:
        mocked.get(url, body=png_bytes())
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            assert (await client.download(url)).data == png_bytes()

    async def test_plain_http_from_a_public_host_is_fetched_with_one_warning(
        self, mocked: MockedApi, caplog: pytest.LogCaptureFixture
    ) -> None:
        for k in range(2):
            mocked.get(f"http://cdn.test/{k}.png", body=png_bytes())
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            for k in range(2):
                assert (await client.download(f"http://cdn.test/{k}.png")).data == png_bytes()
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == [
            "image links from cdn.test are plain http: fetched, but anyone on the way could read or alter them"
        ]

    async def test_loopback_http_only_when_the_api_is_on_loopback(self, mocked: MockedApi) -> None:
        link = "http://127.0.0.1:8787/files/x"
        mocked.get(link, body=png_bytes())
        async with HttpImageClient("http://127.0.0.1:8787/v1", None, timeout_s=5) as client:
            assert (await client.download(link)).data == png_bytes()
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            assert (await download_failure(client, link)).error_class is ErrorClass.DOWNLOAD_FAILED

    @pytest.mark.parametrize(
        ("answers", "allow_loopback", "kept"),
        [
            (["10.0.0.7"], False, []),
            (["10.0.0.7", "93.184.216.34"], False, ["93.184.216.34"]),
            (["169.254.169.254"], False, []),
            (["fd00::1", "2606:4700::1"], False, ["2606:4700::1"]),
            (["127.0.0.1"], False, []),
            (["127.0.0.1"], True, ["127.0.0.1"]),
            (["::ffff:10.0.0.7", "::ffff:93.184.216.34"], False, ["::ffff:93.184.216.34"]),  # IPv4 in IPv6
            (["::ffff:127.0.0.1"], True, ["::ffff:127.0.0.1"]),
            (["fe80::1%eth0", "2606:4700::1%eth0"], False, ["2606:4700::1%eth0"]),  # with a zone
        ],
    )
    async def test_the_resolver_drops_non_public_addresses(
        self, monkeypatch: pytest.MonkeyPatch, answers: list[str], allow_loopback: bool, kept: list[str]
    ) -> None:
        dns = FakeResolver(answers)
        monkeypatch.setattr(client_module.aiohttp, "ThreadedResolver", lambda: dns)
        resolver = client_module._FilteringResolver(allow_loopback)
        if kept:
            assert [r["host"] for r in await resolver.resolve("cdn.test", 443)] == kept
        else:
            with pytest.raises(OSError, match="non-public"):
                await resolver.resolve("cdn.test", 443)
        assert dns.asked == [("cdn.test", 443)]

    async def test_a_proxied_link_has_its_own_host_looked_up_first(
        self, monkeypatch: pytest.MonkeyPatch, mocked: MockedApi
    ) -> None:
        dns = FakeResolver(["93.184.216.34"])
        monkeypatch.setattr(client_module.aiohttp, "ThreadedResolver", lambda: dns)
        mocked.get("https://cdn.test:8443/a.png", body=png_bytes())
        proxies = Proxies(https="http://proxy.test:3128")
        async with HttpImageClient(BASE, None, timeout_s=5, proxies=proxies) as client:
            assert (await client.download("https://cdn.test:8443/a.png")).data == png_bytes()
        assert dns.asked == [("cdn.test", 8443)]

    async def test_a_name_that_resolves_to_a_private_address_is_never_fetched(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # DNS rebinding: a public-looking name answering with the cloud metadata address.
        monkeypatch.setattr(
            client_module.aiohttp, "ThreadedResolver", lambda: FakeResolver(["169.254.169.254"])
        )
        async with HttpImageClient(BASE, None, timeout_s=5) as client:
            error = await download_failure(client, "https://images.cdn.test/a.png")
        assert error.error_class is ErrorClass.DOWNLOAD_FAILED
        assert "non-public" in error.message
        assert not error.retryable


async def test_a_body_is_read_only_once_the_caller_has_room_for_it(mocked: MockedApi) -> None:
    mocked.post(URL_GEN, payload=b64_payload(png_bytes()))
    room = asyncio.Event()
    asked: list[str] = []

    async def wait_for_room() -> None:
        asked.append("room")
        await room.wait()

    async with HttpImageClient(BASE, None, timeout_s=5) as client:
        answer = asyncio.create_task(client.generate(BODY, "a", wait_for_room))
        for _ in range(50):
            await asyncio.sleep(0)
        assert asked == ["room"]
        assert not answer.done()
        room.set()
        assert (await asyncio.wait_for(answer, timeout=5)).images


async def test_a_body_over_max_request_bytes_is_never_sent(mocked: MockedApi) -> None:
    mocked.post(URL_GEN, payload=b64_payload(png_bytes()))
    big = {**BODY, "extra_fields": {"reference_images": ["data:image/png;base64," + "A" * 3000]}}
    async with HttpImageClient(BASE, None, timeout_s=5, max_request_bytes=2000) as client:
        with pytest.raises(RequestError) as caught:
            await client.generate(big, "k")
        assert (await client.generate(BODY, "k")).images  # a small one still goes
    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert (caught.value.sent, caught.value.retryable) == (False, False)
    assert "api.max_request_mb" in caught.value.message
    ((_, calls),) = mocked.requests.items()
    assert len(calls) == 1


async def test_the_ends_of_a_key_in_new_apis_quota_message_are_cut_out_too(
    client: HttpImageClient, mocked: MockedApi
) -> None:
    message = f"该令牌额度已用尽 TokenStatusExhausted[{CANARY_KEY[:7]}***{CANARY_KEY[-4:]}] (request id: 7)"
    mocked.post(URL_GEN, status=401, payload={"error": {"message": message, "type": "new_api_error"}})
    error = await failure(client)
    assert error.error_class is ErrorClass.QUOTA_EXHAUSTED
    assert CANARY_KEY[-4:] not in error.message
    assert "TokenStatusExhausted[sk-********]" in error.message


def key_for(host: str = "api.test", port: int = 443) -> ConnectionKey:
    return ConnectionKey(host, port, True, True, None, None, None, None)


@pytest.mark.parametrize(
    ("exception", "words"),
    [
        (
            aiohttp.ClientPayloadError("cut"),
            "the answer was cut off: the connection closed before all of it arrived",
        ),
        (aiohttp.ServerDisconnectedError(), "the service closed the connection without answering"),
        (
            aiohttp.ClientConnectorCertificateError(key_for(), ValueError("self-signed")),  # type: ignore[arg-type]
            "the TLS certificate of api.test could not be verified",
        ),
        (
            connector_error(OSError(-2, "Name or service not known"), aiohttp.ClientConnectorDNSError),
            "cannot resolve the host name api.test",
        ),
        (
            connector_error(ConnectionRefusedError(111, "Connection refused")),
            "cannot connect to api.test:443 (Connection refused)",
        ),
        (connector_error(OSError()), "cannot connect to api.test:443 (no reason given)"),
        (aiohttp.SocketTimeoutError("read"), "no answer in time"),
        (TimeoutError(), "no answer in time"),
        (aiohttp.TooManyRedirects(None, (), status=302), "too many redirects"),  # type: ignore[arg-type]
        (aiohttp.InvalidURL("ht!tp://x"), "not a valid URL: ht!tp://x"),
        (ConnectionResetError(104, "Connection reset by peer"), "the connection was reset"),
        (OSError(5, "Input/output error"), "input/output error"),
        (OSError(), "the connection failed"),
        (aiohttp.ClientResponseError(None, (), status=502, message="Bad Gateway"), "HTTP 502: Bad Gateway"),  # type: ignore[arg-type]
        (aiohttp.ClientResponseError(None, (), status=502), "HTTP 502"),  # type: ignore[arg-type]
        (ValueError("odd"), "the connection failed"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_what_went_wrong_is_said_in_words(exception: BaseException, words: str) -> None:
    assert client_module.plain(exception) == words


@pytest.mark.parametrize(
    ("exception", "error_class", "message", "sent"),
    [
        (
            aiohttp.ConnectionTimeoutError("c"),
            ErrorClass.TIMEOUT,
            "could not connect to the service in time",
            False,
        ),
        (aiohttp.SocketTimeoutError("r"), ErrorClass.TIMEOUT, "timed out waiting for the service", True),
        (TimeoutError(), ErrorClass.TIMEOUT, "timed out waiting for the service", True),
        (
            connector_error(ConnectionRefusedError(111, "Connection refused")),
            ErrorClass.CONNECTION,
            "cannot connect to api.test:443 (Connection refused)",
            False,
        ),
        (
            aiohttp.ServerDisconnectedError(),
            ErrorClass.CONNECTION,
            "the service closed the connection without answering",
            True,
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_each_failure_gets_its_class_and_whether_it_may_have_been_billed(
    exception: BaseException, error_class: ErrorClass, message: str, sent: bool
) -> None:
    error = client_module.map_exception(exception)
    assert (error.error_class, error.message, error.sent, error.retryable) == (
        error_class,
        message,
        sent,
        True,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://cdn.test/a.png", "image url has scheme 'ftp'; only https and http are fetched"),
        ("https://localhost/a.png", "image url points at a loopback address"),
        ("https://[fd00::1]/a.png", "image url points at a non-public address fd00::1"),
        ("https://10.0.0.5/a.png", "image url points at a non-public address 10.0.0.5"),
    ],
)
async def test_a_refused_link_says_why(url: str, message: str) -> None:
    async with HttpImageClient(BASE, None, timeout_s=5) as client:
        error = await download_failure(client, url)
    assert (error.message, error.retryable, error.http_status) == (message, False, None)


async def test_a_link_that_cannot_be_fetched_is_worth_fetching_again(mocked: MockedApi) -> None:
    mocked.get("https://cdn.test/a.png", exception=aiohttp.ServerDisconnectedError())
    async with HttpImageClient(BASE, None, timeout_s=5) as client:
        error = await download_failure(client, "https://cdn.test/a.png")
    assert error.error_class is ErrorClass.DOWNLOAD_FAILED
    assert (
        error.message == "image url could not be fetched: the service closed the connection without answering"
    )
    assert error.retryable


@pytest.mark.parametrize(
    ("base", "url"),
    [
        (BASE, URL_GEN),
        (BASE + "/", URL_GEN),
        ("https://api.test/gateway/X", "https://api.test/gateway/X/images/generations"),
        ("https://api.test/X//", "https://api.test/X/images/generations"),
    ],
)
async def test_the_relay_is_asked_at_its_url_whatever_the_slash(
    mocked: MockedApi, base: str, url: str
) -> None:
    mocked.post(url, payload=b64_payload(png_bytes()))
    async with HttpImageClient(base, None, timeout_s=5) as client:
        assert (await client.generate(BODY, "k")).images


async def test_a_redirect_from_the_relay_is_an_error_not_followed(mocked: MockedApi) -> None:
    mocked.post(URL_GEN, status=307, headers={"Location": "https://elsewhere.test/v1/images/generations"})
    mocked.post("https://elsewhere.test/v1/images/generations", payload=b64_payload(png_bytes()))
    async with HttpImageClient(BASE, None, timeout_s=5) as client:
        error = await failure(client)
    assert error.http_status == 307


async def test_the_rate_headers_of_an_answer_come_with_it(mocked: MockedApi) -> None:
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59"}
    mocked.post(URL_GEN, payload=b64_payload(png_bytes()), headers=headers)
    async with HttpImageClient(BASE, None, timeout_s=5) as client:
        answer = await client.generate(BODY, "k")
    assert answer.rate == RateHeaders(limit=60, remaining=59)


async def test_a_body_of_exactly_max_request_bytes_is_sent(mocked: MockedApi) -> None:
    mocked.post(URL_GEN, payload=b64_payload(png_bytes()))
    size = len(orjson.dumps(BODY))
    async with HttpImageClient(BASE, None, timeout_s=5, max_request_bytes=size) as client:
        assert (await client.generate(BODY, "k")).images
    async with HttpImageClient(BASE, None, timeout_s=5, max_request_bytes=size - 1) as client:
        error = await failure(client)
    assert error.message == (
        f"the request body is {size / 1048576:.1f} MB, over api.max_request_mb ({(size - 1) / 1048576:g}); not sent"
    )


@pytest.mark.parametrize("known_length", [True, False])
async def test_an_answer_over_the_cap_is_refused_and_not_asked_again(
    mocked: MockedApi, known_length: bool
) -> None:
    body = orjson.dumps(b64_payload(png_bytes()))
    headers = {"Content-Length": str(len(body))} if known_length else {}
    mocked.post(URL_GEN, body=body, headers=headers)
    async with HttpImageClient(BASE, None, timeout_s=5, max_response_bytes=len(body) - 1) as client:
        error = await failure(client)
    expected = f"response of {len(body)} bytes is over" if known_length else "response is over"
    assert error.message == f"{expected} the {len(body) - 1}-byte cap"
    assert (error.error_class, error.retryable) == (ErrorClass.INVALID_RESPONSE, False)


@pytest.mark.parametrize("known_length", [True, False])
async def test_an_answer_of_exactly_the_cap_is_read(mocked: MockedApi, known_length: bool) -> None:
    body = orjson.dumps(b64_payload(png_bytes()))
    headers = {"Content-Length": str(len(body))} if known_length else {}
    mocked.post(URL_GEN, body=body, headers=headers)
    async with HttpImageClient(BASE, None, timeout_s=5, max_response_bytes=len(body)) as client:
        assert (await client.generate(BODY, "k")).images[0].data == png_bytes()


class LinkServer:
    """Image links on 127.0.0.1, for what aioresponses cannot show: the resolver, the
    connection limit and the timeout of the download session itself."""

    def __init__(self) -> None:
        self.agents: list[str] = []
        self.arrived = 0
        self.both = asyncio.Event()
        self.done = asyncio.Event()  # set at the end, so that no handler outlives its test
        self.app = web.Application(client_max_size=8 << 20)  # room for a body over a megabyte
        self.app.router.add_get("/img", self.image)
        self.app.router.add_get("/pair/{n}", self.pair)
        self.app.router.add_get("/many/{n}", self.many)
        self.many_at_once = 0  # how many ``/many`` requests must be in flight before any is answered
        self.all_in = asyncio.Event()
        self.seen: list[str] = []  # each request's URL: absolute when it came through as a proxy
        self.app.router.add_get("/hang", self.hang)
        self.app.router.add_post("/v1/images/generations", self.generate)
        self.app.router.add_post("/big/v1/images/generations", self.big)
        self.app.router.add_post("/many/v1/images/generations", self.many_generations)
        self.app.router.add_post("/hang/v1/images/generations", self.hang)
        self.asked: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.runner = web.AppRunner(self.app)
        self.port = 0

    async def image(self, request: web.Request) -> web.Response:
        self.agents.append(request.headers.get("User-Agent", ""))
        self.seen.append(str(request.url))
        return web.Response(body=png_bytes(), content_type="image/png")

    async def pair(self, request: web.Request) -> web.Response:
        self.arrived += 1
        if self.arrived == 2:
            self.both.set()
        await self.both.wait()  # answers only once both requests are in flight at once
        return web.Response(body=png_bytes(), content_type="image/png")

    async def many(self, request: web.Request) -> web.Response:
        self.arrived += 1
        if self.arrived == self.many_at_once:
            self.all_in.set()
        await self.all_in.wait()
        return web.Response(body=png_bytes(), content_type="image/png")

    async def many_generations(self, request: web.Request) -> web.Response:
        await self.many(request)
        return web.json_response(b64_payload(png_bytes()))

    async def generate(self, request: web.Request) -> web.Response:
        self.asked.append(dict(request.headers))
        self.bodies.append(await request.read())
        return web.json_response(b64_payload(png_bytes()))

    async def big(self, request: web.Request) -> web.StreamResponse:
        """An answer of several megabytes, chunked: no Content-Length."""
        body = orjson.dumps({**b64_payload(png_bytes()), "padding": "x" * (3 << 20)})
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        for start in range(0, len(body), 1 << 16):
            await answer.write(body[start : start + (1 << 16)])
        await answer.write_eof()
        return answer

    async def hang(self, request: web.Request) -> web.Response:
        await self.done.wait()
        return web.Response(status=204)


@pytest.fixture
async def links() -> AsyncIterator[LinkServer]:
    server = LinkServer()
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0)
    await site.start()
    server.port = server.runner.addresses[0][1]
    yield server
    server.done.set()
    server.both.set()
    server.all_in.set()
    await server.runner.cleanup()


PUBLIC = "93.184.216.34"  # a link's host when the link server stands in for the company's proxy


def through(links: LinkServer, *, proxied: bool, timeout_s: float = 5.0) -> tuple[HttpImageClient, str]:
    """A client that fetches links straight from the link server, or through it as the proxy
    (named by a private host name, as a company's proxy often is); and where its links are."""
    if not proxied:
        policy = DownloadPolicy(timeout_s=timeout_s, allow_loopback=True)
        return HttpImageClient(BASE, None, timeout_s=5, download=policy), f"http://127.0.0.1:{links.port}"
    proxy = f"http://localhost:{links.port}"
    client = HttpImageClient(
        BASE, None, timeout_s=5, download=DownloadPolicy(timeout_s=timeout_s), proxies=Proxies(proxy, proxy)
    )
    return client, f"http://{PUBLIC}"


async def test_a_proxy_named_by_a_private_host_name_fetches_the_links(links: LinkServer) -> None:
    # The link's host is checked (public); the proxy's own address is the company's business.
    client, where = through(links, proxied=True)
    async with client:
        image = await client.download(f"{where}/img")
    assert image.data == png_bytes()
    assert links.seen == [f"http://{PUBLIC}/img"]  # asked of the proxy, as an absolute URL


@pytest.mark.parametrize("proxied", [False, True], ids=["straight", "through a proxy"])
async def test_more_links_at_once_than_aiohttps_default_connection_limit(
    links: LinkServer, proxied: bool
) -> None:
    # The job's concurrency bounds the fetches; the session must not queue them below it.
    links.many_at_once = 101
    client, where = through(links, proxied=proxied)
    async with client, asyncio.timeout(10):
        got = await asyncio.gather(*(client.download(f"{where}/many/{n}") for n in range(101)))
    assert [image.data for image in got] == [png_bytes()] * 101


async def test_a_link_by_name_goes_through_the_resolver_that_allows_the_relays_loopback(
    links: LinkServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with HttpImageClient(f"http://127.0.0.1:{links.port}/v1", None, timeout_s=5) as client:
        image = await client.download(f"http://localhost:{links.port}/img")
    assert image.data == png_bytes()
    assert links.agents == [client_module.USER_AGENT]
    assert caplog.records == []  # plain http on loopback is no one else's to read


async def test_links_are_fetched_side_by_side_not_one_at_a_time(links: LinkServer) -> None:
    async with HttpImageClient(f"http://127.0.0.1:{links.port}/v1", None, timeout_s=5) as client:
        async with asyncio.timeout(5):
            both = await asyncio.gather(
                *(client.download(f"http://localhost:{links.port}/pair/{n}") for n in range(2))
            )
    assert [image.data for image in both] == [png_bytes()] * 2


@pytest.mark.parametrize("proxied", [False, True], ids=["straight", "through a proxy"])
async def test_a_link_that_never_answers_fails_in_the_download_timeout(
    links: LinkServer, proxied: bool
) -> None:
    client, where = through(links, proxied=proxied, timeout_s=0.05)
    async with client, asyncio.timeout(5):
        error = await download_failure(client, f"{where}/hang")
    assert (error.message, error.retryable) == ("image url could not be fetched: no answer in time", True)


@pytest.mark.parametrize("key", [CANARY_KEY, None])
async def test_the_relay_is_sent_the_key_and_json_under_batchgens_name(
    links: LinkServer, key: str | None
) -> None:
    relay = f"http://127.0.0.1:{links.port}/v1"
    async with HttpImageClient(relay, Secret(key) if key else None, timeout_s=5) as client:
        assert (await client.generate(BODY, "idem-7")).images
    (headers,) = links.asked
    assert headers.get("Authorization") == (f"Bearer {key}" if key else None)
    assert headers["User-Agent"] == client_module.USER_AGENT
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "idem-7"


async def test_more_requests_at_once_than_aiohttps_default_connection_limit(links: LinkServer) -> None:
    # The job's concurrency bounds the requests; the session must not queue them below it.
    links.many_at_once = 101
    async with HttpImageClient(f"http://127.0.0.1:{links.port}/many/v1", None, timeout_s=5) as client:
        async with asyncio.timeout(10):
            got = await asyncio.gather(*(client.generate(BODY, f"k{n}") for n in range(101)))
    assert [answer.images[0].data for answer in got] == [png_bytes()] * 101


async def test_a_relay_that_never_answers_fails_in_the_jobs_timeout_perhaps_billed(links: LinkServer) -> None:
    async with HttpImageClient(f"http://127.0.0.1:{links.port}/hang/v1", None, timeout_s=0.5) as client:
        async with asyncio.timeout(5):
            error = await failure(client)
    assert (error.error_class, error.message) == (ErrorClass.TIMEOUT, "timed out waiting for the service")
    assert error.sent  # the request went out: the relay may be making (and billing) the image


@pytest.mark.parametrize("timeout_s", [0.2, 60.0], ids=["short", "long"])
async def test_a_relay_that_never_accepts_the_connection_fails_as_never_sent(timeout_s: float) -> None:
    """Told apart from a request that went out and had no answer: whatever the job's timeout,
    connecting gives up first, and an attempt that never left is not counted as perhaps billed."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        # One connection waiting to be accepted fills the queue: the kernel drops the next ones' SYN.
        with socket.create_connection(("127.0.0.1", port)):
            client = HttpImageClient(
                f"http://127.0.0.1:{port}/v1", None, timeout_s=timeout_s, connect_timeout_s=0.2
            )
            async with client, asyncio.timeout(5):
                error = await failure(client)
    assert (error.error_class, error.message) == (
        ErrorClass.TIMEOUT,
        "could not connect to the service in time",
    )
    assert not error.sent


async def test_a_client_used_outside_its_block_says_how_to_use_it() -> None:
    with pytest.raises(AssertionError, match=r"^use HttpImageClient as an async context manager$"):
        await HttpImageClient(BASE, None, timeout_s=5).generate(BODY, "k")


async def test_a_body_over_a_megabyte_reaches_the_relay_whole(links: LinkServer) -> None:
    # Large bodies (references inlined as data URIs) are streamed rather than handed over whole.
    big = {**BODY, "extra_fields": {"reference_images": ["data:image/png;base64," + "A" * (1 << 21)]}}
    async with HttpImageClient(f"http://127.0.0.1:{links.port}/v1", None, timeout_s=5) as client:
        assert (await client.generate(big, "k")).images
    (sent,) = links.bodies
    assert orjson.loads(sent) == big


async def test_an_answer_streamed_in_many_pieces_is_read_whole(links: LinkServer) -> None:
    # No Content-Length (chunked): read piece by piece up to the cap, every piece kept.
    async with HttpImageClient(f"http://127.0.0.1:{links.port}/big/v1", None, timeout_s=5) as client:
        assert (await client.generate(BODY, "k")).images[0].data == png_bytes()
