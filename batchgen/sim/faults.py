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

from batchgen import relay
from batchgen.sim.settings import ALL_FAULTS, SimulatorConfig

_DIRECTIVE = re.compile(r"\[sim:([a-z0-9_]+)(?:\*(\d+))?\]")
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
    said = relay.ANSWERS.get(fault)
    if said is not None and said.status == 200:  # an error in a success's clothes, as gateways send it
        return web.json_response({"error": {"message": said.message, "type": said.type}})
    if said is not None:
        headers = {"Retry-After": str(config.retry_after_s)} if fault == "429" else None
        return error(said.status, said.message, said.type, headers, said.code)
    if fault in _PAGES:
        return page(fault)
    if fault == "html":
        return web.Response(
            status=200, text="<html><body>Please wait</body></html>", content_type="text/html"
        )
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
