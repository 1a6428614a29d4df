"""The real relay's behaviours, end to end against the simulator that imitates them.

Each test pins what was sent (exact request counts per item, the bodies'
extra_fields), what the report says (classes, unconfirmed attempts) and what
is on disk.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from batchgen.cli import main
from batchgen.simulator import Simulator

from .conftest import FAST_LIMITS, png_bytes


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHGEN_BASE_URL", raising=False)
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")


def report_at(folder: Path) -> dict[str, Any]:
    return dict(orjson.loads((folder / "report.json").read_bytes()))


def run(path: Path, sim: Simulator, out: Path, *extra: str) -> int:
    return main(["run", str(path), "--base-url", sim.base_url, "--output", str(out), "-q", *extra])


def strings_in(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a JSON value, with the path it sits at."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(v, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for k, v in enumerate(value):
            yield from strings_in(v, f"{where}[{k}]")
    elif isinstance(value, str):
        yield where, value


def bottom_strip_colours(path: Path) -> set[tuple[int, int, int]]:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        strip = rgb.crop((0, rgb.height * 5 // 6, rgb.width, rgb.height)).resize((64, 8))
        return {strip.getpixel((x, y)) for x in range(64) for y in range(8)}  # type: ignore[misc]


class TestReferencesGoWhereTheRelayReadsThem:
    def manifest(self, write_manifest: Callable[..., Path], **api: str) -> Path:
        return write_manifest(
            {
                "job": "refs",
                "limits": FAST_LIMITS,
                **({"api": api} if api else {}),
                "defaults": {"references": ["refs/style.png"]},
                "items": [
                    {"id": "a", "prompt": "a tote"},
                    {
                        "id": "b",
                        "prompt": "a mug",
                        "references": ["refs/style.png", "https://cdn.test/b.png"],
                    },
                ],
            }
        )

    def test_every_reference_is_sent_under_the_default_key_and_nowhere_else(
        self,
        threaded_simulator: Callable[..., Simulator],
        write_manifest: Callable[..., Path],
        ref_png: Path,
        tmp_path: Path,
    ) -> None:
        sim = threaded_simulator(record_bodies=True)
        assert run(self.manifest(write_manifest), sim, tmp_path / "out") == 0
        assert len(sim.stats.bodies) == 2
        for body in sim.stats.bodies:
            placed = [
                where
                for where, text in strings_in(body)
                if text.startswith("data:") or text == "https://cdn.test/b.png"
            ]
            count = 2 if body["prompt"] == "a mug" else 1
            assert placed == [f"extra_fields.reference_images[{k}]" for k in range(count)], body["prompt"]
        # The relay read them: every reference shows in the picture it returned.
        assert sim.stats.references == {"a tote": 1, "a mug": 2}
        assert not sim.stats.ignored_fields

    def test_api_reference_field_moves_them_and_a_relay_that_ignores_it_draws_no_strip(
        self,
        threaded_simulator: Callable[..., Simulator],
        write_manifest: Callable[..., Path],
        ref_png: Path,
        tmp_path: Path,
    ) -> None:
        sim = threaded_simulator(record_bodies=True)
        path = self.manifest(write_manifest, reference_field="image_urls")
        assert run(path, sim, tmp_path / "out") == 0
        for body in sim.stats.bodies:
            assert "reference_images" not in body["extra_fields"]
            assert body["extra_fields"]["image_urls"][0].startswith("data:image/png;base64,")
        assert sim.stats.references == {"a tote": 0, "a mug": 0}
        assert sim.stats.ignored_fields == {"image_urls": 2}


def test_the_simulator_draws_the_references_it_read(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    refs = tmp_path / "jobs" / "refs"
    refs.mkdir(parents=True)
    red = io.BytesIO()
    Image.new("RGB", (64, 64), (230, 20, 20)).save(red, format="PNG")
    (refs / "red.png").write_bytes(red.getvalue())
    sim = threaded_simulator()
    items = [
        {"id": "with", "prompt": "p", "references": ["refs/red.png"]},
        {"id": "wrong-key", "prompt": "p", "extra_fields": {"image_urls": ["refs/red.png"]}},
        {"id": "without", "prompt": "p"},
    ]
    path = write_manifest({"job": "draw", "limits": FAST_LIMITS, "items": items})
    assert run(path, sim, tmp_path / "out") == 0
    images = tmp_path / "out/draw/images"
    reds = [c for c in bottom_strip_colours(images / "with.png") if c[0] > 180 and c[1] < 80 and c[2] < 80]
    assert reds, "the reference's colour shows in the strip"
    assert bottom_strip_colours(images / "wrong-key.png") == bottom_strip_colours(images / "without.png")
    assert (images / "wrong-key.png").read_bytes() == (images / "without.png").read_bytes()
    assert png_bytes()[:8] == (images / "with.png").read_bytes()[:8]
