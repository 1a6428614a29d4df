"""The simulator's pictures: real PNGs of the requested size, cheap to serve again and again.

Without references a picture is a gradient in one of 12 hues, written by hand
with zlib (fast, and cached whole). With references, the relay's behaviour is
made visible: a strip along the bottom shows a thumbnail of every reference
the simulator read, so an image made without its product photo looks it.
"""

from __future__ import annotations

import binascii
import colorsys
import hashlib
import io
import random
import struct
import threading
import zlib
from collections.abc import Sequence
from functools import lru_cache

import orjson
import pybase64
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def hue_of(prompt: str) -> int:
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:2], 16) % 12


@lru_cache(maxsize=256)
def png(width: int, height: int, hue: int, payload_kb: int) -> bytes:
    """A vertical gradient in one of 12 hues, padded to about ``payload_kb``."""
    # Row by row into the compressor: a 4K picture's 50 MB of pixels are never held at once.
    deflate = zlib.compressobj(6)
    packed = []
    for y in range(height):
        r, g, b = colorsys.hsv_to_rgb(hue / 12, 0.55, 0.95 - 0.5 * y / max(1, height - 1))
        packed.append(deflate.compress(b"\x00" + bytes((int(r * 255), int(g * 255), int(b * 255))) * width))
    packed.append(deflate.flush())
    parts = [
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
        _chunk(b"IDAT", b"".join(packed)),
    ]
    return _padded(PNG_SIGNATURE + b"".join(parts) + _chunk(b"IEND", b""), payload_kb, hue)


@lru_cache(maxsize=256)
def b64_response(width: int, height: int, hue: int, payload_kb: int, n: int, as_data_url: bool) -> bytes:
    """A whole success body, cached: serving 100+ multi-megabyte answers a second costs no encoding."""
    b64 = pybase64.b64encode(png(width, height, hue, payload_kb)).decode("ascii")
    entry = {"url": f"data:image/png;base64,{b64}"} if as_data_url else {"b64_json": b64}
    return orjson.dumps({"created": 1_700_000_000, "data": [entry] * n})


@lru_cache(maxsize=64)
def as_jpeg(picture: bytes) -> bytes:
    """``picture`` (a PNG) as a JPEG, as Gemini may answer; padding is not kept."""
    out = io.BytesIO()
    with Image.open(io.BytesIO(picture)) as image:
        image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


@lru_cache(maxsize=64)
def _gradient(width: int, height: int, hue: int) -> Image.Image:
    low = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(hue / 12, 0.55, 0.45))
    high = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(hue / 12, 0.55, 0.95))
    return ImageOps.colorize(
        Image.linear_gradient("L").resize((width, height)).transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        black=low,
        white=high,
    )


def with_references(width: int, height: int, hue: int, payload_kb: int, references: Sequence[str]) -> bytes:
    """The gradient with a strip of reference thumbnails along the bottom (Pillow; call off the loop)."""
    picture = _gradient(width, height, hue).copy()
    strip = max(16, height // 5)
    pad = max(2, strip // 12)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, height - strip - pad, width, height), fill=(250, 250, 250))
    side = strip - 2 * pad
    x = pad
    for reference in references:
        if x + side > width:
            break
        tile = reference_tile(reference, side)
        picture.paste(tile, (x + (side - tile.width) // 2, height - strip + (side - tile.height) // 2))
        draw.rectangle((x - 1, height - strip - 1, x + side, height - strip + side), outline=(40, 40, 40))
        x += side + pad
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=1)
    return _padded(out.getvalue(), payload_kb, hue)


def reference_tile(reference: str, side: int) -> Image.Image:
    """A thumbnail of a ``data:`` URI reference; a link (not fetched here) is a tile of its own colour.
    The views of one product share their hero: its tile is decoded once."""
    key = (hashlib.sha256(reference.encode()).digest(), side)
    with _TILES_LOCK:
        found = _TILES.get(key)
    if found is None:
        found = _tile(reference, side)
        with _TILES_LOCK:
            _TILES[key] = found
            while len(_TILES) > 256:
                _TILES.pop(next(iter(_TILES)))
    return found


_TILES: dict[tuple[bytes, int], Image.Image] = {}
_TILES_LOCK = threading.Lock()  # rendered in worker threads


def _tile(reference: str, side: int) -> Image.Image:
    if reference.startswith("data:"):
        try:
            raw = pybase64.b64decode(reference.partition(",")[2], validate=True)
            with Image.open(io.BytesIO(raw)) as image:
                image.draft("RGB", (side, side))  # JPEG: decode at a fraction of the size
                return ImageOps.contain(image.convert("RGB"), (side, side))
        except (binascii.Error, ValueError, OSError, UnidentifiedImageError):
            return _crossed(side)
    shade = hashlib.sha256(reference.encode()).digest()
    tile = Image.new("RGB", (side, side), tuple(shade[:3]))
    ImageDraw.Draw(tile).line((0, side, side, 0), fill=(255, 255, 255), width=max(1, side // 16))
    return tile


def _crossed(side: int) -> Image.Image:
    tile = Image.new("RGB", (side, side), (200, 200, 200))
    draw = ImageDraw.Draw(tile)
    draw.line((0, 0, side, side), fill=(200, 0, 0), width=max(1, side // 16))
    draw.line((0, side, side, 0), fill=(200, 0, 0), width=max(1, side // 16))
    return tile


def _padded(data: bytes, payload_kb: int, seed: int) -> bytes:
    """Grows a PNG to about ``payload_kb`` with an ancillary, private chunk that decoders skip."""
    missing = payload_kb * 1024 - len(data) - 12
    if missing <= 12:
        return data
    end = len(data) - 12  # IEND is always the last 12 bytes
    return data[:end] + _chunk(b"pdNg", random.Random(seed).randbytes(missing)) + data[end:]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
