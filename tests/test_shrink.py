"""Reference photos made small enough to send: Pillow, originals untouched, cached by content."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import pybase64
import pytest
from PIL import Image

from batchgen.cli.main import main
from batchgen.manifest import shrink
from batchgen.manifest.references import LocalReference, ReferenceLoader
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS, png_bytes

MB = 1024 * 1024


def noise_png(width: int, height: int, mode: str = "RGB") -> bytes:
    """Incompressible pixels: a PNG about as large as a camera photo saved as PNG."""
    image = Image.frombytes(mode, (width, height), os.urandom(width * height * len(mode)))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0)
    return out.getvalue()


def decoded(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(pybase64.b64decode(uri.partition(",")[2])))


@pytest.mark.parametrize(
    ("size", "mode", "max_side", "max_mb", "fmt"),
    [
        ((3000, 1200), "RGB", 2048, 4, "JPEG"),  # too many pixels and bytes: a camera photo
        ((1400, 1400), "RGB", 2048, 4, "JPEG"),  # small enough a side, 5.9 MB
        ((2600, 300), "RGBA", 2048, 4, "PNG"),  # transparency survives
        ((900, 900), "RGB", 512, 4, "JPEG"),  # only the side is over
    ],
)
def test_shrink_fits_the_side_and_the_bytes(
    size: tuple[int, int], mode: str, max_side: int, max_mb: float, fmt: str
) -> None:
    original = noise_png(*size, mode=mode)
    data, image_format = shrink.shrink(original, max_side, int(max_mb * MB))
    assert len(data) <= min(len(original), max_mb * MB)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == fmt
        assert image_format.mime == Image.MIME[fmt]
        assert max(image.size) <= max_side
        assert abs(image.width / image.height - size[0] / size[1]) < 0.02  # the shape is kept
        assert ("A" in image.mode) is ("A" in mode)


def test_shrink_keeps_going_down_until_it_fits() -> None:
    data, _ = shrink.shrink(noise_png(1000, 1000), 2048, 200_000)
    assert len(data) <= 200_000


def test_shrink_applies_the_exif_orientation_it_drops() -> None:
    image = Image.new("RGB", (400, 100), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° to display: the camera was held upright
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, quality=95)
    data, _ = shrink.shrink(out.getvalue(), 64, 4 * MB)
    with Image.open(io.BytesIO(data)) as small:
        assert small.size == (16, 64)


@pytest.mark.parametrize(
    ("data", "max_side", "max_bytes", "expected"),
    [
        (png_bytes(100, 100), 2048, 4 * MB, False),
        (png_bytes(3000, 10), 2048, 4 * MB, True),
        (png_bytes(100, 100), 50, 4 * MB, True),
        (png_bytes(100, 100), 2048, 100, True),
    ],
)
def test_too_large(data: bytes, max_side: int, max_bytes: int, expected: bool) -> None:
    assert shrink.too_large(data, max_side, max_bytes) is expected


class TestLoader:
    def test_a_large_reference_is_sent_shrunk_and_the_file_is_untouched(self, tmp_path: Path) -> None:
        photo = tmp_path / "photo.png"
        original = noise_png(1500, 1500)  # 6.4 MB
        photo.write_bytes(original)
        loader = ReferenceLoader(20 * MB, max_side=2048, send_bytes=4 * MB)
        loaded = loader.load(LocalReference(photo, "photo.png"))
        assert loaded.uri.startswith("data:image/jpeg;base64,")
        assert len(pybase64.b64decode(loaded.uri.partition(",")[2])) <= 4 * MB
        assert photo.read_bytes() == original
        # The fingerprint names the original's content and the settings it was shrunk with.
        assert loaded.digest.endswith(f"@2048px,{4 * MB}B")
        other = ReferenceLoader(20 * MB, max_side=1024, send_bytes=4 * MB).load(
            LocalReference(photo, "photo.png")
        )
        assert other.digest.split("@")[0] == loaded.digest.split("@")[0]
        assert other.digest != loaded.digest
        with decoded(other.uri) as image:
            assert max(image.size) <= 1024

    def test_a_reference_that_fits_is_sent_as_it_is(self, tmp_path: Path) -> None:
        small = tmp_path / "small.png"
        small.write_bytes(png_bytes(300, 200))
        loaded = ReferenceLoader(20 * MB).load(LocalReference(small, "small.png"))
        assert pybase64.b64decode(loaded.uri.partition(",")[2]) == small.read_bytes()
        assert "@" not in loaded.digest  # fingerprints of references that fit do not change

    def test_the_same_photo_under_two_names_is_shrunk_once(self, tmp_path: Path) -> None:
        data = noise_png(1200, 1200)
        for name in ("a.png", "b.png"):
            (tmp_path / name).write_bytes(data)
        loader = ReferenceLoader(20 * MB, send_bytes=1 * MB)
        first = loader.load(LocalReference(tmp_path / "a.png", "a.png"))
        second = loader.load(LocalReference(tmp_path / "b.png", "b.png"))
        assert first == second
        assert loader.shrink_count == 1


@pytest.mark.usefixtures("api_key")
def test_a_camera_photo_reference_gets_past_a_proxy_body_limit(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    """A 6 MB PNG in front of a proxy that takes 5 MB: shrunk, it goes through; sent whole, 413."""
    sim = threaded_simulator(max_body_mb=5, record_bodies=True)
    refs = tmp_path / "jobs" / "refs"
    refs.mkdir(parents=True)
    (refs / "photo.png").write_bytes(noise_png(1500, 1400))
    item = {"id": "tote", "prompt": "a tote", "references": ["refs/photo.png"]}
    shrunk = write_manifest({"job": "shrunk", "limits": FAST_LIMITS, "items": [item]})
    whole = write_manifest(
        {"job": "whole", "limits": {**FAST_LIMITS, "reference_max_mb": 20}, "items": [item]}
    )
    out = tmp_path / "out"
    assert main(["run", str(shrunk), "--base-url", sim.base_url, "--output", str(out), "-q"]) == 0
    assert sim.stats.references == {"a tote": 1}
    assert main(["run", str(whole), "--base-url", sim.base_url, "--output", str(out), "-q"]) == 1
    assert sim.stats.faults["413"] == 1  # once: a body that is too large is not sent again
    report = (out / "whole/report.json").read_text()
    assert '"class":"invalid_request"' in report.replace(" ", "")
    assert "reference_max_mb" in report


@pytest.mark.usefixtures("api_key")
def test_a_request_over_max_request_mb_is_an_error_naming_the_item_and_nothing_is_sent(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = threaded_simulator()
    refs = tmp_path / "jobs" / "refs"
    refs.mkdir(parents=True)
    for k in range(3):
        (refs / f"p{k}.png").write_bytes(noise_png(600, 600))  # 1 MB each
    items = [
        {"id": "fits", "prompt": "x", "references": ["refs/p0.png"]},
        {"id": "too-many", "prompt": "y", "references": [f"refs/p{k}.png" for k in range(3)]},
    ]
    path = write_manifest({"job": "big", "api": {"max_request_mb": 2}, "limits": FAST_LIMITS, "items": items})
    code = main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert sim.stats.requests == 0
    assert not (tmp_path / "out").exists()
    (line,) = err.strip().splitlines()
    assert re.search(r"items\[1\] \(id too-many\): references: the request would be up to 4\.\d MB", line)
    assert "api.max_request_mb (2)" in line
