"""The simulator's successes: the picture a request asks for, as ``b64_json``, an inline
``data:`` URI or a link.

The relay reads reference images only under its own key in ``extra_fields``
(``relay.REFERENCE_KEY``) and draws them into the picture it returns; any other key it does not
know, it ignores.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64
from aiohttp import web

from batchgen import relay
from batchgen.manifest.sizes import dimensions
from batchgen.sim import images
from batchgen.sim.links import Links

KNOWN_EXTRA = (*relay.EXTRA_FIELDS, relay.REFERENCE_KEY)
# Pictures drawn with references kept at most, the oldest dropped first.
_RENDERED = 64


@dataclass(frozen=True)
class Asked:
    """What a request body asks of the picture, read as leniently as the relay reads it."""

    width: int
    height: int
    n: int
    references: tuple[str, ...]
    wants_url: bool  # response_format "url"
    ignored: tuple[str, ...]  # the extra_fields keys the relay does not know


def read(body: dict[str, Any], drop: tuple[str, ...] = ()) -> Asked:
    """What ``body`` asks for; a field the relay would not understand is left at its default.

    ``drop``: the fields a relay lost on the way (``image_size``, ``aspect_ratio``), so the
    picture is Gemini's default for them, 1K or square, whatever the body says.
    """
    extra = body.get("extra_fields")
    extra = extra if isinstance(extra, dict) else {}
    size = str(body.get("size") or relay.DEFAULT_SIZE)
    image_size = extra.get("image_size")
    image_size = image_size if image_size in relay.IMAGE_SIZES else None
    ratio = extra.get("aspect_ratio")
    ratio = ratio if isinstance(ratio, str) else None
    if "image_size" in drop:  # the class is lost, a WxH size's shape is not
        image_size = None
        size = relay.DEFAULT_SIZE if size in relay.LONG_SIDE else size
    if "aspect_ratio" in drop:
        ratio = relay.DEFAULT_RATIO
    width, height = dimensions(size, image_size, ratio)
    n = body.get("n")
    refs = extra.get(relay.REFERENCE_KEY)
    return Asked(
        width=width,
        height=height,
        n=n if isinstance(n, int) and 1 <= n <= 10 else 1,
        references=tuple(r for r in refs if isinstance(r, str)) if isinstance(refs, list) else (),
        wants_url=body.get("response_format") == "url",
        ignored=tuple(str(name) for name in extra if name not in KNOWN_EXTRA),
    )


def shape_of(configured: str, asked: Asked, link_fails: int) -> str:
    """``b64``, ``dataurl`` or ``url``: as configured, else as asked; a failing link is a link."""
    if link_fails:
        return "url"
    if configured == "asked":
        return "url" if asked.wants_url else "b64"
    return configured


class Answers:
    """Success bodies; the pictures drawn with references are cached by their digests."""

    def __init__(self, payload_kb: int, links: Links) -> None:
        self.payload_kb = payload_kb
        self.links = links
        self._rendered: dict[tuple[Any, ...], bytes] = {}

    async def answer(
        self, asked: Asked, hue: int, shape: str, link_fails: int, origin: str, *, jpeg: bool = False
    ) -> web.Response:
        """The body for ``asked`` in ``shape``, its picture a JPEG if ``jpeg``; a link's fetches
        fail ``link_fails`` times first (-1: every one), and it points at ``origin``."""
        if not asked.references and shape != "url" and not jpeg:
            # Rendering a new image size is zlib work (which releases the GIL): in a thread,
            # so a cache miss never stalls the other requests.
            payload = await asyncio.to_thread(
                images.b64_response,
                asked.width,
                asked.height,
                hue,
                self.payload_kb,
                asked.n,
                shape == "dataurl",
            )
            return web.Response(body=payload, content_type="application/json")
        picture = await self._picture(asked.width, asked.height, hue, asked.references)
        if jpeg:
            picture = await asyncio.to_thread(images.as_jpeg, picture)
        if shape == "url":
            entries = [
                {"url": f"{origin}/files/{self.links.add(picture, link_fails)}"} for _ in range(asked.n)
            ]
        else:
            b64 = pybase64.b64encode(picture).decode("ascii")
            mime = "image/jpeg" if jpeg else "image/png"
            value = f"data:{mime};base64,{b64}" if shape == "dataurl" else b64
            entries = [{"url" if shape == "dataurl" else "b64_json": value}] * asked.n
        return web.json_response({"created": int(time.time()), "data": entries}, dumps=_dumps)

    async def _picture(self, width: int, height: int, hue: int, refs: tuple[str, ...]) -> bytes:
        payload_kb = self.payload_kb
        if not refs:
            return await asyncio.to_thread(images.png, width, height, hue, payload_kb)
        key = (width, height, hue, payload_kb, *(hashlib.sha256(r.encode()).digest() for r in refs))
        found = self._rendered.get(key)
        if found is None:
            found = await asyncio.to_thread(images.with_references, width, height, hue, payload_kb, refs)
            if len(self._rendered) >= _RENDERED:
                self._rendered.pop(next(iter(self._rendered)))
            self._rendered[key] = found
        return found


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
