"""What the nano-banana relay accepts (docs/real-service.md): models, sizes, aspect ratios."""

from __future__ import annotations

import math
import re

KNOWN_MODELS = ("nano-banana-2", "nano-banana-pro")
DEFAULT_MODEL = "nano-banana-2"

IMAGE_SIZES = ("512", "1K", "2K", "4K")
# `size` values the service understands, and the size class each one bills as.
SIZES = {
    "1024x1024": "1K",
    "1024x1792": "1K",
    "1792x1024": "1K",
    "512": "512",
    "1K": "1K",
    "2K": "2K",
    "4K": "4K",
}
DEFAULT_SIZE = "1K"
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# Extra ratios only nano-banana-2 takes.
EXTREME_RATIOS = ("1:4", "4:1", "1:8", "8:1")
KNOWN_EXTRA_FIELDS = ("image_size", "aspect_ratio")
# Keys other tools use for reference images; under any key but api.reference_field they are ignored.
REFERENCE_LIKE_FIELDS = (
    "reference_images",
    "image_urls",
    "images",
    "image",
    "image_url",
    "reference_image",
    "ref_images",
    "input_images",
)

WXH = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")
_LONG_SIDE = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}


def size_class(size: str, image_size: str | None) -> str:
    """The resolution class a request bills as: ``image_size`` wins over ``size``.

    A ``WxH`` the service doesn't know falls back to its default resolution.
    """
    if image_size in _LONG_SIDE:
        return image_size
    return SIZES.get(size, DEFAULT_SIZE)


def dimensions(size: str, image_size: str | None, aspect_ratio: str | None) -> tuple[int, int]:
    """Pixel size the service answers with (what the simulator draws).

    ``image_size`` with ``aspect_ratio`` overrides ``size``; an explicit known
    ``WxH`` is used as is; otherwise the class's square, reshaped to the ratio
    at about the same pixel count.
    """
    if image_size is None and aspect_ratio is None:
        m = WXH.match(size)
        if m and size in SIZES:
            return int(m.group(1)), int(m.group(2))
    side = _LONG_SIDE[size_class(size, image_size)]
    ratio = _parse_ratio(aspect_ratio) if aspect_ratio else None
    if ratio is None:
        m = WXH.match(size)
        ratio = (int(m.group(1)), int(m.group(2))) if m and size in SIZES else (1, 1)
    w, h = ratio
    scale = math.sqrt(side * side / (w * h))
    return max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)


def _parse_ratio(text: str) -> tuple[int, int] | None:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    w, h = int(parts[0]), int(parts[1])
    return (w, h) if w > 0 and h > 0 else None
