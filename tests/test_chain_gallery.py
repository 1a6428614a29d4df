"""The gallery's viewer in a real browser: a view links to the hero it was made from, and back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from batchgen.sim.settings import SimulatorConfig

from .browser import cli, expect, needs_chromium, open_page
from .conftest import FAST_LIMITS, ThreadedSimulator

pytestmark = needs_chromium


def test_the_viewer_links_a_view_to_its_hero_and_the_hero_to_its_views(page: Any, tmp_path: Path) -> None:
    items = [
        {"id": "hero", "prompt": "a red tote bag"},
        {"id": "back", "prompt": "the same bag, back view", "references": ["@hero"]},
        {"id": "side", "prompt": "the same bag, side view", "references": ["@hero"]},
    ]
    manifest = tmp_path / "jobs" / "c.yaml"
    manifest.parent.mkdir()
    manifest.write_text(yaml.safe_dump({"job": "c", "limits": FAST_LIMITS, "items": items}))
    with ThreadedSimulator(SimulatorConfig()) as sim:
        assert (
            cli("run", str(manifest), "--output", str(tmp_path / "out"), "-q", "--base-url", sim.base_url)
            == 0
        )
    open_page(page, tmp_path / "out" / "c" / "report.html", "#view=back")
    expect(page.locator("#viewer-id")).to_have_text("back")
    made_from = page.locator("#viewer-params tr", has_text="made from").locator("a")
    expect(made_from).to_have_text(["hero"])
    made_from.click()
    expect(page.locator("#viewer-id")).to_have_text("hero")
    made_into = page.locator("#viewer-params tr", has_text="made into").locator("a")
    expect(made_into).to_have_text(["back", "side"])
    expect(page.locator("#viewer-params tr", has_text="made from")).to_have_count(0)
