"""Rendering variants with Pillow: an original's bytes in, each variant's bytes out.

Blocking and CPU-bound: only the derivation workers call it (``derive``), never the event loop.
The original is decoded once per image for all its variants (for JPEG at a reduced scale when
every variant is small enough), turned upright by its EXIF orientation, and scaled with Lanczos.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from PIL import ExifTags, Image, PngImagePlugin

from batchgen.output.variants import DEFAULT_QUALITY, Variant

# Resize in two steps: an integer box reduction (for JPEG: DCT scaling while decoding) to at
# least twice the final size, then Lanczos. Pillow documents the result as indistinguishable
# from Lanczos over the full image from 3.0 up; 2.0 is its own default.
REDUCING_GAP = 2.0
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_FORMATS = ("webp", "png", "avif")
_PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG", "avif": "AVIF"}
UNREADABLE = (
    OSError,  # UnidentifiedImageError, truncated or corrupt data
    ValueError,  # broken headers and chunks show up as these three
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
    # Under -W error (the tests) Pillow's warnings are raised: a possible bomb, corrupt EXIF.
    Image.DecompressionBombWarning,
    UserWarning,
)


@dataclass(frozen=True, slots=True)
class Rendered:
    data: bytes
    scale: float  # the original's enlargement (>1) or reduction (<1)
    size: tuple[int, int]


class Source:
    """An original, opened once for all its variants."""

    def __init__(self, data: bytes, variants: Sequence[Variant]) -> None:
        opened = Image.open(io.BytesIO(data))
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and opened.width * opened.height > limit:
            raise Image.DecompressionBombError("more pixels than Pillow opens safely")
        self.orientation = _orientation(opened)
        turned = self.orientation in (5, 6, 7, 8)
        self.size = (opened.height, opened.width) if turned else opened.size  # upright
        scale = max((_target(self.size, v)[1] for v in variants), default=1.0)
        if scale * REDUCING_GAP < 1:  # JPEG decodes at 1/2, 1/4 or 1/8 scale: far faster
            box = (int(self.size[0] * scale * REDUCING_GAP) + 1, int(self.size[1] * scale * REDUCING_GAP) + 1)
            opened.draft(None, box[::-1] if turned else box)
        # A colour profile describes RGB data; one for CMYK or grey would be wrong once converted.
        self.icc = opened.info.get("icc_profile") if opened.mode in ("RGB", "RGBA", "P", "PA") else None
        picture = _rgb_or_rgba(opened)
        picture.load()
        if self.orientation != 1:
            picture = picture.transpose(_UPRIGHT[self.orientation])
        self.picture = picture

    def render(self, variant: Variant, meta: Mapping[str, str]) -> Rendered:
        """The bytes of ``variant``; ``meta`` goes into its XMP unless the variant says no."""
        (inner, canvas, crop), scale = _target(self.size, variant)
        source_size = self.picture.size
        # The picture may have been decoded small (draft): its box in the original's scale.
        ratio = (source_size[0] / self.size[0], source_size[1] / self.size[1])
        box = (
            None
            if crop is None
            else (crop[0] * ratio[0], crop[1] * ratio[1], crop[2] * ratio[0], crop[3] * ratio[1])
        )
        picture = self.picture
        if picture.size != inner or box is not None:
            picture = picture.resize(inner, Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
        flatten = picture.mode == "RGBA" and variant.format not in _ALPHA_FORMATS
        if canvas != inner or flatten:
            mode = "RGBA" if picture.mode == "RGBA" and not flatten else "RGB"
            back = Image.new(mode, canvas, variant.background)
            offset = ((canvas[0] - inner[0]) // 2, (canvas[1] - inner[1]) // 2)
            back.paste(picture, offset, picture if picture.mode == "RGBA" else None)
            picture = back
        out = io.BytesIO()
        picture.save(out, **_save_options(variant, self.icc, xmp(meta) if variant.metadata else None))
        return Rendered(out.getvalue(), scale, picture.size)


Box = tuple[int, int]


def _target(
    size: Box, variant: Variant
) -> tuple[tuple[Box, Box, tuple[float, float, float, float] | None], float]:
    """((the scaled picture's size, the canvas's, the crop box in the original), the scale)."""
    w, h = size
    if variant.width is None or variant.height is None:  # one side given: the aspect kept
        scale = variant.width / w if variant.width is not None else (variant.height or h) / h
        box_w, box_h = max(1, round(w * scale)), max(1, round(h * scale))
        return ((box_w, box_h), (box_w, box_h), None), scale
    W, H = variant.width, variant.height
    if variant.fit == "crop":
        scale = max(W / w, H / h)
        cw, ch = W / scale, H / scale  # the part of the original that fills the box
        left, top = (w - cw) / 2, (h - ch) / 2
        return ((W, H), (W, H), (left, top, left + cw, top + ch)), scale
    scale = min(W / w, H / h)
    if not variant.enlarge:
        scale = min(scale, 1.0)
    inner = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (inner, (W, H) if variant.fit == "pad" else inner, None), scale


def _save_options(variant: Variant, icc: bytes | None, packet: bytes | None) -> dict[str, Any]:
    options: dict[str, Any] = {"format": _PIL_FORMAT[variant.format]}
    if icc:
        options["icc_profile"] = icc
    if variant.format != "png":
        options["quality"] = variant.quality or DEFAULT_QUALITY[variant.format]
    if variant.format == "webp":
        options["method"] = variant.effort
    if packet is not None:
        if variant.format == "png":
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", packet.decode(), zip=False)
            options["pnginfo"] = info
        else:
            options["xmp"] = packet
    return options


def xmp(meta: Mapping[str, str]) -> bytes:
    """An XMP packet saying where the file came from: the item's id, prompt, model, size and job."""
    fields = "".join(
        f"<batchgen:{key}>{escape(str(value))}</batchgen:{key}>" for key, value in meta.items() if value
    )
    prompt = escape(meta.get("prompt", ""))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:batchgen="https://github.com/batchgen/batchgen/ns/1.0/">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{prompt}</rdf:li></rdf:Alt></dc:description>'
        f"{fields}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 when there is none or it cannot be read."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, TypeError, IndexError):
        return 1  # a broken EXIF block: the pixels are still worth a variant
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# The EXIF orientations, as ImageOps.exif_transpose applies them.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in _SIXTEEN_BIT:
        # convert() would clip 0-65535 to 0-255 (nearly all white): scale down instead.
        return image.convert("I").point(lambda value: value / 256).convert("L").convert("RGB")
    return image.convert("RGBA" if image.has_transparency_data else "RGB")
