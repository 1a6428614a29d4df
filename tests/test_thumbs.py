"""Gallery thumbnails: real images made with Pillow, decoded again to check what came out."""

from __future__ import annotations

import io
import os
import random

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageOps, ImageStat

from batchgen.output.render import UNREADABLE, Source
from batchgen.output.variants import THUMB, thumb_path


class thumbs:
    """The built-in variant ``thumb``, rendered as the derivation workers render it."""

    LONG_SIDE = 384
    thumb_path = staticmethod(thumb_path)

    @staticmethod
    def make(data: bytes) -> bytes | None:
        try:
            return Source(data, [THUMB]).render(THUMB, {}).data
        except UNREADABLE:
            return None


RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def decoded(data: bytes | None) -> Image.Image:
    """The thumbnail, checked to be a WebP."""
    assert data is not None
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    image.load()
    return image


def quadrants(width: int, height: int) -> Image.Image:
    """Red, green / blue, white: where each corner ends up shows how the image was turned."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    w, h = width // 2, height // 2
    draw.rectangle((0, 0, w - 1, h - 1), fill=RED)
    draw.rectangle((w, 0, width - 1, h - 1), fill=GREEN)
    draw.rectangle((0, h, w - 1, height - 1), fill=BLUE)
    draw.rectangle((w, h, width - 1, height - 1), fill=WHITE)
    return image


def corners(image: Image.Image) -> list[tuple[int, ...]]:
    """The colours in the middle of each quadrant: top left, top right, bottom left, bottom right."""
    rgb = image.convert("RGB")
    points = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
    return [tuple(rgb.getpixel((int(x * rgb.width), int(y * rgb.height)))) for x, y in points]  # type: ignore[arg-type]


def close(got: tuple[int, ...], want: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((800, 400), (384, 192)),  # landscape
        ((300, 900), (128, 384)),  # portrait
        ((1000, 1000), (384, 384)),
        ((385, 10), (384, 10)),
        ((200, 100), (200, 100)),  # small: never upscaled
        ((384, 50), (384, 50)),  # exactly the long side
        ((2000, 3), (384, 1)),  # a sliver keeps at least one pixel
    ],
)
def test_long_side_is_384_and_the_shape_kept(size: tuple[int, int], expected: tuple[int, int]) -> None:
    thumb = decoded(thumbs.make(encoded(quadrants(*size), "PNG")))
    assert thumb.size == expected
    assert thumb.mode == "RGB"


def test_the_pixels_are_the_picture_shrunk() -> None:
    thumb = decoded(thumbs.make(encoded(quadrants(600, 400), "PNG")))
    assert all(close(got, want) for got, want in zip(corners(thumb), [RED, GREEN, BLUE, WHITE], strict=True))


def test_transparency_is_kept() -> None:
    image = Image.new("RGBA", (768, 512), (255, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((384, 0, 767, 511), fill=(0, 0, 255, 255))
    thumb = decoded(thumbs.make(encoded(image, "PNG")))
    assert thumb.mode == "RGBA"
    assert thumb.size == (384, 256)
    assert thumb.getpixel((40, 128))[3] == 0  # type: ignore[index]
    assert thumb.getpixel((340, 128))[3] == 255  # type: ignore[index]
    # No dark fringe from the transparent red bleeding into the blue at the edge.
    r, _, b, a = thumb.getpixel((194, 128))  # type: ignore[misc]
    assert a > 200
    assert b > 200
    assert r < 60


@pytest.mark.parametrize(
    ("image", "fmt", "mode"),
    [
        (Image.new("LA", (64, 32), (128, 100)), "PNG", "RGBA"),
        (Image.new("P", (64, 32), 3), "PNG", "RGB"),
        (Image.new("L", (64, 32), 128), "PNG", "RGB"),
        (Image.new("1", (64, 32), 1), "PNG", "RGB"),
        (Image.new("L", (64, 32), 128), "JPEG", "RGB"),
        (Image.new("CMYK", (64, 32), (0, 255, 255, 0)), "JPEG", "RGB"),  # red in CMYK
    ],
    ids=["LA", "P", "L", "1", "L-jpeg", "CMYK-jpeg"],
)
def test_other_modes_become_rgb_or_rgba(image: Image.Image, fmt: str, mode: str) -> None:
    thumb = decoded(thumbs.make(encoded(image, fmt)))
    assert thumb.mode == mode
    assert thumb.size == (64, 32)
    if image.mode == "CMYK":
        assert close(thumb.getpixel((32, 16)), RED, tolerance=50)  # type: ignore[arg-type]


def test_a_palette_with_a_transparent_index_becomes_rgba() -> None:
    image = Image.new("P", (64, 32), 0)
    image.putpalette([*RED, *BLUE] + [0] * 762)
    ImageDraw.Draw(image).rectangle((32, 0, 63, 31), fill=1)
    thumb = decoded(thumbs.make(encoded(image, "PNG", transparency=0)))
    assert thumb.mode == "RGBA"
    assert thumb.getpixel((8, 16))[3] == 0  # type: ignore[index]
    assert close(thumb.getpixel((56, 16)), (*BLUE, 255))  # type: ignore[arg-type]


def test_sixteen_bit_grey_is_scaled_down_not_clipped_to_white() -> None:
    image = Image.new("I;16", (64, 32), 16384)  # a quarter of 65535
    thumb = decoded(thumbs.make(encoded(image, "PNG")))
    assert Image.open(io.BytesIO(encoded(image, "PNG"))).mode == "I;16"
    assert thumb.mode == "RGB"
    assert close(thumb.getpixel((32, 16)), (64, 64, 64), tolerance=6)  # type: ignore[arg-type]


def test_exif_orientation_6_turns_a_landscape_jpeg_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left: to be shown turned 90 degrees clockwise
    data = encoded(quadrants(800, 400), "JPEG", quality=95, exif=exif.tobytes())
    thumb = decoded(thumbs.make(data))
    assert thumb.size == (192, 384)  # portrait
    # Clockwise: the stored bottom left (blue) comes to the top left, red to the top right.
    want = [BLUE, RED, WHITE, GREEN]
    assert all(close(got, w) for got, w in zip(corners(thumb), want, strict=True)), corners(thumb)
    assert 0x0112 not in thumb.getexif()  # turned once, by the pixels


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_every_exif_orientation_matches_imageops(orientation: int, fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(quadrants(500, 250), fmt, exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as original:
        upright = ImageOps.exif_transpose(original)
    thumb = decoded(thumbs.make(data))
    assert thumb.size == ImageOps.contain(upright, (384, 384)).size
    assert all(close(a, b) for a, b in zip(corners(thumb), corners(upright), strict=True))


def test_a_broken_exif_block_still_gives_a_thumbnail() -> None:
    data = encoded(quadrants(64, 32), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage-not-a-tiff-block")
    with pytest.warns(UserWarning, match="Corrupt EXIF"):  # printed once in production, not raised
        assert decoded(thumbs.make(data)).size == (64, 32)
    assert thumbs.make(data) is None  # raised, as under -W error: refused, not an exception


def test_a_large_jpeg_is_decoded_small_and_still_right() -> None:
    # Grey, so that what is measured is the resizing, not WebP's coarser colour channels.
    image = quadrants(2048, 1536).convert("L").convert("RGB")
    draw = ImageDraw.Draw(image)
    for x in range(0, 2048, 64):  # detail the reduced decode must average, not drop
        draw.line((x, 0, x, 1535), fill=(0, 0, 0), width=8)
    thumb = decoded(thumbs.make(encoded(image, "JPEG", quality=90)))
    assert thumb.size == (384, 288)
    reference = image.resize((384, 288), Image.Resampling.LANCZOS)
    difference = ImageStat.Stat(ImageChops.difference(thumb.convert("RGB"), reference)).mean
    assert max(difference) < 3, difference


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "WEBP"])
def test_jpeg_gif_and_webp_inputs(fmt: str) -> None:
    image = quadrants(512, 256)
    thumb = decoded(thumbs.make(encoded(image.convert("P") if fmt == "GIF" else image, fmt)))
    assert thumb.size == (384, 192)
    assert all(close(got, want) for got, want in zip(corners(thumb), [RED, GREEN, BLUE, WHITE], strict=True))


def test_an_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (100, 50), colour) for colour in (RED, BLUE)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    thumb = decoded(thumbs.make(data))
    assert thumb.size == (100, 50)
    assert close(thumb.getpixel((50, 25)), RED)  # type: ignore[arg-type]
    assert getattr(thumb, "n_frames", 1) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        os.urandom(4096),
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        encoded(Image.radial_gradient("L"), "PNG")[:2000],  # truncated
        encoded(Image.radial_gradient("L"), "JPEG")[:2000],
    ],
    ids=["empty", "text", "random", "png-signature-only", "truncated-png", "truncated-jpeg"],
)
def test_what_is_not_an_image_gives_none(data: bytes) -> None:
    assert thumbs.make(data) is None


def test_corrupted_images_never_raise() -> None:
    rng = random.Random(7)
    seeds = [
        encoded(quadrants(48, 32), "PNG"),
        encoded(quadrants(48, 32), "JPEG"),
        encoded(quadrants(48, 32).convert("P"), "GIF"),
        encoded(quadrants(48, 32), "WEBP"),
    ]
    for seed in seeds:
        for _ in range(100):
            data = bytearray(seed)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(min(len(data), 300))] = rng.randrange(256)
            result = thumbs.make(bytes(data[: rng.randrange(len(data) // 2, len(data) + 1)]))
            assert result is None or decoded(result).width <= thumbs.LONG_SIDE


def test_a_possible_decompression_bomb_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert thumbs.make(encoded(quadrants(30, 30), "PNG")) is not None  # 900 pixels
    with pytest.warns(Image.DecompressionBombWarning):
        assert thumbs.make(encoded(quadrants(40, 40), "PNG")) is None  # over the limit: Pillow warns
    assert thumbs.make(encoded(quadrants(50, 50), "PNG")) is None  # over twice the limit: Pillow refuses


@pytest.mark.parametrize(
    ("image", "thumb"),
    [
        ("images/a-1.png", "thumbs/a-1.webp"),
        ("images/a.jpg", "thumbs/a.webp"),
        ("images/a.webp", "thumbs/a.webp"),
        ("images/x.v2.png", "thumbs/x.v2.webp"),  # only the last extension goes
        ("images/a..png", "thumbs/a..webp"),
        ("images/noext", "thumbs/noext.webp"),
        ("a.png", "thumbs/a.webp"),
    ],
)
def test_thumb_path(image: str, thumb: str) -> None:
    assert thumbs.thumb_path(image) == thumb
