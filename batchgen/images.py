"""Image formats, told apart by their magic bytes, never by a name or a header."""

from __future__ import annotations

import io
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    mime: str
    ext: str


PNG = ImageFormat("image/png", "png")
JPEG = ImageFormat("image/jpeg", "jpg")
WEBP = ImageFormat("image/webp", "webp")
GIF = ImageFormat("image/gif", "gif")

SNIFF_BYTES = 12  # enough for every signature below


def sniff(head: bytes) -> ImageFormat | None:
    """The format whose signature ``head`` starts with, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    return None


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """Image bytes as received, with the format their magic bytes say."""

    data: bytes
    format: ImageFormat


def pixel_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of an image, read from its header (no pixel is decoded); None if its
    header cannot be read. Blocks for a moment: call it off the event loop."""
    from PIL import Image, UnidentifiedImageError  # only the threads that write images need it

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    return int(width), int(height)
