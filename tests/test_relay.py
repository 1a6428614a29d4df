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

from batchgen.cli.main import main
from batchgen.sim.settings import SimulatorConfig
from batchgen.sim.simulator import Simulator

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

    def reds(name: str) -> list[tuple[int, ...]]:
        colours = bottom_strip_colours(images / name)
        return [c for c in colours if c[0] > 180 and c[1] < 80 and c[2] < 80]

    assert reds("with.png"), "the reference's colour shows in the strip"
    assert not reds("wrong-key.png")  # sent under a key the relay does not read: not in the picture
    assert not reds("without.png")
    # No strip at all (its background is near white) where the relay read no reference.
    assert max(map(sum, bottom_strip_colours(images / "wrong-key.png"))) < 600
    assert max(map(sum, bottom_strip_colours(images / "with.png"))) >= 600
    assert png_bytes()[:8] == (images / "with.png").read_bytes()[:8]


RELAY_CASES = [
    # prompt, generation requests, billed by the service, status, class, unconfirmed
    ("[sim:blocked] a prompt Gemini blocks", 1, 0, "failed", "safety_filter", 0),
    ("[sim:image_safety] an image Gemini withholds", 1, 0, "failed", "safety_filter", 0),
    ("[sim:filtered] a 200 that is a refusal", 1, 0, "failed", "safety_filter", 0),
    ("[sim:no_images] no image part", 1, 0, "failed", "no_image", 0),
    ("[sim:504*1] the gateway gave up once", 2, 2, "succeeded", None, 1),
    ("[sim:524] the CDN always gives up", 2, 2, "failed", "server_error", 2),
    ("[sim:deadlink] a link that never works", 1, 1, "failed", "download_failed", 0),
    ("[sim:flakylink] a link that works the second time", 1, 1, "succeeded", None, 0),
    ("[sim:413] a proxy refuses the body", 1, 0, "failed", "invalid_request", 0),
]


def test_every_relay_behaviour_is_classified_and_paid_for_once(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    sim = threaded_simulator()
    items = [{"id": f"i{k}", "prompt": prompt} for k, (prompt, *_) in enumerate(RELAY_CASES)]
    path = write_manifest({"job": "relay", "limits": {**FAST_LIMITS, "max_attempts": 4}, "items": items})
    assert run(path, sim, tmp_path / "out") == 1
    report = report_at(tmp_path / "out/relay")
    by_id = {item["id"]: item for item in report["items"]}
    failures = {f["id"]: f for f in report["failures"]}
    for k, (prompt, requests, billed, status, error_class, _) in enumerate(RELAY_CASES):
        assert sim.stats.by_prompt[prompt] == requests, prompt
        assert sim.stats.billed[prompt] == billed, prompt
        assert by_id[f"i{k}"]["status"] == status, prompt
        if error_class:
            assert failures[f"i{k}"]["class"] == error_class, prompt
            assert failures[f"i{k}"]["retryable"] is (error_class == "server_error"), prompt
    assert report["unconfirmed_attempts"] == sum(case[-1] for case in RELAY_CASES)
    assert report["unconfirmed_cost"] == pytest.approx(3 * 0.039)  # nano-banana-2 at 1K, shipped prices
    dead = failures["i6"]
    assert dead["links"][0].startswith(sim.base_url.removesuffix("/v1") + "/files/")
    assert sim.stats.failed_downloads == 3 + 1  # the dead link's download budget, the flaky link's one
    assert sim.stats.downloads == 1
    # Three images were made: two kept, and the dead link's, billed all the same.
    assert report["estimated_cost"] == pytest.approx(3 * 0.039)


@pytest.mark.parametrize(
    ("fault", "status"),
    [("quota", 429), ("token_exhausted", 401), ("user_quota", 403)],
)
def test_no_credit_stops_the_job_at_once_and_says_what_to_do(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fault: str,
    status: int,
) -> None:
    sim = threaded_simulator(fault_rate=1.0, faults=(fault,))
    items = [{"id": f"i{k}", "prompt": f"p{k}"} for k in range(200)]
    path = write_manifest({"job": "broke", "limits": {**FAST_LIMITS, "concurrency": 4}, "items": items})
    code = main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "out")])
    assert code == 3
    assert sim.stats.requests <= 4  # only what was in flight; none retried
    report = report_at(tmp_path / "out/broke")
    assert report["status"] == "aborted"
    assert {f["class"] for f in report["failures"]} == {"quota_exhausted"}
    assert {f["http_status"] for f in report["failures"]} == {status}
    assert report["counts"]["pending"] >= 196
    out = capsys.readouterr().out
    assert "credit ran out" in out
    assert f"batchgen retry {tmp_path / 'out' / 'broke'}" in out


