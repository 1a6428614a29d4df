"""A stand-in for the image service: a real aiohttp server on 127.0.0.1 (SPEC §6).

It speaks SPEC §1's contract with valid PNGs of the requested size class and
injects faults, reproducibly: each request's fate is drawn from a random
generator seeded with (seed, Idempotency-Key, attempt number), so it does not
depend on the order requests arrive in. A prompt can also ask for a fault:
``[sim:safety]`` always refuses; ``[sim:500*2]`` fails the first two attempts.
It is a server, not a client, so it is the one other module that imports aiohttp.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import random
import re
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
import pybase64
from aiohttp import web

from . import provider

# Faults a random draw picks from: the ones a healthy client recovers from by retrying.
TRANSIENT_FAULTS = ("429", "500", "502", "503", "drop", "cut", "truncated")
ALL_FAULTS = (
    *TRANSIENT_FAULTS,
    "safety",
    "no_image",
    "upload",
    "400",
    "401",
    "403",
    "html",
    "badb64",
    "notimage",
    "empty",
    "slow",
)
_DIRECTIVE = re.compile(r"\[sim:([a-z0-9_]+)(?:\*(\d+))?\]")
_ERRORS: dict[str, tuple[int, str, str]] = {
    "429": (429, "Rate limit reached for requests", "rate_limit_exceeded"),
    "500": (500, "internal server error", "server_error"),
    "503": (503, "the model is overloaded", "server_error"),
    "safety": (500, "chat response contains no choices", "upstream_error"),
    "no_image": (500, "no base64 image found in response", "upstream_error"),
    "upload": (500, "failed to upload image", "upstream_error"),
    "400": (400, "invalid size", "invalid_request_error"),
    "401": (401, "Incorrect API key provided", "invalid_api_key"),
    "403": (403, "this key may not use this model", "permission_denied"),
}


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = TRANSIENT_FAULTS
    seed: int = 0
    payload_kb: int = 0  # pad each PNG to about this size; 0: the bare image
    retry_after_s: int = 1
    slow_ms: float = 10_000.0  # how long a "slow" fault stalls
    api_key: str | None = None  # when set, any other key gets 401

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(ALL_FAULTS)}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, not {self.fault_rate}")


@dataclass
class SimulatorStats:
    requests: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    by_prompt: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    downloads: int = 0
    arrivals: list[float] = field(default_factory=list)  # monotonic seconds, for rate-limit checks

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_key": dict(self.by_key),
            "by_prompt": dict(self.by_prompt),
            "faults": dict(self.faults),
            "downloads": self.downloads,
        }


class Simulator:
    """``async with Simulator(config) as sim:`` then send to ``sim.base_url``."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self._files: dict[str, bytes] = {}
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

    async def _file(self, request: web.Request) -> web.Response:
        data = self._files.get(request.match_info["token"])
        if data is None:
            return web.Response(status=404, text="no such file")
        self.stats.downloads += 1
        return web.Response(body=data, content_type="image/png")

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        key = request.headers.get("Idempotency-Key", "")
        try:
            arrived = time.monotonic()  # before anything that could wait
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        prompt = body.get("prompt")
        self.stats.requests += 1
        self.stats.arrivals.append(arrived)
        attempt = self.stats.by_key[key] = self.stats.by_key[key] + 1
        if isinstance(prompt, str):
            self.stats.by_prompt[prompt] += 1
        if self.on_request is not None:
            self.on_request(self.stats.requests)
        if cfg.api_key is not None and request.headers.get("Authorization") != f"Bearer {cfg.api_key}":
            return _error(401, "Incorrect API key provided", "invalid_api_key")
        if not isinstance(prompt, str) or not prompt.strip():
            return _error(400, "prompt is required", "invalid_request_error")
        if cfg.latency_ms:
            await asyncio.sleep(cfg.latency_ms / 1000)
        fault = self._fault_for(prompt, key, attempt)
        if fault is not None:
            self.stats.faults[fault] += 1
            return await self._inject(fault, request)
        return await self._success(body, prompt, request)

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
            status, message, kind = _ERRORS[fault]
            headers = {"Retry-After": str(self.config.retry_after_s)} if fault == "429" else None
            return _error(status, message, kind, headers)
        if fault == "502":
            page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
            return web.Response(status=502, text=page, content_type="text/html")
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
            return _error(504, "upstream timed out", "server_error")
        raise AssertionError(f"unhandled fault {fault}")

    async def _success(self, body: dict[str, Any], prompt: str, request: web.Request) -> web.Response:
        extra = body.get("extra_fields")
        extra = extra if isinstance(extra, dict) else {}
        size = str(body.get("size") or provider.DEFAULT_SIZE)
        image_size = extra.get("image_size")
        image_size = image_size if image_size in provider.IMAGE_SIZES else None
        ratio = extra.get("aspect_ratio")
        ratio = ratio if isinstance(ratio, str) else None
        width, height = provider.dimensions(size, image_size, ratio)
        hue = int(hashlib.sha256(prompt.encode()).hexdigest()[:2], 16) % 12
        n = body.get("n")
        n = n if isinstance(n, int) and 1 <= n <= 10 else 1
        if body.get("response_format") == "url":
            # Rendering a new image size takes ~100 ms of zlib (which releases the GIL): in a
            # thread, so a cache miss never stalls the other requests.
            png = await asyncio.to_thread(_png, width, height, hue, self.config.payload_kb)
            entries = []
            for _ in range(n):
                token = hashlib.sha256(f"{time.monotonic_ns()}{len(self._files)}".encode()).hexdigest()[:24]
                if len(self._files) > 256:
                    self._files.pop(next(iter(self._files)))
                self._files[token] = png
                entries.append({"url": f"http://{self.config.host}:{self.port}/files/{token}"})
            return web.json_response({"created": int(time.time()), "data": entries})
        payload = await asyncio.to_thread(_b64_response, width, height, hue, self.config.payload_kb, n)
        return web.Response(body=payload, content_type="application/json")


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status, headers=headers)


@lru_cache(maxsize=256)
def _b64_response(width: int, height: int, hue: int, payload_kb: int, n: int) -> bytes:
    # Cached whole: serving 100+ multi-megabyte answers a second must cost no encoding.
    b64 = pybase64.b64encode(_png(width, height, hue, payload_kb)).decode("ascii")
    return orjson.dumps({"created": 1_700_000_000, "data": [{"b64_json": b64}] * n})


@lru_cache(maxsize=256)
def _png(width: int, height: int, hue: int, payload_kb: int) -> bytes:
    """A real PNG: a vertical gradient in one of 12 hues, padded with a private chunk."""
    rows = []
    for y in range(height):
        r, g, b = colorsys.hsv_to_rgb(hue / 12, 0.55, 0.95 - 0.5 * y / max(1, height - 1))
        rows.append(b"\x00" + bytes((int(r * 255), int(g * 255), int(b * 255))) * width)
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
        _chunk(b"IDAT", zlib.compress(b"".join(rows), 6)),
    ]
    size = sum(len(p) for p in parts) + 12
    if payload_kb * 1024 > size + 12:
        # An ancillary, private, safe-to-copy chunk: decoders skip it.
        parts.append(_chunk(b"pdNg", random.Random(hue).randbytes(payload_kb * 1024 - size - 12)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


async def serve_forever(config: SimulatorConfig, ready: Callable[[str], None]) -> None:
    """Run until cancelled (``batchgen simulator``)."""
    async with Simulator(config) as sim:
        ready(f"simulator listening on {sim.base_url}  (POST /images/generations, GET /_sim/stats)")
        await asyncio.Event().wait()
