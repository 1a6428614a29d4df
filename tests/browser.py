"""Chromium for the gallery's tests (test_browser, test_arrived_gallery, test_chain_gallery): where
it is, the flags that keep it off the network, and what those tests do with a page.

Playwright drives Debian's chromium; .ci/run installs it when it is missing, and where it truly
cannot be, a module that imports this one is skipped and says so. The ``browser`` (one per
module) and ``page`` fixtures are in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's chromium package)"
)
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

# A closed network: without the background-networking flags, Chromium keeps trying to reach Google.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]


def cli(*args: str) -> int:
    """``batchgen ARGS`` in a process of its own: Playwright's sync API keeps an event loop running
    in this one, and the CLI starts its own (with signal handlers, main thread only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGEN_")}
    done = subprocess.run(
        [sys.executable, "-m", "batchgen", *args],
        env={**env, "BATCHGEN_API_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def open_page(page: Any, path: Path, fragment: str = "") -> None:
    page.goto(path.as_uri() + fragment)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def shown_ids(page: Any) -> list[str]:
    return [c.get_attribute("data-id") for c in page.locator("#grid .card").all()]
