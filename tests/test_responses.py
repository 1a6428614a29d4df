"""What a response means: classification by message and status, Retry-After, success bodies."""

from __future__ import annotations

import email.utils
import time

import orjson
import pybase64
import pytest

from batchgen.errors import ErrorClass, RequestError
from batchgen.service.responses import (
    MAX_MESSAGE,
    classify,
    describe_body,
    error_from_response,
    parse_retry_after,
    parse_success,
    parse_success_fast,
)

from .conftest import png_bytes


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        # The provider's documented messages arrive with 500 and are classified by message.
        (500, "chat response contains no choices", ErrorClass.SAFETY_FILTER),
        (500, "upstream: Chat Response Contains No Choices", ErrorClass.SAFETY_FILTER),
        (500, "no base64 image found in response", ErrorClass.NO_IMAGE),
        (500, "failed to upload image", ErrorClass.SERVER_ERROR),
        (400, "Your request was rejected by our content_policy", ErrorClass.SAFETY_FILTER),
        (400, "content_policy_violation", ErrorClass.SAFETY_FILTER),
        (400, "rejected by moderation", ErrorClass.SAFETY_FILTER),
        (400, "bad size", ErrorClass.INVALID_REQUEST),
        (404, "", ErrorClass.INVALID_REQUEST),
        (413, "", ErrorClass.INVALID_REQUEST),
        (422, "", ErrorClass.INVALID_REQUEST),
        (418, "", ErrorClass.INVALID_REQUEST),
        (401, "", ErrorClass.AUTH),
        (403, "", ErrorClass.AUTH),
        (429, "", ErrorClass.RATE_LIMITED),
        (408, "", ErrorClass.SERVER_ERROR),
        (409, "", ErrorClass.SERVER_ERROR),
        (500, "internal", ErrorClass.SERVER_ERROR),
        (502, "HTML page: 502 Bad Gateway", ErrorClass.SERVER_ERROR),
        (503, "", ErrorClass.SERVER_ERROR),
        (599, "", ErrorClass.SERVER_ERROR),
        (302, "", ErrorClass.INVALID_RESPONSE),
        (499, "", ErrorClass.INVALID_REQUEST),  # nginx's "client closed request": a 4xx like any
        (600, "", ErrorClass.INVALID_RESPONSE),  # not an HTTP status at all, let alone a 5xx
        # Gemini's refusal reasons, as gateways pass them on, whatever the status.
        (400, "request blocked by Gemini API: PROHIBITED_CONTENT prompt_blocked", ErrorClass.SAFETY_FILTER),
        (400, "request blocked by Gemini API: OTHER", ErrorClass.SAFETY_FILTER),
        (500, "upstream error: finishReason=IMAGE_SAFETY", ErrorClass.SAFETY_FILTER),
        (500, "finish_reason: IMAGE_PROHIBITED_CONTENT", ErrorClass.SAFETY_FILTER),
        (500, "blockReason: SAFETY", ErrorClass.SAFETY_FILTER),
        (200, "blockReason BLOCKLIST", ErrorClass.SAFETY_FILTER),
        (500, "finishReason SPII", ErrorClass.SAFETY_FILTER),
        (500, "finishReason: RECITATION", ErrorClass.SAFETY_FILTER),
        (500, "finishReason: IMAGE_RECITATION", ErrorClass.SAFETY_FILTER),
        (400, "the answer was stopped: content_filter", ErrorClass.SAFETY_FILTER),
        (500, "finishReason: NO_IMAGE", ErrorClass.NO_IMAGE),
        (500, "finishReason=IMAGE_OTHER", ErrorClass.NO_IMAGE),
        (500, "No images generated", ErrorClass.NO_IMAGE),
        # Ordinary words are not Gemini's reasons: a 500 that mentions safety in prose is retried.
        (500, "safety-net worker restarted", ErrorClass.SERVER_ERROR),
        (503, "MAX_TOKENS_SAFETYNET overloaded", ErrorClass.SERVER_ERROR),
        # No credit left: stops the job, and is not a rate limit or a bad key.
        (429, "You exceeded your current quota insufficient_quota", ErrorClass.QUOTA_EXHAUSTED),
        (429, "insufficient_quota", ErrorClass.QUOTA_EXHAUSTED),
        (
            401,
            "该令牌额度已用尽 TokenStatusExhausted[sk-abc***xyz] new_api_error",
            ErrorClass.QUOTA_EXHAUSTED,
        ),
        (403, "用户额度不足, 剩余额度: ＄0.001 insufficient_user_quota", ErrorClass.QUOTA_EXHAUSTED),  # noqa: RUF001
        (403, "pre_consume_token_quota_failed", ErrorClass.QUOTA_EXHAUSTED),
        (402, "", ErrorClass.QUOTA_EXHAUSTED),
        (401, "无效的令牌 new_api_error", ErrorClass.AUTH),
        (429, "您已达到请求数限制：1分钟内最多请求60次", ErrorClass.RATE_LIMITED),  # noqa: RUF001
    ],
)
def test_classify(status: int, text: str, expected: ErrorClass) -> None:
    assert classify(status, text) is expected


