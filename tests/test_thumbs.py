"""Thumbnails: size, orientation, transparency, formats, atomic writes, and the backfill of old jobs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from batchgen import thumbs


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def opened(data: bytes | None) -> Image.Image:
    assert data is not None
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    return image


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((2048, 2048), (384, 384)),
        ((1600, 900), (384, 216)),
        ((900, 1600), (216, 384)),
        ((200, 100), (200, 100)),
    ],
)
def test_long_side_384_aspect_kept_never_upscaled(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert opened(thumbs.make(encoded(Image.new("RGB", size, (200, 30, 30)), "PNG"))).size == expected


def test_transparency_is_kept_and_other_modes_are_converted() -> None:
    rgba = Image.new("RGBA", (600, 600), (0, 0, 255, 0))
    assert opened(thumbs.make(encoded(rgba, "PNG"))).mode == "RGBA"
    assert opened(thumbs.make(encoded(Image.new("CMYK", (500, 500)), "JPEG"))).mode == "RGB"
    assert opened(thumbs.make(encoded(Image.new("I;16", (500, 500)), "PNG"))).mode == "RGB"
    assert opened(thumbs.make(encoded(Image.new("P", (500, 500)), "GIF"))).size == (384, 384)
    assert opened(thumbs.make(encoded(Image.new("RGB", (800, 400)), "WEBP"))).size == (384, 192)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    data = encoded(Image.new("RGB", (800, 400), (10, 200, 10)), "JPEG", exif=exif)
    assert opened(thumbs.make(data)).size == (192, 384)  # shown upright: portrait


def test_what_pillow_cannot_read_gives_none() -> None:
    assert thumbs.make(b"not an image") is None
    assert thumbs.make(b"\x89PNG\r\n\x1a\n" + b"\0" * 40) is None


@pytest.mark.parametrize(
    ("image", "thumb"),
    [
        ("images/a-1.png", "thumbs/a-1.webp"),
        ("images/x.v2.jpeg", "thumbs/x.v2.webp"),
        ("images/b", "thumbs/b.webp"),
    ],
)
def test_thumb_path(image: str, thumb: str) -> None:
    assert thumbs.thumb_path(image) == thumb


def test_write_is_atomic_and_backfill_makes_only_the_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / f"images/{name}.png").write_bytes(encoded(Image.new("RGB", (500, 500)), "PNG"))
    (tmp_path / "images/broken.png").write_bytes(b"\x89PNG broken")
    data = (tmp_path / "images/a.png").read_bytes()
    assert thumbs.write(tmp_path, "images/a.png", data) == "thumbs/a.webp"
    assert os.listdir(tmp_path / "thumbs") == ["a.webp"]  # no temp file left behind
    made_a = (tmp_path / "thumbs/a.webp").stat().st_mtime_ns
    images = ["images/a.png", "images/b.png", "images/c.png", "images/broken.png", "images/gone.png"]
    assert thumbs.missing(tmp_path, images) == ["images/b.png", "images/c.png", "images/broken.png"]
    assert thumbs.backfill(tmp_path, images) == 2  # the broken one is skipped, the gone one ignored
    assert sorted(os.listdir(tmp_path / "thumbs")) == ["a.webp", "b.webp", "c.webp"]
    assert (tmp_path / "thumbs/a.webp").stat().st_mtime_ns == made_a  # not made again
    assert thumbs.backfill(tmp_path, images) == 0
