"""The simulator's faults: which one a request meets, and the answer that carries it.

A request's fate is drawn from a random generator seeded with (seed, Idempotency-Key, attempt
number), so it does not depend on the order requests arrive in. A prompt can also ask for a
fault: ``[sim:safety]`` always refuses; ``[sim:500*2]`` fails the first two attempts.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time

import pybase64
from aiohttp import web

from batchgen.sim.settings import ALL_FAULTS, SimulatorConfig

_DIRECTIVE = re.compile(r"\[sim:([a-z0-9_]+)(?:\*(\d+))?\]")
# Each in the relay's words: status, message, error type, error code.
_ERRORS: dict[str, tuple[int, str, str, str]] = {
    "429": (429, "Rate limit reached for requests", "rate_limit_exceeded", ""),
    "500": (500, "internal server error", "server_error", ""),
    "503": (503, "the model is overloaded", "server_error", ""),
    "safety": (500, "chat response contains no choices", "upstream_error", ""),
    "no_image": (500, "no base64 image found in response", "upstream_error", ""),
    "upload": (500, "failed to upload image", "upstream_error", ""),
    "400": (400, "invalid size", "invalid_request_error", ""),
    "401": (401, "无效的令牌", "new_api_error", ""),
    "403": (403, "this key may not use this model", "new_api_error", ""),
    "blocked": (400, "request blocked by Gemini API: PROHIBITED_CONTENT", "prompt_blocked", "prompt_blocked"),
    "image_safety": (
        500,
        "upstream returned no image: finishReason=IMAGE_SAFETY",
        "upstream_error",
        "empty_response",
    ),
    "no_images": (500, "no images generated", "new_api_error", "empty_response"),
    "quota": (
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    ),
    "token_exhausted": (401, "该令牌额度已用尽 TokenStatusExhausted[sk-abc***xyz]", "new_api_error", ""),
    "user_quota": (403, "用户额度不足, 剩余额度: ＄0.000000", "new_api_error", "insufficient_user_quota"),  # noqa: RUF001
}
# The proxy's pages: status, title, server.
_PAGES = {
    "502": (502, "502 Bad Gateway", "nginx"),
    "504": (504, "504 Gateway Time-out", "openresty"),
    "524": (524, "524: A timeout occurred", "cloudflare"),
    "413": (413, "413 Request Entity Too Large", "nginx"),
}
BILLED_FAULTS = frozenset({"504", "524", "deadlink", "flakylink"})
# Successes whose link fails: answered with the picture, not by ``answer``.
LINK_FAULTS = frozenset({"deadlink", "flakylink"})


def choose(config: SimulatorConfig, prompt: str, key: str, attempt: int) -> str | None:
    """The fault this attempt meets, or None: the prompt's directive if it has one, else the draw."""
    directive = _DIRECTIVE.search(prompt)
    if directive:
        kind, times = directive.group(1), directive.group(2)
        if kind in ALL_FAULTS and (times is None or attempt <= int(times)):
            return kind
        return None
    rng = random.Random(f"{config.seed}|{key or prompt}|{attempt}")
    if config.faults and rng.random() < config.fault_rate:
        return rng.choice(config.faults)
    return None


def link_failures(fault: str, config: SimulatorConfig) -> int:
    """How many fetches of a link fault's link fail first; -1: every one (a dead link)."""
    return -1 if fault == "deadlink" else config.link_failures


async def answer(fault: str, request: web.Request, config: SimulatorConfig) -> web.StreamResponse:
    """The answer of a fault other than a link fault; ``drop`` and ``cut`` close the connection."""
    if fault in _ERRORS:
        status, message, kind, code = _ERRORS[fault]
        headers = {"Retry-After": str(config.retry_after_s)} if fault == "429" else None
        return error(status, message, kind, headers, code)
    if fault in _PAGES:
        return page(fault)
    if fault == "html":
        return web.Response(
            status=200, text="<html><body>Please wait</body></html>", content_type="text/html"
        )
    if fault == "filtered":
        return web.json_response({"error": {"message": "finish_reason: content_filter", "type": "stop"}})
    if fault == "drop":
        assert request.transport is not None
        request.transport.close()
        raise web.HTTPServiceUnavailable()  # never reaches the client: the socket is gone
    if fault == "cut":
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 4096
        await resp.prepare(request)
        await resp.write(b'{"created": 1, "data": [{"b64_json": "iVBORw0KGgo')
        assert request.transport is not None
        request.transport.close()
        return resp
    if fault == "truncated":
        return web.Response(
            body=b'{"created": 1, "data": [{"b64_json": "iVBORw0K', content_type="application/json"
        )
    if fault == "badb64":
        return web.json_response({"created": 1, "data": [{"b64_json": "not*base64!"}]})
    if fault == "notimage":
        text = pybase64.b64encode(b"this is not an image").decode()
        return web.json_response({"created": 1, "data": [{"b64_json": text}]})
    if fault == "empty":
        return web.json_response({"created": 1, "data": []})
    if fault == "slow":
        await asyncio.sleep(config.slow_ms / 1000)
        return page("504")
    raise AssertionError(f"unhandled fault {fault}")


def page(kind: str) -> web.Response:
    """An error page of the proxy in front, as nginx, openresty or a CDN write them."""
    status, title, server = _PAGES[kind]
    head = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
    return web.Response(
        status=status, text=f"{head}<hr><center>{server}</center></body></html>", content_type="text/html"
    )


def error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None, code: str = ""
) -> web.Response:
    # new-api's shape: {"error": {"message": "... (request id: ...)", "type", "param", "code"}}
    request_id = hashlib.sha256(f"{time.monotonic_ns()}".encode()).hexdigest()[:20]
    detail = {"message": f"{message} (request id: {request_id})", "type": kind, "param": "", "code": code}
    return web.json_response({"error": detail}, status=status, headers=headers)