@pytest.mark.parametrize(
    "message",
    [
        # One phrase per case: each must be enough on its own to make the answer a refusal.
        "Your prompt was flagged",
        "FLAGGED by the upstream",
        "Rejected by the safety system",
        "rejected by our safety filter",
        "request blocked by safety settings",
        "the image contains prohibited content",
        "Content Policy violation",
    ],
)
def test_a_refusal_in_a_500_is_final_not_a_server_error_to_retry(message: str) -> None:
    # Were it a server error it would be sent max_attempts times, and each attempt billed.
    body = orjson.dumps({"error": {"message": message, "type": "upstream_error"}})
    error = error_from_response(500, {}, body)
    assert error.error_class is ErrorClass.SAFETY_FILTER
    assert error.retryable is False


@pytest.mark.parametrize(
    ("error_class", "retryable"),
    [
        (ErrorClass.SAFETY_FILTER, False),
        (ErrorClass.NO_IMAGE, False),
        (ErrorClass.INVALID_REQUEST, False),
        (ErrorClass.AUTH, False),
        (ErrorClass.QUOTA_EXHAUSTED, False),
        (ErrorClass.REFERENCE_ERROR, False),
        (ErrorClass.RATE_LIMITED, True),
        (ErrorClass.SERVER_ERROR, True),
        (ErrorClass.TIMEOUT, True),
        (ErrorClass.CONNECTION, True),
        (ErrorClass.INVALID_RESPONSE, True),
        (ErrorClass.DOWNLOAD_FAILED, False),  # fetched again, never made again
    ],
)
def test_which_classes_are_retried(error_class: ErrorClass, retryable: bool) -> None:
    assert RequestError(error_class, "x").retryable is retryable


@pytest.mark.parametrize(
    ("error_class", "header", "retryable"),
    [
        (ErrorClass.SERVER_ERROR, "false", False),
        (ErrorClass.INVALID_REQUEST, "true", True),
        (ErrorClass.SAFETY_FILTER, "true", False),  # a refusal is final whatever a proxy says
        (ErrorClass.AUTH, "true", False),
    ],
)
def test_x_should_retry_overrides_the_status(error_class: ErrorClass, header: str, retryable: bool) -> None:
    status = {
        ErrorClass.SERVER_ERROR: 500,
        ErrorClass.INVALID_REQUEST: 400,
        ErrorClass.SAFETY_FILTER: 500,
        ErrorClass.AUTH: 401,
    }[error_class]
    message = (
        b'{"error": {"message": "chat response contains no choices"}}'
        if error_class is ErrorClass.SAFETY_FILTER
        else b"{}"
    )
    error = error_from_response(status, {"x-should-retry": header}, message)
    assert error.error_class is error_class
    assert error.retryable is retryable


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b'{"error": {"message": "boom", "type": "server_error"}}', "HTTP 500: boom"),
        (400, b'{"error": "plain string"}', "HTTP 400: plain string"),
        (
            502,
            b"<html><head><title>502 Bad Gateway</title></head></html>",
            "HTTP 502: HTML page: 502 Bad Gateway",
        ),
        (503, b"<!DOCTYPE html><body>down</body>", "HTTP 503: HTML page"),
        (500, b"", "HTTP 500: empty body"),
        (500, b'{"error": {"message": "cut', 'HTTP 500: {"error": {"message": "cut'),
        (500, b'{"error": {"type": "server_error"}}', "HTTP 500: server_error"),  # no message: its type
        (500, b'{"error": {}}', "HTTP 500: error without a message"),
        (500, b'{"error": ""}', "HTTP 500"),
        (500, b'{"message": "no error object around it"}', "HTTP 500: no error object around it"),
        (500, b'["a JSON list"]', 'HTTP 500: ["a JSON list"]'),
        (502, b"<HTML><HEAD><TITLE>Bad\n  Gateway</TITLE></HEAD></HTML>", "HTTP 502: HTML page: Bad Gateway"),
        # A proxy's page in Latin-1, not UTF-8: read, not a crash.
        (
            502,
            b"<html><title>Passerelle d\xe9faillante</title></html>",
            "HTTP 502: HTML page: Passerelle d\ufffdfaillante",
        ),
        (503, b"<html><body>Please wait</body></html>", "HTTP 503: HTML page"),
        (
            413,
            b"<html><head><title>413 Request Entity Too Large</title></head></html>",
            "HTTP 413: HTML page: 413 Request Entity Too Large (the relay or a proxy in front of it refused"
            " the request's size: lower limits.reference_max_mb or api.max_request_mb)",
        ),
    ],
)
def test_error_messages_from_json_html_and_garbage(status: int, body: bytes, message: str) -> None:
    assert error_from_response(status, {}, body).message == message


