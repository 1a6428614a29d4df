"""One thumbnail: an image's bytes in, a small upright WebP out (Pillow).

It blocks and is CPU-bound (Pillow releases the GIL while it decodes, resizes and encodes);
``thumbs`` decides where thumbnails go and when they are made.
"""

from __future__ import annotations

import io

from PIL import ExifTags, Image

LONG_SIDE = 384
QUALITY = 80
# WebP effort 0-6. Measured at 384 x 384: 2 encodes in ~10 ms, Pillow's default 4 in ~20 ms and
# 6 in ~55 ms for 1-2% fewer bytes; 0 and 1 save 2-3 ms and make files 8-10% larger.
METHOD = 2
# Resize in two steps: an integer box reduction (for JPEG: DCT scaling while decoding) to at
# least twice the final size, then Lanczos. Far faster than Lanczos from the full image, and
# Pillow documents the result as indistinguishable from it from 3.0 up; 2.0 is its default.
REDUCING_GAP = 2.0
# The EXIF orientations, as ImageOps.exif_transpose applies them; here applied after resizing,
# to the thumbnail rather than to the full image.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def make(data: bytes) -> bytes | None:
    """The WebP thumbnail of the image in ``data``, or None when Pillow cannot read it.

    Long side ``LONG_SIDE`` (never upscaled), aspect kept, upright by its EXIF orientation,
    RGBA when the image has any transparency, RGB otherwise; an animation gives its first
    frame. None too for more pixels than ``Image.MAX_IMAGE_PIXELS``, where Pillow warns of a
    possible decompression bomb (89 million; a 4096 x 4096 image has 17).
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and opened.width * opened.height > limit:
                return None  # what Pillow warns may be a decompression bomb: not worth the memory
            return _thumbnail(opened)
    except (
        OSError,  # UnidentifiedImageError, truncated or corrupt data
        ValueError,  # broken headers and chunks show up as these three
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        # Under -W error (the tests) Pillow's warnings are raised: a possible bomb, corrupt EXIF.
        Image.DecompressionBombWarning,
        UserWarning,
    ):
        return None


def _thumbnail(opened: Image.Image) -> bytes:
    width, height = opened.size
    scale = min(1.0, LONG_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0:
        # JPEG (and MPO) decode at 1/2, 1/4 or 1/8 scale, still at least REDUCING_GAP times the
        # final size: far faster. Other formats ignore it.
        opened.draft(None, (int(size[0] * REDUCING_GAP), int(size[1] * REDUCING_GAP)))
    upright = _UPRIGHT.get(_orientation(opened))
    # A colour profile describes RGB data; one for CMYK or grey would be wrong once converted.
    icc = opened.info.get("icc_profile") if opened.mode in ("RGB", "RGBA", "P", "PA") else None
    picture = _rgb_or_rgba(opened)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    if upright is not None:
        picture = picture.transpose(upright)
    out = io.BytesIO()
    picture.save(out, format="WEBP", quality=QUALITY, method=METHOD, icc_profile=icc or None)
    return out.getvalue()


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 when there is none or it cannot be read."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, TypeError, IndexError):
        return 1  # a broken EXIF block: the pixels are still worth a thumbnail
    return value if isinstance(value, int) else 1


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in _SIXTEEN_BIT:
        # convert() would clip 0-65535 to 0-255 (nearly all white): scale down instead.
        return image.convert("I").point(lambda value: value / 256).convert("L").convert("RGB")
    return image.convert("RGBA" if image.has_transparency_data else "RGB")
