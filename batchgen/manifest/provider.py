"""The relay's facts (docs/real-service.md): the models, sizes and aspect ratios it accepts,
the pixel sizes Gemini answers with, and the shape each request asks for. The plan, the check of
what arrived and the simulator all read them here."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

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
LONG_SIDE = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}  # each class's nominal long side
# What Gemini answers at 1K for each aspect ratio; 2K and 4K are twice and four times these, 512
# half (README "The real service", docs/real-service.md).
GEMINI_1K = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
_SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}
DEFAULT_RATIO = "1:1"  # what Gemini makes when no aspect ratio reaches it
# The size check (docs/real-service.md, "What arrived: the size check"): an image whose long side
# is under this share of the one asked, or whose aspect is further than this from the one asked,
# is not what was paid for.
SHORT_SIDE_SHARE = 0.75
ASPECT_TOLERANCE_PERCENT = 3


@dataclass(frozen=True, slots=True)
class Shape:
    """What a request asks of the picture: the resolution class it bills as, the aspect ratio
    (width, height) it names by ``aspect_ratio`` or a ``WxH`` size (None when it names none), and
    the pixels Gemini answers it with (None for a ratio its table lacks)."""

    size_class: str
    aspect: tuple[int, int] | None = None
    answered: tuple[int, int] | None = None
    named: str = ""  # the aspect as the request says it: "16:9", "1024x1792"

    def mismatch(self, width: int, height: int) -> bool:
        """An image of ``width`` x ``height`` is not what this asked for: too small for its class,
        or another shape.

        Too small is measured against the class's side (1024 for 1K) or, where longer, the long
        side Gemini answers at that ratio: a 2K 21:9 request answered at 1K (1584 px) is short of
        the 3168 px it should be, though over 0.75 x 2048.
        """
        asked = max((LONG_SIDE[self.size_class], *(self.answered or ())))
        if max(width, height) < SHORT_SIDE_SHARE * asked:
            return True
        if self.aspect is None:
            return False
        aw, ah = self.aspect
        # (width/height) / (aw/ah) - 1, in integers: exact at the boundary.
        return abs(width * ah - height * aw) * 100 > ASPECT_TOLERANCE_PERCENT * height * aw

    def __str__(self) -> str:
        return f"{self.size_class} {self.named}" if self.named else self.size_class


def size_class(size: str, image_size: str | None) -> str:
    """The resolution class a request bills as: ``image_size`` wins over ``size``.

    A ``WxH`` the service doesn't know falls back to its default resolution.
    """
    if image_size in LONG_SIDE:
        return image_size
    return SIZES.get(size, DEFAULT_SIZE)


def requested(size: str, image_size: str | None, aspect_ratio: str | None) -> Shape:
    """The shape a request asks for: its class, its aspect by ``aspect_ratio``, else by a ``WxH``
    size, and the pixels Gemini makes of it."""
    klass = size_class(size, image_size)
    ratio = parse_ratio(aspect_ratio) if aspect_ratio else None
    if ratio is not None and aspect_ratio is not None:
        table = aspect_ratio if aspect_ratio in GEMINI_1K else None
        return Shape(klass, ratio, pixels(klass, table) if table else None, aspect_ratio)
    m = WXH.match(size)
    if m is None:
        return Shape(klass, None, pixels(klass, DEFAULT_RATIO))
    w, h = int(m.group(1)), int(m.group(2))
    return Shape(klass, (w, h), pixels(klass, _nearest_ratio(w, h)), size)


def _nearest_ratio(w: int, h: int) -> str:
    """The ratio of Gemini's table nearest to ``w:h``: what a ``WxH`` size is answered with."""
    return min(GEMINI_1K, key=lambda r: abs(math.log(w / h * GEMINI_1K[r][1] / GEMINI_1K[r][0])))


def pixels(klass: str, ratio: str) -> tuple[int, int]:
    """What Gemini answers for class ``klass`` and one of its aspect ratios (``GEMINI_1K``)."""
    w, h = GEMINI_1K[ratio]
    scale = _SCALE[klass]
    return int(w * scale), int(h * scale)


def dimensions(size: str, image_size: str | None, aspect_ratio: str | None) -> tuple[int, int]:
    """Pixel size the service answers with (what the simulator draws).

    Gemini's size for the class and the ratio asked; a ``WxH`` size gets the ratio nearest to
    it, and a ratio Gemini's table lacks (``1:4``) the class's pixel count at that ratio.
    """
    shape = requested(size, image_size, aspect_ratio)
    if shape.answered is not None:
        return shape.answered
    assert shape.aspect is not None  # only a ratio the table lacks has no answer in it
    w, h = shape.aspect
    side = LONG_SIDE[shape.size_class]
    scale = math.sqrt(side * side / (w * h))
    return max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)


def parse_ratio(text: str) -> tuple[int, int] | None:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    w, h = int(parts[0]), int(parts[1])
    return (w, h) if w > 0 and h > 0 else None
