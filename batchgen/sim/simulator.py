"""A stand-in for the relay: a real aiohttp server on 127.0.0.1 (docs/simulator.md).

It imitates the real relay, not an idealised one (docs/real-service.md), from the
relay's own tables (``batchgen.relay``): it serves only the models they list, reads
reference images only under their key in ``extra_fields`` and draws them into the
picture it returns, answers with ``b64_json``, an inline ``data:`` URI or a link,
refuses in Gemini's words, runs out of quota, gives up like a proxy after the work
was done, and answers 413 over a body limit.

This module takes the requests; ``faults`` decides each one's fate, reproducibly,
``answers`` draws the successes and ``links`` serves those answered as a link.
It is a server, not a client, so its package is the one other place that imports aiohttp.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from batchgen import relay
from batchgen.sim import answers, faults, images
from batchgen.sim.limit import KeyWindow
from batchgen.sim.links import Links
from batchgen.sim.settings import SimulatorConfig
from batchgen.sim.stats import SimulatorStats

__all__ = ["Simulator", "serve_forever"]


class Simulator:
    """``async with Simulator(config) as sim:`` then send to ``sim.base_url``."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self._links = Links(self.stats)
        self._answers = answers.Answers(self.config.payload_kb, self._links)
        # Every Idempotency-Key a prompt came with: a new key is a new take, drawn in another hue,
        # as a real model makes a different picture each time (what a redo is for).
        self._takes: dict[str, list[str]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Called with the running request count on each request: lets a test act at a chosen point.
        self.on_request: Callable[[int], None] | None = None
        self._limit = KeyWindow(self.config) if self.config.rate_limit is not None else None

    @property
    def base_url(self) -> str:
        return f"{self._origin}/v1"

    @property
    def _origin(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/images/generations", self._generate)
        app.router.add_get("/files/{token}", self._links.serve)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_get("/_sim/arrivals", self._arrivals)
        if self.config.rate_headers:
            app.on_response_prepare.append(self._rate_headers)
        return app

    async def _rate_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if self._limit is not None and request.path.endswith("/images/generations"):
            response.headers.update(self._limit.headers())

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

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        key = request.headers.get("Idempotency-Key", "")
        arrived = time.monotonic()  # before anything that could wait
        limit = cfg.max_body_mb
        if limit is not None and (request.content_length or 0) > limit * 1024 * 1024:
            # The proxy answers before the relay sees anything: nothing is generated or billed.
            self.stats.faults["413"] += 1
            return faults.page("413")
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        prompt = body.get("prompt")
        if cfg.record_bodies:
            self.stats.bodies.append(body)
        attempt = self.stats.count(key, prompt, arrived)
        if self.on_request is not None:
            self.on_request(self.stats.requests)
        if cfg.api_key is not None and request.headers.get("Authorization") != f"Bearer {cfg.api_key}":
            said = relay.ANSWERS["401"]
            return faults.error(said.status, said.message, said.type)
        if not isinstance(prompt, str) or not prompt.strip():
            return faults.error(400, "prompt is required", "invalid_request_error")
        refused = self._limit.arrived() if self._limit is not None else None
        if refused is not None:
            self.stats.throttled += 1
            return refused
        model = body.get("model")
        if isinstance(model, str) and model not in relay.MODELS:
            said = relay.NO_CHANNEL
            return faults.error(said.status, said.message.format(model=model), said.type, code=said.code)
        if cfg.latency_ms:
            await asyncio.sleep(cfg.latency_ms / 1000)
        fault = faults.choose(cfg, prompt, key, attempt)
        if fault is None:
            self.stats.billed[prompt] += 1
            done = await self._success(body, prompt, key)
            if self._limit is not None:
                self._limit.finished(succeeded=True)  # as new-api records it: once the answer is made
            return done
        self.stats.faults[fault] += 1
        if fault in faults.BILLED_FAULTS:
            self.stats.billed[prompt] += 1
        if fault in faults.LINK_FAULTS:
            return await self._success(body, prompt, key, link_fails=faults.link_failures(fault, cfg))
        return await faults.answer(fault, request, cfg)

    async def _success(
        self, body: dict[str, Any], prompt: str, key: str, link_fails: int = 0
    ) -> web.Response:
        asked = answers.read(body, self.config.dropped_fields)
        for name in asked.ignored:
            self.stats.ignored_fields[name] += 1
        self.stats.references[prompt] += len(asked.references)
        take = self._take(prompt, key)
        hue = (images.hue_of(prompt) + take) % 12
        shape = answers.shape_of(self.config.response, asked, link_fails)
        kind = self.config.image_format
        jpeg = kind == "jpeg" or (kind == "alternate" and take % 2 == 1)
        return await self._answers.answer(asked, hue, shape, link_fails, self._origin, jpeg=jpeg)

    def takes(self) -> dict[str, list[str]]:
        """Every Idempotency-Key each prompt came with, in the order they first came."""
        return {prompt: list(keys) for prompt, keys in self._takes.items()}

    def _take(self, prompt: str, key: str) -> int:
        keys = self._takes.setdefault(prompt, [])
        if key not in keys:
            keys.append(key)
        return keys.index(key)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's body, or the relay's 400 when it is not a JSON object."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return faults.error(400, "request body is not JSON", "invalid_request_error")
    if not isinstance(body, dict):
        return faults.error(400, "request body must be a JSON object", "invalid_request_error")
    return body


async def serve_forever(config: SimulatorConfig, ready: Callable[[str], None]) -> None:
    """Run until cancelled (``batchgen simulator``)."""
    async with Simulator(config) as sim:
        ready(f"simulator listening on {sim.base_url}  (POST /images/generations, GET /_sim/stats)")
        await asyncio.Event().wait()