def test_retry_after_topping_up_sends_what_the_quota_stopped(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    items = [{"id": f"i{k}", "prompt": f"p{k}"} for k in range(20)]
    path = write_manifest({"job": "broke", "limits": {**FAST_LIMITS, "concurrency": 2}, "items": items})
    empty = threaded_simulator(fault_rate=1.0, faults=("user_quota",))
    assert run(path, empty, tmp_path / "out") == 3
    topped_up = threaded_simulator()
    code = main(["retry", str(tmp_path / "out/broke"), "--base-url", topped_up.base_url, "-q"])
    assert code == 0
    assert topped_up.stats.requests == 20
    assert report_at(tmp_path / "out/broke")["counts"]["succeeded"] == 20


def test_a_dead_link_is_fetched_again_by_retry_and_never_made_again(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    sim = threaded_simulator(link_failures=3)  # fails the first run's whole download budget
    path = write_manifest(
        {"job": "links", "limits": FAST_LIMITS, "items": [{"id": "a", "prompt": "[sim:flakylink] a tote"}]}
    )
    assert run(path, sim, tmp_path / "out") == 1
    folder = tmp_path / "out/links"
    (failure,) = report_at(folder)["failures"]
    assert failure["class"] == "download_failed"
    assert main(["retry", str(folder), "--base-url", sim.base_url, "-q"]) == 0
    assert sim.stats.by_prompt["[sim:flakylink] a tote"] == 1
    assert sim.stats.billed["[sim:flakylink] a tote"] == 1
    assert (sim.stats.failed_downloads, sim.stats.downloads) == (3, 1)
    report = report_at(folder)
    assert report["counts"]["succeeded"] == 1
    assert report["requests_sent"] == 0
    assert (folder / "images/a.png").read_bytes().startswith(b"\x89PNG")


def test_retry_all_failed_makes_it_again_when_the_link_stays_dead(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    sim = threaded_simulator()
    path = write_manifest(
        {"job": "links", "limits": FAST_LIMITS, "items": [{"id": "a", "prompt": "[sim:deadlink*1] a tote"}]}
    )
    assert run(path, sim, tmp_path / "out") == 1
    folder = tmp_path / "out/links"
    assert main(["retry", str(folder), "--base-url", sim.base_url, "-q"]) == 1  # fetched again: still dead
    assert sim.stats.by_prompt["[sim:deadlink*1] a tote"] == 1
    assert main(["retry", str(folder), "--all-failed", "--base-url", sim.base_url, "-q"]) == 0
    assert sim.stats.by_prompt["[sim:deadlink*1] a tote"] == 2  # asked for, so made (and paid) again
    assert sim.stats.failed_downloads == 3 * 3


@pytest.mark.parametrize("shape", ["b64", "dataurl", "url"])
def test_every_answer_shape_makes_the_same_images(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    ref_png: Path,
    shape: str,
) -> None:
    sim = threaded_simulator(response=shape)
    items = [
        {"id": "plain", "prompt": "a tote", "n": 2},
        {"id": "referenced", "prompt": "a mug", "references": ["refs/style.png"]},
    ]
    path = write_manifest({"job": "shapes", "limits": FAST_LIMITS, "items": items})
    assert run(path, sim, tmp_path / "out") == 0
    assert sim.stats.requests == 2
    assert sim.stats.downloads == (3 if shape == "url" else 0)
    images = tmp_path / "out/shapes/images"
    with Image.open(images / "plain-1.png") as a, Image.open(images / "referenced.png") as b:
        assert a.size == b.size == (1024, 1024)


@pytest.mark.parametrize("shape", ["b64", "dataurl", "url"])
def test_an_answer_in_jpeg_is_kept_as_a_jpeg_in_every_shape(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    shape: str,
) -> None:
    sim = threaded_simulator(response=shape, image_format="jpeg")
    path = write_manifest(
        {"job": "jpegs", "limits": FAST_LIMITS, "items": [{"id": "tote", "prompt": "a tote"}]}
    )
    assert run(path, sim, tmp_path / "out") == 0
    images = tmp_path / "out/jpegs/images"
    assert sorted(p.name for p in images.iterdir()) == ["tote.jpg", "tote.json"]
    with Image.open(images / "tote.jpg") as picture:
        assert (picture.format, picture.size) == ("JPEG", (1024, 1024))
    sidecar = orjson.loads((images / "tote.json").read_bytes())
    assert sidecar["files"][0]["mime"] == "image/jpeg"


def test_alternate_answers_a_prompts_next_take_in_jpeg_and_the_old_png_goes_to_history(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    sim = threaded_simulator(image_format="alternate")
    path = write_manifest(
        {"job": "alt", "limits": FAST_LIMITS, "items": [{"id": "tote", "prompt": "a tote"}]}
    )
    out = tmp_path / "out"
    assert run(path, sim, out) == 0
    old = (out / "alt/images/tote.png").read_bytes()
    assert main(["redo", str(out / "alt"), "tote", "--base-url", sim.base_url, "-q"]) == 0
    assert sorted(p.name for p in (out / "alt/images").iterdir()) == ["tote.jpg", "tote.json"]
    assert (out / "alt/history/tote.1.png").read_bytes() == old
    assert run(path, sim, out) == 0  # the same take again: nothing sent, nothing changed
    assert sim.stats.requests == 2


def test_the_simulators_image_format_comes_from_its_flags() -> None:
    from batchgen.cli import arguments
    from batchgen.cli.main import simulator_config

    assert (
        simulator_config(arguments.parse(["simulator", "--image-format", "jpeg"]), "").image_format == "jpeg"
    )
    args = arguments.parse(["run", "jobs/", "--simulate", "--sim-image-format", "alternate"])
    assert simulator_config(args, "sim_").image_format == "alternate"
    assert simulator_config(arguments.parse(["simulator"]), "").image_format == "png"
    with pytest.raises(ValueError, match="image format must be one of png, jpeg, alternate, not 'gif'"):
        SimulatorConfig(image_format="gif")


class TestEffectiveSize:
    """The most specific level wins across size and the shorthands; what it overrides is not sent."""

    ITEMS = (
        # id, the item's own fields, what is sent (size, extra_fields), image dimensions
        ("inherits", {}, ("1K", {"image_size": "512", "aspect_ratio": "4:5"}), (464, 576)),
        ("own-class", {"size": "2K"}, ("2K", {"aspect_ratio": "4:5"}), (1856, 2304)),
        ("own-wxh", {"size": "1024x1792"}, ("1024x1792", {}), (768, 1376)),
        (
            "own-shorthand",
            {"image_size": "1K"},
            ("1K", {"image_size": "1K", "aspect_ratio": "4:5"}),
            (928, 1152),
        ),
        (
            "own-both",
            {"size": "2K", "image_size": "512"},
            ("2K", {"image_size": "512", "aspect_ratio": "4:5"}),
            (464, 576),
        ),
    )

    def manifest(self, write_manifest: Callable[..., Path]) -> Path:
        return write_manifest(
            {
                "job": "sizes",
                "limits": FAST_LIMITS,
                "defaults": {"image_size": "512", "aspect_ratio": "4:5"},
                "items": [{"id": i, "prompt": f"p {i}", **own} for i, own, _, _ in self.ITEMS],
            }
        )

    def test_what_is_sent_and_made(
        self,
        threaded_simulator: Callable[..., Simulator],
        write_manifest: Callable[..., Path],
        tmp_path: Path,
    ) -> None:
        sim = threaded_simulator(record_bodies=True)
        assert run(self.manifest(write_manifest), sim, tmp_path / "out") == 0
        sent = {body["prompt"]: body for body in sim.stats.bodies}
        for item_id, _, (size, extra), dimensions in self.ITEMS:
            body = sent[f"p {item_id}"]
            assert (body["size"], body.get("extra_fields", {})) == (size, extra), item_id
            with Image.open(tmp_path / f"out/sizes/images/{item_id}.png") as image:
                assert image.size == dimensions, item_id

    def test_validate_prices_what_will_be_made_and_warns_within_one_level(
        self, write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["validate", str(self.manifest(write_manifest))]) == 0
        captured = capsys.readouterr()
        assert "sizes: 1024x1792 x1, 1K 4:5 x1, 2K 4:5 x1, 512 4:5 x2" in captured.out
        assert "nano-banana-2      512       2 requests      2 images" in captured.out
        assert "nano-banana-2       2K       1 requests      1 images" in captured.out
        (warning,) = captured.err.strip().splitlines()
        assert "items[4] (id own-both): image_size: 512 disagrees with size 2K set beside it" in warning
