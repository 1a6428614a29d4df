"""The plan is pure: items in, request records out; fingerprints see reference content."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

import pytest

from batchgen import relay
from batchgen.manifest import sizes
from batchgen.manifest.references import LocalReference, UrlReference
from batchgen.manifest.spec import ItemSpec
from batchgen.plan.plan import build_body, fingerprint, plan_item
from batchgen.plan.pricing import PriceTable

from .fakes import make_spec

PRICES = PriceTable(
    "USD",
    {"nano-banana-2": {"512": 1, "1K": 2, "2K": 3, "4K": 4}, "*": {"512": 10, "1K": 20, "2K": 30, "4K": 40}},
)


def spec(**overrides: object) -> ItemSpec:
    base = make_spec(0, "sku-1", "a tote")
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_plain_request_has_no_extra_fields() -> None:
    planned = plan_item(spec(), "reference_images", PRICES)
    assert build_body(planned, []) == {
        "model": "nano-banana-2",
        "prompt": "a tote",
        "size": "1K",
        "n": 1,
        "response_format": "b64_json",
    }
    assert planned.image_stems == ("images/sku-1",)
    assert planned.sidecar == "images/sku-1.json"


def test_references_go_under_the_configured_field() -> None:
    planned = plan_item(
        spec(
            extra_fields=MappingProxyType({"aspect_ratio": "4:5"}),
            references=(UrlReference("https://a/x.png"),),
        ),
        "reference_images",
        PRICES,
    )
    body = build_body(planned, ["data:image/png;base64,AAAA"])
    assert body["extra_fields"] == {"aspect_ratio": "4:5", "reference_images": ["data:image/png;base64,AAAA"]}
    assert "reference_images" not in planned.body.get("extra_fields", {})  # the record is untouched


@pytest.mark.parametrize(
    ("n", "stems"),
    [(1, ("images/x",)), (2, ("images/x-1", "images/x-2")), (3, ("images/x-1", "images/x-2", "images/x-3"))],
)
def test_output_stems(n: int, stems: tuple[str, ...]) -> None:
    assert plan_item(spec(id="x", n=n), "f", PRICES).image_stems == stems


@pytest.mark.parametrize(
    ("model", "size", "extra", "n", "size_class", "cost"),
    [
        ("nano-banana-2", "1K", {}, 1, "1K", 2),
        ("nano-banana-2", "1024x1792", {}, 2, "1K", 4),
        ("nano-banana-2", "512", {}, 1, "512", 1),
        ("nano-banana-2", "1K", {"image_size": "4K"}, 1, "4K", 4),  # image_size wins
        ("nano-banana-2", "800x600", {}, 1, "1K", 2),  # unknown WxH: the service's default
        ("other-model", "2K", {}, 3, "2K", 90),  # unknown model: the '*' row
    ],
)
def test_size_class_and_cost(
    model: str, size: str, extra: dict[str, str], n: int, size_class: str, cost: float
) -> None:
    planned = plan_item(spec(model=model, size=size, n=n, extra_fields=MappingProxyType(extra)), "f", PRICES)
    assert (planned.size_class, planned.estimated_cost) == (size_class, cost)


@pytest.mark.parametrize(
    ("size", "extra", "shape"),
    [
        ("1K", {}, ("1K", None, (1024, 1024))),
        ("2K", {"aspect_ratio": "16:9"}, ("2K", (16, 9), (2752, 1536))),
        ("1K", {"image_size": "4K", "aspect_ratio": "4:5"}, ("4K", (4, 5), (3712, 4608))),
        ("1024x1792", {}, ("1K", (1024, 1792), (768, 1376))),
    ],
)
def test_a_request_carries_the_shape_its_images_are_checked_against(
    size: str, extra: dict[str, str], shape: tuple[object, ...]
) -> None:
    planned = plan_item(spec(size=size, extra_fields=MappingProxyType(extra)), "f", PRICES)
    assert (planned.shape.size_class, planned.shape.aspect, planned.shape.answered) == shape


def test_fingerprint_sees_content_not_paths() -> None:
    a = plan_item(spec(references=(LocalReference(Path("/a.png"), "a.png"),)), "f", PRICES)
    b = plan_item(spec(references=(LocalReference(Path("/b.png"), "b.png"),)), "f", PRICES)
    assert fingerprint(a, ["sha256:1"]) == fingerprint(b, ["sha256:1"])
    assert fingerprint(a, ["sha256:1"]) != fingerprint(a, ["sha256:2"])


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a bag"},
        {"size": "2K"},
        {"n": 2},
        {"model": "nano-banana-pro"},
        {"extra_fields": MappingProxyType({"seed": 1})},
    ],
)
def test_fingerprint_changes_with_the_request(change: dict[str, object]) -> None:
    assert fingerprint(plan_item(spec(), "f", PRICES), []) != fingerprint(
        plan_item(spec(**change), "f", PRICES), []
    )


def test_fingerprint_ignores_the_id_and_order_of_extra_keys() -> None:
    one = spec(extra_fields=MappingProxyType({"a": 1, "b": 2}))
    two = spec(id="other", index=5, extra_fields=MappingProxyType({"b": 2, "a": 1}))
    assert fingerprint(plan_item(one, "f", PRICES), []) == fingerprint(plan_item(two, "f", PRICES), [])


@pytest.mark.parametrize(
    ("size", "dims"),
    [
        ("1024x1024", (1024, 1024)),
        ("1024x1792", (768, 1376)),  # Gemini's 9:16, the ratio nearest the size asked
        ("1792x1024", (1376, 768)),
        ("2K", (2048, 2048)),
        ("512", (512, 512)),
    ],
)
def test_dimensions_of_plain_sizes(size: str, dims: tuple[int, int]) -> None:
    assert sizes.dimensions(size, None, None) == dims


@pytest.mark.parametrize("image_size", relay.IMAGE_SIZES)
@pytest.mark.parametrize("ratio", relay.ASPECT_RATIOS + relay.EXTREME_RATIOS)
def test_dimensions_keep_the_ratio_and_the_class(image_size: str, ratio: str) -> None:
    w, h = sizes.dimensions("1K", image_size, ratio)
    a, b = (int(x) for x in ratio.split(":"))
    side = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}[image_size]
    assert w % 8 == 0
    assert h % 8 == 0
    assert not sizes.requested("1K", image_size, ratio).mismatch(w, h)
    if ratio in relay.EXTREME_RATIOS:  # not in Gemini's table: the class's pixel count
        assert abs(w * h / side**2 - 1) < 0.03
    else:
        assert abs((w / h) / (a / b) - 1) < 0.011  # Gemini's own sizes are up to 1% off the ratio
