"""report.html in a real browser: headless Chromium renders an end-to-end run's gallery and we
read the DOM after the page's script ran. .ci/run installs Debian's chromium when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from batchgen.cli import main
from batchgen.simulator import SimulatorConfig

from .conftest import FAST_LIMITS, ThreadedSimulator, batchgen_logger_kept

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's chromium package)"
)

# Flags for a closed network: without the background-networking ones, Chromium keeps trying to reach Google.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--virtual-time-budget=5000",
]

INJECTED = {
    "script": "<script>document.title='pwned'</script> tote",
    "img": '"><img src=x onerror="document.body.dataset.pwned=1"> tote',
}


class Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._title = False
        self.title = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._title:
            self.title += data

    def cards(self, *, visible: bool) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == "figure" and ("hidden" not in a) == visible]


def dump(page: Path, tmp_path: Path, fragment: str = "") -> Dom:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    done = subprocess.run(
        [
            CHROMIUM or "chromium",
            *FLAGS,
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Dom()
    dom.feed(done.stdout)
    return dom


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job with successes, a refusal and a server failure, some prompts hostile, run end to end."""
    folder = tmp_path_factory.mktemp("gallery")
    items = [
        {"id": "ok-1", "prompt": "a red tote bag"},
        {"id": "ok-2", "prompt": INJECTED["script"], "aspect_ratio": "4:5"},
        {"id": "refused", "prompt": "[sim:safety] " + INJECTED["img"]},
        {"id": "down", "prompt": "[sim:502] a mug"},
    ]
    manifest = folder / "jobs" / "g.yaml"
    manifest.parent.mkdir()
    manifest.write_text(
        yaml.safe_dump({"job": "g", "limits": {**FAST_LIMITS, "max_attempts": 2}, "items": items})
    )
    run = ["run", str(manifest), "--output", str(folder / "out"), "-q"]
    with (
        ThreadedSimulator(SimulatorConfig()) as sim,
        pytest.MonkeyPatch.context() as env,
        batchgen_logger_kept(),
    ):
        env.setenv("BATCHGEN_API_KEY", "k")
        env.delenv("BATCHGEN_BASE_URL", raising=False)
        code = main([*run, "--base-url", sim.base_url])
    assert code == 1
    return folder / "out" / "g" / "report.html"


def test_the_page_renders_cards_failures_and_filters_and_runs_its_script(
    gallery: Path, tmp_path: Path
) -> None:
    dom = dump(gallery, tmp_path)
    body = next(a for t, a in dom.elements if t == "body")
    assert body.get("data-ready") == "true"  # our script ran to the end
    assert [c["data-id"] for c in dom.cards(visible=True)] == ["ok-1", "ok-2", "refused", "down"]
    assert [a["data-class"] for t, a in dom.elements if t == "details"] == ["safety_filter", "server_error"]
    assert any(t == "input" and a.get("id") == "search" for t, a in dom.elements)
    assert any(t == "select" and a.get("id") == "class-filter" for t, a in dom.elements)
    assert "showing 4 of 4" in dom.text
    loaded = [a["src"] for t, a in dom.elements if t == "img" and a.get("loading") == "lazy"]
    assert loaded == ["images/ok-1.png", "images/ok-2.png"]
    assert all((gallery.parent / src).is_file() for src in loaded)  # type: ignore[operator]


def test_injected_markup_is_shown_as_text_and_runs_nothing(gallery: Path, tmp_path: Path) -> None:
    dom = dump(gallery, tmp_path)
    assert dom.title == "g · partial"
    body = next(a for t, a in dom.elements if t == "body")
    assert "data-pwned" not in body
    assert not any(t == "img" and a.get("src") == "x" for t, a in dom.elements)
    assert not any(k.startswith("on") for _, a in dom.elements for k in a)
    text = "".join(dom.text)
    assert INJECTED["img"].removesuffix(" tote") in text  # shown, as the characters it is


@pytest.mark.parametrize(
    ("fragment", "visible", "shown"),
    [
        ("#status=failed", ["refused", "down"], "showing 2 of 4"),
        ("#status=failed&class=safety_filter", ["refused"], "showing 1 of 4"),
        ("#q=tote", ["ok-1", "ok-2", "refused"], "showing 3 of 4"),
        ("#status=succeeded&q=red", ["ok-1"], "showing 1 of 4"),
    ],
)
def test_filters_and_search_work_in_the_browser(
    gallery: Path, tmp_path: Path, fragment: str, visible: list[str], shown: str
) -> None:
    dom = dump(gallery, tmp_path, fragment)
    assert [c["data-id"] for c in dom.cards(visible=True)] == visible
    assert shown in dom.text


def test_a_view_link_opens_the_viewer_with_prompt_and_parameters(gallery: Path, tmp_path: Path) -> None:
    dom = dump(gallery, tmp_path, "#view=ok-2")
    dialog = next(a for t, a in dom.elements if t == "dialog")
    assert "open" in dialog
    assert dialog.get("data-id") == "ok-2"
    text = "".join(dom.text)
    assert INJECTED["script"] in text  # the prompt, as text
    assert "aspect_ratio4:5" in text  # a parameter row: name, value
    assert "images/ok-2.png" in text
    assert (
        next(a for t, a in dom.elements if t == "img" and a.get("id") == "viewer-image")["src"]
        == "images/ok-2.png"
    )
