"""A stand-in for the relay: a real aiohttp server on 127.0.0.1 (README "The simulator").

It imitates the real relay, not an idealised one (README "The real service"):
it reads reference images only under ``extra_fields.reference_images`` and
draws them into the picture it returns, answers with ``b64_json``, an inline
``data:`` URI or a link, refuses in Gemini's words, runs out of quota, gives
up like a proxy after the work was done, and answers 413 over a body limit.

Faults are reproducible: each request's fate is drawn from a random generator
seeded with (seed, Idempotency-Key, attempt number), so it does not depend on
the order requests arrive in. A prompt can also ask for a fault:
``[sim:safety]`` always refuses; ``[sim:500*2]`` fails the first two attempts.
It is a server, not a client, so it is the one other module that imports aiohttp.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pybase64
from aiohttp import web

from batchgen.manifest import provider
from batchgen.sim import images
from batchgen.sim.settings import ALL_FAULTS, RESPONSE_SHAPES, TRANSIENT_FAULTS, SimulatorConfig

__all__ = [
    "ALL_FAULTS",
    "RESPONSE_SHAPES",
    "TRANSIENT_FAULTS",
    "Simulator",
    "SimulatorConfig",
    "serve_forever",
]

# Where the relay reads reference images; any other key is ignored, as the real service does.
REFERENCE_KEY = "reference_images"
KNOWN_EXTRA = ("image_size", "aspect_ratio", REFERENCE_KEY)
_DIRECTIVE = re.compile(r"\[sim:([a-z0-9_]+)(?:\*(\d+))?\]")
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
_PAGES = {
    "502": (502, "502 Bad Gateway", "nginx"),
    "504": (504, "504 Gateway Time-out", "openresty"),
    "524": (524, "524: A timeout occurred", "cloudflare"),
    "413": (413, "413 Request Entity Too Large", "nginx"),
}
BILLED_FAULTS = frozenset({"504", "524", "deadlink", "flakylink"})


@dataclass
class SimulatorStats:
    requests: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    by_prompt: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    downloads: int = 0
    failed_downloads: int = 0
    billed: Counter[str] = field(default_factory=Counter)  # per prompt: generations the service did
    references: Counter[str] = field(default_factory=Counter)  # per prompt: references it read
    ignored_fields: Counter[str] = field(default_factory=Counter)  # extra_fields keys it does not know
    arrivals: list[float] = field(default_factory=list)  # monotonic seconds, for rate-limit checks
    bodies: list[dict[str, Any]] = field(default_factory=list)  # with SimulatorConfig.record_bodies

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_key": dict(self.by_key),
            "by_prompt": dict(self.by_prompt),
            "faults": dict(self.faults),
            "downloads": self.downloads,
            "failed_downloads": self.failed_downloads,
            "billed": dict(self.billed),
            "references": dict(self.references),
            "ignored_fields": dict(self.ignored_fields),
        }


class Simulator:
    """``async with Simulator(config) as sim:`` then send to ``sim.base_url``."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self._files: dict[str, tuple[bytes, int]] = {}  # token -> (image, fetches still to fail)
        self._rendered: dict[tuple[Any, ...], bytes] = {}  # pictures with references, by their digests
        # Every Idempotency-Key a prompt came with: a new key is a new take, drawn in another hue,
        # as a real model makes a different picture each time (what a redo is for).
        self._takes: dict[str, list[str]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Called with the running request count on each request: lets a test act at a chosen point.
        self.on_request: Callable[[int], None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/images/generations", self._generate)
        app.router.add_get("/files/{token}", self._file)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_get("/_sim/arrivals", self._arrivals)
        return app

    async def __aenter__(self) -> Simulator:
        # A client that hangs up cancels its handler, as with a real server, and shutting
        # down does not wait a minute for answers nobody is waiting for.
        self._runner = web.AppRunner(
            self.app(), handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        assert sockets, "the site listens once started"
        self.port = sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _arrivals(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.arrivals)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        stored = self._files.get(token)
        if stored is None:
            self.stats.failed_downloads += 1
            return web.Response(status=404, text="no such file")
        data, failing = stored
        if failing:
            self._files[token] = (data, failing - 1)
            self.stats.failed_downloads += 1
            return web.Response(status=503, text="<html><title>503 Service Unavailable</title></html>")
        self.stats.downloads += 1
        return web.Response(body=data, content_type="image/png")

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        key = request.headers.get("Idempotency-Key", "")
        arrived = time.monotonic()  # before anything that could wait
        limit = cfg.max_body_mb
        if limit is not None and (request.content_length or 0) > limit * 1024 * 1024:
            # The proxy answers before the relay sees anything: nothing is generated or billed.
            self.stats.faults["413"] += 1
            return _page("413")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        prompt = body.get("prompt")
        if cfg.record_bodies:
            self.stats.bodies.append(body)
        self.stats.requests += 1
        self.stats.arrivals.append(arrived)
        attempt = self.stats.by_key[key] = self.stats.by_key[key] + 1
        if isinstance(prompt, str):
            self.stats.by_prompt[prompt] += 1
        if self.on_request is not None:
            self.on_request(self.stats.requests)
        if cfg.api_key is not None and request.headers.get("Authorization") != f"Bearer {cfg.api_key}":
            return _error(401, "无效的令牌", "new_api_error")
        if not isinstance(prompt, str) or not prompt.strip():
            return _error(400, "prompt is required", "invalid_request_error")
        if cfg.latency_ms:
            await asyncio.sleep(cfg.latency_ms / 1000)
        fault = self._fault_for(prompt, key, attempt)
        if fault is not None:
            self.stats.faults[fault] += 1
            if fault in BILLED_FAULTS:
                self.stats.billed[prompt] += 1
            if fault in ("deadlink", "flakylink"):
                fails = -1 if fault == "deadlink" else cfg.link_failures
                return await self._success(body, prompt, key, link_fails=fails)
            return await self._inject(fault, request)
        self.stats.billed[prompt] += 1
        return await self._success(body, prompt, key)

    def _fault_for(self, prompt: str, key: str, attempt: int) -> str | None:
        directive = _DIRECTIVE.search(prompt)
        if directive:
            kind, times = directive.group(1), directive.group(2)
            if kind in ALL_FAULTS and (times is None or attempt <= int(times)):
                return kind
            return None
        rng = random.Random(f"{self.config.seed}|{key or prompt}|{attempt}")
        if self.config.faults and rng.random() < self.config.fault_rate:
            return rng.choice(self.config.faults)
        return None

    async def _inject(self, fault: str, request: web.Request) -> web.StreamResponse:
        if fault in _ERRORS:
            status, message, kind, code = _ERRORS[fault]
            headers = {"Retry-After": str(self.config.retry_after_s)} if fault == "429" else None
            return _error(status, message, kind, headers, code)
        if fault in _PAGES:
            return _page(fault)
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
                body=b'{"created": 1, "data": [{"b64_json": "iVBORw0K',
                content_type="application/json",
            )
        if fault == "badb64":
            return web.json_response({"created": 1, "data": [{"b64_json": "not*base64!"}]})
        if fault == "notimage":
            text = pybase64.b64encode(b"this is not an image").decode()
            return web.json_response({"created": 1, "data": [{"b64_json": text}]})
        if fault == "empty":
            return web.json_response({"created": 1, "data": []})
        if fault == "slow":
            await asyncio.sleep(self.config.slow_ms / 1000)
            return _page("504")
        raise AssertionError(f"unhandled fault {fault}")

    async def _success(
        self, body: dict[str, Any], prompt: str, key: str, link_fails: int = 0
    ) -> web.Response:
        extra = body.get("extra_fields")
        extra = extra if isinstance(extra, dict) else {}
        for name in extra:
            if name not in KNOWN_EXTRA:
                self.stats.ignored_fields[str(name)] += 1
        size = str(body.get("size") or provider.DEFAULT_SIZE)
        image_size = extra.get("image_size")
        image_size = image_size if image_size in provider.IMAGE_SIZES else None
        ratio = extra.get("aspect_ratio")
        ratio = ratio if isinstance(ratio, str) else None
        width, height = provider.dimensions(size, image_size, ratio)
        hue = (images.hue_of(prompt) + self._take(prompt, key)) % 12
        n = body.get("n")
        n = n if isinstance(n, int) and 1 <= n <= 10 else 1
        refs = extra.get(REFERENCE_KEY)
        refs = [r for r in refs if isinstance(r, str)] if isinstance(refs, list) else []
        self.stats.references[prompt] += len(refs)
        shape = self.config.response
        if shape == "asked":
            shape = "url" if body.get("response_format") == "url" else "b64"
        if link_fails:
            shape = "url"
        if not refs and shape != "url":
            # Rendering a new image size takes ~100 ms of zlib (which releases the GIL): in a
            # thread, so a cache miss never stalls the other requests.
            payload = await asyncio.to_thread(
                images.b64_response, width, height, hue, self.config.payload_kb, n, shape == "dataurl"
            )
            return web.Response(body=payload, content_type="application/json")
        picture = await self._picture(width, height, hue, refs)
        if shape == "url":
            entries = [{"url": self._link(picture, link_fails)} for _ in range(n)]
        else:
            b64 = pybase64.b64encode(picture).decode("ascii")
            value = f"data:image/png;base64,{b64}" if shape == "dataurl" else b64
            entries = [{"url" if shape == "dataurl" else "b64_json": value}] * n
        return web.json_response({"created": int(time.time()), "data": entries}, dumps=_dumps)

    def _take(self, prompt: str, key: str) -> int:
        keys = self._takes.setdefault(prompt, [])
        if key not in keys:
            keys.append(key)
        return keys.index(key)

    async def _picture(self, width: int, height: int, hue: int, refs: list[str]) -> bytes:
        payload_kb = self.config.payload_kb
        if not refs:
            return await asyncio.to_thread(images.png, width, height, hue, payload_kb)
        key = (width, height, hue, payload_kb, *(hashlib.sha256(r.encode()).digest() for r in refs))
        found = self._rendered.get(key)
        if found is None:
            found = await asyncio.to_thread(images.with_references, width, height, hue, payload_kb, refs)
            if len(self._rendered) >= 64:
                self._rendered.pop(next(iter(self._rendered)))
            self._rendered[key] = found
        return found

    def _link(self, picture: bytes, fails: int) -> str:
        """A link to ``picture``; ``fails`` fetches of it fail first (-1: every one, a dead link)."""
        token = hashlib.sha256(f"{time.monotonic_ns()}{len(self._files)}".encode()).hexdigest()[:24]
        if fails >= 0:
            if len(self._files) > 256:
                self._files.pop(next(iter(self._files)))
            self._files[token] = (picture, fails)
        return f"http://{self.config.host}:{self.port}/files/{token}"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _page(kind: str) -> web.Response:
    """An error page of the proxy in front, as nginx, openresty or a CDN write them."""
    status, title, server = _PAGES[kind]
    page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
    return web.Response(
        status=status, text=f"{page}<hr><center>{server}</center></body></html>", content_type="text/html"
    )


def _error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None, code: str = ""
) -> web.Response:
    # new-api's shape: {"error": {"message": "... (request id: ...)", "type", "param", "code"}}
    request_id = hashlib.sha256(f"{time.monotonic_ns()}".encode()).hexdigest()[:20]
    error = {"message": f"{message} (request id: {request_id})", "type": kind, "param": "", "code": code}
    return web.json_response({"error": error}, status=status, headers=headers)


async def serve_forever(config: SimulatorConfig, ready: Callable[[str], None]) -> None:
    """Run until cancelled (``batchgen simulator``)."""
    async with Simulator(config) as sim:
        ready(f"simulator listening on {sim.base_url}  (POST /images/generations, GET /_sim/stats)")
        await asyncio.Event().wait()