def test_error_message_is_bounded() -> None:
    error = error_from_response(500, {}, b"x" * 10_000)
    assert len(error.message) < 400


@pytest.mark.parametrize("length", [MAX_MESSAGE - 1, MAX_MESSAGE, MAX_MESSAGE + 1, 10_000])
def test_a_long_message_is_cut_to_the_limit_with_an_ellipsis(length: int) -> None:
    text = "".join(chr(ord("a") + k % 26) for k in range(length))
    message = error_from_response(500, {}, text.encode()).message.removeprefix("HTTP 500: ")
    if length <= MAX_MESSAGE:
        assert message == text
    else:
        assert message == text[: MAX_MESSAGE - 1] + "\u2026"
        assert len(message) == MAX_MESSAGE


@pytest.mark.parametrize(
    ("body", "described"),
    [
        (b'{"error": {"message": "m", "type": "t", "code": "c", "param": "p"}}', ("m", "t c p")),
        (b'{"error": {"message": "m", "type": "t"}}', ("m", "t")),
        (b'{"error": {"message": "m", "code": "insufficient_quota"}}', ("m", "insufficient_quota")),
        (b'{"error": "plain"}', ("plain", "")),
        (b'["a JSON list"]', ('["a JSON list"]', "")),
        (b"<html>down</html>", ("HTML page", "")),
    ],
)
def test_describe_body_gives_the_message_and_the_error_kind(body: bytes, described: tuple[str, str]) -> None:
    # The kind (type, code, param) is what classify reads besides the message.
    assert describe_body(body) == described


def test_an_http_date_retry_after_counts_from_the_clock() -> None:
    soon = email.utils.formatdate(time.time() + 120, usegmt=True)
    wait = parse_retry_after(soon)
    assert wait is not None
    assert 100 < wait <= 120


def b64_body(*payloads: bytes) -> bytes:
    return orjson.dumps(
        {"created": 5, "data": [{"b64_json": pybase64.b64encode(p).decode()} for p in payloads]}
    )


def test_parse_success_decodes_and_sniffs() -> None:
    png = png_bytes()
    parsed = parse_success(b64_body(png, png))
    assert [i.data for i in parsed.images] == [png, png]
    assert parsed.images[0].format.ext == "png"
    assert parsed.created == 5


def test_parse_success_accepts_urls_and_data_uri_b64() -> None:
    png = png_bytes()
    body = orjson.dumps(
        {
            "data": [
                {"url": "https://cdn.test/a.png"},
                {"b64_json": "data:image/png;base64," + pybase64.b64encode(png).decode()},
            ]
        }
    )
    parsed = parse_success(body)
    assert parsed.links == ("https://cdn.test/a.png",)
    assert parsed.images[0].data == png
    assert parsed.created is None


