"""The gallery's flag filter in a real browser: a run against a relay that loses ``image_size``
flags the items asked at 2K, and the filter shows those cards and no other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .browser import cli, expect, needs_chromium, open_page, shown_ids

pytestmark = needs_chromium

ITEMS = [
    {"id": "hero-2k", "prompt": "a hero shot of a tote", "image_size": "2K"},
    {"id": "plain-1", "prompt": "a tote, front"},
    {"id": "wide-2k", "prompt": "a wide tote banner", "image_size": "2K", "aspect_ratio": "16:9"},
    {"id": "plain-2", "prompt": "a tote, back", "aspect_ratio": "4:5"},
]


@pytest.fixture(scope="module")
def flagged_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flags")
    manifest = folder / "jobs" / "f.yaml"
    manifest.parent.mkdir()
    manifest.write_text(yaml.safe_dump({"job": "f", "items": ITEMS}))
    out = folder / "out"
    run = ["run", str(manifest), "--simulate", "--sim-drop-fields", "image_size", "--output", str(out), "-q"]
    assert cli(*run) == 0
    assert cli("report", str(out / "f"), "-q") == 0  # the thumbnails, all there
    return out / "f"


def test_the_flag_filter_shows_only_the_flagged_cards(page: Any, flagged_job: Path) -> None:
    open_page(page, flagged_job / "report.html")
    assert shown_ids(page) == ["hero-2k", "plain-1", "wide-2k", "plain-2"]
    options = page.locator("#flag-filter option").all_inner_texts()
    assert options == ["flagged or not", "flagged (2)", "size_mismatch (2)"]

    page.locator("#flag-filter").select_option("size_mismatch")
    expect(page.locator("#shown")).to_have_text("showing 2 of 4")
    assert shown_ids(page) == ["hero-2k", "wide-2k"]
    assert re.search(r"#flag=size_mismatch$", page.url)
    for card in page.locator("#grid .card").all():
        assert card.get_attribute("data-flags") == "size_mismatch"
        expect(card.locator(".badge.flag")).to_have_text("size_mismatch")
    expect(page.locator(".card[data-id=wide-2k] small")).to_contain_text("1376x768")

    page.locator("#flag-filter").select_option("")
    expect(page.locator("#shown")).to_have_text("showing 4 of 4")
    assert page.locator(".card[data-id=plain-1] .badge.flag").count() == 0
    # Cards are laid out at one measured height: a flagged one is no taller than the others.
    heights = {
        card.get_attribute("data-id"): card.bounding_box()["height"]
        for card in page.locator("#grid .card").all()
    }
    assert heights["hero-2k"] == heights["plain-1"]


def test_a_flag_link_opens_filtered_and_the_viewer_lists_pixels_and_flags(
    page: Any, flagged_job: Path
) -> None:
    open_page(page, flagged_job / "report.html", "#flag=any&view=hero-2k")
    expect(page.locator("#shown")).to_have_text("showing 2 of 4")
    assert shown_ids(page) == ["hero-2k", "wide-2k"]
    params = page.locator("#viewer-params")
    expect(params).to_contain_text("pixels1024x1024")
    expect(params).to_contain_text("flagssize_mismatch")
