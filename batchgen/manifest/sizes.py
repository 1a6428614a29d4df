"""The shape each request asks for, the pixels the service answers it with, and the size check
of what arrived against it (docs/real-service.md), from the relay's tables in ``batchgen.relay``.
The plan, the check of what arrived and the simulator all read them here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchgen import relay

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
        asked = max((relay.LONG_SIDE[self.size_class], *(self.answered or ())))
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
    if image_size in relay.LONG_SIDE:
        return image_size
    return relay.SIZES.get(size, relay.DEFAULT_SIZE)


def requested(size: str, image_size: str | None, aspect_ratio: str | None) -> Shape:
    """The shape a request asks for: its class, its aspect by ``aspect_ratio``, else by a ``WxH``
    size, and the pixels Gemini makes of it."""
    klass = size_class(size, image_size)
    ratio = parse_ratio(aspect_ratio) if aspect_ratio else None
    if ratio is not None and aspect_ratio is not None:
        table = aspect_ratio if aspect_ratio in relay.GEMINI_1K else None
        return Shape(klass, ratio, pixels(klass, table) if table else None, aspect_ratio)
    m = relay.WXH.match(size)
    if m is None:
        return Shape(klass, None, pixels(klass, relay.DEFAULT_RATIO))
    w, h = int(m.group(1)), int(m.group(2))
    return Shape(klass, (w, h), pixels(klass, _nearest_ratio(w, h)), size)


def _nearest_ratio(w: int, h: int) -> str:
    """The ratio of Gemini's table nearest to ``w:h``: what a ``WxH`` size is answered with."""
    return min(
        relay.GEMINI_1K, key=lambda r: abs(math.log(w / h * relay.GEMINI_1K[r][1] / relay.GEMINI_1K[r][0]))
    )


def pixels(klass: str, ratio: str) -> tuple[int, int]:
    """What Gemini answers for class ``klass`` and one of its aspect ratios (``relay.GEMINI_1K``)."""
    w, h = relay.GEMINI_1K[ratio]
    scale = relay.GEMINI_SCALE[klass]
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
    side = relay.LONG_SIDE[shape.size_class]
    scale = math.sqrt(side * side / (w * h))
    return max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)


def parse_ratio(text: str) -> tuple[int, int] | None:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    w, h = int(parts[0]), int(parts[1])
    return (w, h) if w > 0 and h > 0 else None