def inline_bodies() -> list[tuple[str, bytes]]:
    b64 = pybase64.b64encode(png_bytes()).decode()
    uri = "data:image/png;base64," + b64
    return [
        ("b64_json", orjson.dumps({"created": 3, "data": [{"b64_json": b64}]})),
        ("b64_json x2", orjson.dumps({"created": 3, "data": [{"b64_json": b64}, {"b64_json": b64}]})),
        ("data: URI in url", orjson.dumps({"created": 3, "data": [{"url": uri}]})),
        ("data: URI in b64_json", orjson.dumps({"created": 3, "data": [{"b64_json": uri}]})),
        ("url and empty b64_json", orjson.dumps({"created": 3, "data": [{"b64_json": "", "url": uri}]})),
        ("url with spaces", b'{"created": 3, "data": [{"url" : "%s"}]}' % uri.encode()),
        (
            "inline and a link",
            orjson.dumps({"created": 3, "data": [{"url": uri}, {"url": "https://cdn.test/b.png"}]}),
        ),
        (
            "a link, then inline",
            orjson.dumps({"created": 3, "data": [{"url": "https://cdn.test/b.png"}, {"b64_json": b64}]}),
        ),
        (
            "null b64_json and a data: URI",
            orjson.dumps({"created": 3, "data": [{"b64_json": None, "url": uri}]}),
        ),
        (
            "escapes before and after",
            orjson.dumps(
                {"created": 3, "data": [{"revised_prompt": 'a "red" tote', "b64_json": b64, "note": "a\tb"}]}
            ),
        ),
        (
            "non-ASCII in a data: URI",
            orjson.dumps({"created": 3, "data": [{"url": "data:image/png;name=\u00e9;base64," + b64}]}),
        ),
        ("a url that is not a string", orjson.dumps({"created": 3, "data": [{"b64_json": b64}, {"url": 7}]})),
        (
            "a data: URI whose header runs past 256 bytes",
            orjson.dumps(
                {"created": 3, "data": [{"url": "data:image/png;" + "q=1;" * 80 + "base64," + b64}]}
            ),
        ),
    ]


@pytest.mark.parametrize(("name", "body"), inline_bodies(), ids=[n for n, _ in inline_bodies()])
def test_the_fast_path_takes_every_inline_shape_and_agrees_with_the_full_parse(
    name: str, body: bytes
) -> None:
    fast = parse_success_fast(body)
    assert fast is not None, "the common shapes must not fall back to parsing megabytes of JSON"
    full = parse_success(body)
    assert fast == full
    assert all(image.data == png_bytes() for image in fast.images)
    assert fast.created == 3
    assert len(fast.images) + len(fast.links) == len(
        [e for e in orjson.loads(body)["data"] if e != {"url": 7}]
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"url": "data:image/png;base64,iVBOR\\/w=="}]}',  # an escape: not sure
        b'{"data": [{"url": "https://cdn.test/a.png"}]}',  # nothing inline
        b'{"data": [{"url": "data:image/png;base64,iVBOR',  # cut off
        b'{"note": {"b64_json": "iVBOR"}, "data": []}',  # outside data
        b'{"data": [{"url": "data:image/png;base64,iVBOR", "b64_json": "iVBOR"}]}',  # two in one
        b'{"error": null, "data": [{"b64_json": "iVBOR"}]}',  # an error key: the full parse judges
        b'[{"b64_json": "iVBOR"}]',  # not an object
    ],
)
def test_the_fast_path_leaves_what_it_is_not_sure_of_to_the_full_parse(body: bytes) -> None:
    assert parse_success_fast(body) is None


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("data:image/png;base64,***", "data[0].url is not valid base64"),
        ("data:image/svg+xml,<svg/>", "not base64"),
        ("data:image/png;base64" + "A" * 400, "data[0].url is a data: URI that is not base64"),  # no comma
        ("data:image/png;base64A", "data[0].url is a data: URI that is not base64"),  # no comma, one past
        # The first comma ends a header longer than the quick look, too; the data has another.
        ("data:image/png;" + "q=1;" * 80 + "base64,AAAA,BBBB", "data[0].url is not valid base64"),
        ("data:text/plain;base64," + pybase64.b64encode(b"hello, no image").decode(), "not a PNG"),
        # RFC 2397: the first comma ends the header, so this one's data is "b;base64,...": not base64.
        (
            "data:image/png;name=a,b;base64," + pybase64.b64encode(png_bytes()).decode(),
            "data[0].url is a data: URI that is not base64",
        ),
    ],
)
def test_bad_data_uris_in_url(uri: str, fragment: str) -> None:
    for parse in (parse_success_fast, parse_success):
        with pytest.raises(RequestError) as caught:
            parse(orjson.dumps({"data": [{"url": uri}]}))
        assert caught.value.error_class is ErrorClass.INVALID_RESPONSE
        assert fragment in caught.value.message
        assert caught.value.http_status == 200


