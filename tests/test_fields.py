"""One pure check per item field."""

from __future__ import annotations

from typing import Any

import pytest

from batchgen.manifest import fields


@pytest.mark.parametrize(
    ("field", "value", "normal", "error"),
    [
        ("prompt", "a bag", "a bag", None),
        ("prompt", "  ", None, "must be non-empty text"),
        ("prompt", 5, None, "must be non-empty text, not 5"),
        ("prompt", "x" * 40_000, None, "is 40000 characters"),
        ("size", 512, "512", None),
        ("size", "2K", "2K", None),
        ("size", "800x600", "800x600", None),
        ("size", "0x600", None, "must be one of"),
        ("size", True, None, "must be one of"),
        ("size", "2k", None, "must be one of"),
        ("n", 3, 3, None),
        ("n", True, None, "whole number"),
        ("n", 1.0, None, "whole number"),
        ("response_format", "url", "url", None),
        ("response_format", "URL", None, "b64_json or url"),
        ("extra_fields", {"seed": 1}, {"seed": 1}, None),
        ("extra_fields", {1: 2}, None, "mapping of field names"),
        ("aspect_ratio", "16:9", "16:9", None),
        ("image_size", 512, "512", None),
        ("image_size", "", None, "must be text"),
        ("model", "nano-banana-pro", "nano-banana-pro", None),
        ("model", None, None, "must be a model id"),
    ],
)
def test_field_checks(field: str, value: Any, normal: Any, error: str | None) -> None:
    got, message = fields.CHECKS[field](value)
    assert got == normal
    if error is None:
        assert message is None
    else:
        assert message is not None
        assert error in message


@pytest.mark.parametrize(
    ("model", "size", "extra", "warned"),
    [
        ("nano-banana-2", "1K", {}, []),
        ("nano-banana-2", "1K", {"aspect_ratio": "4:5", "image_size": "2K", "reference_images": []}, []),
        # references under a key the relay does not read: generated without them
        ("nano-banana-2", "1K", {"image_urls": ["https://cdn.test/a.png"]}, ["extra_fields.image_urls"]),
        ("nano-banana-2", "1K", {"images": []}, ["extra_fields.images"]),
        ("nano-banana-2", "1K", {"aspect_ratio": "1:8"}, []),
        ("nano-banana-pro", "1K", {"aspect_ratio": "1:8"}, ["aspect_ratio"]),
        ("nano-banana-2", "1K", {"aspect_ratio": "5:1"}, ["aspect_ratio"]),
        ("nano-banana-2", "1K", {"image_size": "8K"}, ["image_size"]),
        ("nano-banana-2", "1K", {"seed": 1}, ["extra_fields.seed"]),
        ("gpt-image-1", "1K", {}, ["model"]),
        ("nano-banana-2", "640x480", {}, ["size"]),
    ],
)
def test_item_warnings(model: str, size: str, extra: dict[str, Any], warned: list[str]) -> None:
    assert [f for f, _ in fields.item_warnings(model, size, extra, "reference_images")] == warned


def test_a_reference_key_the_relay_ignores_says_where_references_go() -> None:
    ((field, message),) = fields.item_warnings("nano-banana-2", "1K", {"image_urls": []}, "reference_images")
    assert field == "extra_fields.image_urls"
    assert "extra_fields.reference_images" in message
    assert "generates without them" in message
    # A relay that reads image_urls is configured with api.reference_field, and then nothing warns.
    assert fields.item_warnings("nano-banana-2", "1K", {"image_urls": []}, "image_urls") == []


@pytest.mark.parametrize(
    ("size", "image_size", "ratio", "warned"),
    [
        (None, "1K", "16:9", []),  # nothing beside them to contradict
        ("4K", None, None, []),
        ("4K", "4K", "4:5", []),
        ("4K", "1K", None, ["image_size"]),
        ("1024x1792", "1K", "9:16", []),
        ("1024x1792", "2K", None, ["image_size"]),
        ("1024x1792", None, "16:9", ["aspect_ratio"]),
        ("1024x1792", "1K", "16:9", ["aspect_ratio"]),
        ("2K", None, "21:9", []),  # a class says nothing of the shape
        ("640x480", None, "4:3", []),
    ],
)
def test_contradictions_within_one_level(
    size: str | None, image_size: str | None, ratio: str | None, warned: list[str]
) -> None:
    assert [f for f, _ in fields.contradictions(size, image_size, ratio)] == warned
