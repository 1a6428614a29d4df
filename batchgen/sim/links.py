"""The simulator's links: images answered as a URL, and ``GET /files/{token}`` that serves them."""

from __future__ import annotations

import hashlib
import time

from aiohttp import web

from batchgen.sim import images
from batchgen.sim.stats import SimulatorStats

# Links kept at most, the oldest dropped first: a long simulated run must not hold every picture.
_KEPT = 256


class Links:
    """The pictures handed out as links, each with how many of its fetches are still to fail."""

    def __init__(self, stats: SimulatorStats) -> None:
        self.stats = stats
        self._files: dict[str, tuple[bytes, int]] = {}  # token -> (image, fetches still to fail)

    def add(self, picture: bytes, fails: int) -> str:
        """The token of a link to ``picture``; ``fails`` fetches of it fail first (-1: every one,
        a dead link, which is never stored)."""
        token = hashlib.sha256(f"{time.monotonic_ns()}{len(self._files)}".encode()).hexdigest()[:24]
        if fails >= 0:
            if len(self._files) > _KEPT:
                self._files.pop(next(iter(self._files)))
            self._files[token] = (picture, fails)
        return token

    async def serve(self, request: web.Request) -> web.StreamResponse:
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
        jpeg = data.startswith(images.JPEG_SIGNATURE)
        return web.Response(body=data, content_type="image/jpeg" if jpeg else "image/png")