def test_a_bad_image_is_named_by_its_place_in_the_answer() -> None:
    good = pybase64.b64encode(png_bytes()).decode()
    body = orjson.dumps({"data": [{"b64_json": good}, {"b64_json": "***"}]})
    for parse in (parse_success_fast, parse_success):
        with pytest.raises(RequestError) as caught:
            parse(body)
        assert "data[1].b64_json is not valid base64" in caught.value.message


def test_an_error_key_beside_images_is_not_an_error() -> None:
    # Some gateways add "error": null to every answer.
    body = orjson.dumps({"error": None, "data": [{"b64_json": pybase64.b64encode(png_bytes()).decode()}]})
    assert [image.data for image in parse_success(body).images] == [png_bytes()]


def test_a_created_that_is_not_a_number_is_left_out() -> None:
    body = orjson.dumps(
        {"created": "today", "data": [{"b64_json": pybase64.b64encode(png_bytes()).decode()}]}
    )
    assert parse_success(body).created is None
    fast = parse_success_fast(body)
    assert fast is not None
    assert fast.created is None


@pytest.mark.parametrize(
    ("body", "error_class", "fragment"),
    [
        (b"<html>oops</html>", ErrorClass.INVALID_RESPONSE, "not JSON"),
        (
            b"<html><title>Please wait</title></html>",
            ErrorClass.INVALID_RESPONSE,
            "not JSON (HTML page: Please wait)",
        ),
        (b'{"created": 1, "data": [{"b64_json": "iVBOR', ErrorClass.INVALID_RESPONSE, "not JSON"),
        (b"[]", ErrorClass.INVALID_RESPONSE, "HTTP 200 with JSON that is not an object"),
        (b'{"data": []}', ErrorClass.NO_IMAGE, "the service answered without any image"),
        (b'{"data": "an image"}', ErrorClass.NO_IMAGE, "the service answered without any image"),
        (b'{"created": 1}', ErrorClass.NO_IMAGE, "the service answered without any image"),
        (
            b'{"data": [{"revised_prompt": "x"}]}',
            ErrorClass.NO_IMAGE,
            "the service answered without any image",
        ),
        (b'{"data": [{"url": 7}]}', ErrorClass.NO_IMAGE, "the service answered without any image"),
        (b'{"error": {"message": "odd"}}', ErrorClass.INVALID_RESPONSE, "HTTP 200 with an error: odd"),
        (b'{"data": ["x"]}', ErrorClass.INVALID_RESPONSE, "not an object"),
        (b'{"data": [{"b64_json": "***"}]}', ErrorClass.INVALID_RESPONSE, "not valid base64"),
        (b64_body(b"hello world, not an image"), ErrorClass.INVALID_RESPONSE, "not a PNG"),
        (
            b'{"error": {"message": "chat response contains no choices"}}',
            ErrorClass.SAFETY_FILTER,
            "no choices",
        ),
    ],
)
def test_parse_success_failures(body: bytes, error_class: ErrorClass, fragment: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_success(body)
    assert caught.value.error_class is error_class
    assert fragment in caught.value.message
    assert caught.value.http_status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "HTTP 200 with JSON that is not an object"),
        (b'{"data": []}', "the service answered without any image"),
        (b'{"data": [{"revised_prompt": "x"}]}', "the service answered without any image"),
    ],
)
def test_what_a_useless_200_is_reported_as_word_for_word(body: bytes, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_success(body)
    assert caught.value.message == message
