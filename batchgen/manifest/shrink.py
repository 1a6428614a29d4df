"""Reference photos made small enough to send: downscaled and re-encoded with Pillow.

A camera photo (6 MB PNG, 4000 px) makes a request body that the proxy in
front of a relay refuses (413), and the model gains nothing from more than
about 2048 px. Blocking and CPU-bound: called in worker threads (triage, and the engine's I/O threads).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

from batchgen.images import JPEG, PNG, WEBP, ImageFormat

# Tried in turn until the image fits: JPEG quality for opaque images, then smaller sides.
_QUALITIES = (90, 82, 74)
_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25)


class ShrinkError(ValueError):
    """The bytes are not an image Pillow can read (or one too large to decode safely)."""


def too_large(data: bytes, max_side: int, max_bytes: int) -> bool:
    """Whether ``data`` must be shrunk before sending: too many bytes, or a side over ``max_side``."""
    if len(data) > max_bytes:
        return True
    try:
        with _opened(data) as image:
            return max(image.size) > max_side
    except ShrinkError:
        return False  # sent as it is; the service judges it


def shrink(data: bytes, max_side: int, max_bytes: int) -> tuple[bytes, ImageFormat]:
    """``data`` with its long side at most ``max_side`` and its size at most ``max_bytes``.

    Upright (EXIF orientation applied, since the metadata that carried it is
    dropped), JPEG when opaque, PNG or WebP when it has transparency. An image
    that was already under ``max_bytes`` never comes out larger than it was.
    """
    target = min(max_bytes, len(data))
    with _opened(data) as opened:
        if opened.format == "JPEG":
            opened.draft("RGB", (max_side, max_side))  # decode at a fraction of the size: far faster
        image = ImageOps.exif_transpose(opened)
        image.load()
    transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if transparent else "RGB")
    fitted = ImageOps.contain(image, (max_side, max_side), Image.Resampling.LANCZOS)
    last = b""
    for scale in _SCALES:
        candidate = fitted if scale == 1.0 else _scaled(fitted, scale)
        for encoded, fmt in _encodings(candidate, transparent):
            if len(encoded) <= target:
                return encoded, fmt
            last = encoded
    raise ShrinkError(f"cannot be made smaller than {len(last) / 1e6:.1f} MB; raise limits.reference_max_mb")


def _encodings(image: Image.Image, transparent: bool) -> list[tuple[bytes, ImageFormat]]:
    if transparent:
        return [(_save(image, "PNG", optimize=True), PNG), (_save(image, "WEBP", quality=90), WEBP)]
    return [(_save(image, "JPEG", quality=q, optimize=True), JPEG) for q in _QUALITIES]


def _scaled(image: Image.Image, scale: float) -> Image.Image:
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _opened(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ShrinkError(f"cannot be read as an image ({exc})") from exc
