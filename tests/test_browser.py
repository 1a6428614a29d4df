"""report.html in a real browser: Playwright drives Debian's chromium with real clicks and keystrokes.

Where chromium truly cannot be, these tests skip and say so (tests/browser.py).
The page keeps its Content Security Policy throughout (no bypass): waiting is done with locators,
which need no eval in the page.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from batchgen.errors import ErrorClass
from batchgen.outcomes import ItemStatus
from batchgen.report import gallery as gallery_module
from batchgen.report.cards import from_folder as cards_of_folder
from batchgen.report.record import Report
from batchgen.report.record import read as read_report
from batchgen.sim.settings import SimulatorConfig
from batchgen.sim.simulator import Simulator

from .browser import cli, expect, needs_chromium, open_page, shown_ids
from .conftest import FAST_LIMITS, ThreadedSimulator

pytestmark = needs_chromium

FIRST_SCREEN_BAR_MS = 3000  # the gallery of a 100,000-item job shows its first screen within this

INJECTED = {
    "script": "<script>document.title='pwned'</script> tote",
    "img": '"><img src=x onerror="document.body.dataset.pwned=1"> tote',
}


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Simulator]]:
    """A job with successes, a refusal and a server failure, some prompts hostile, run end to end;
    the simulator stays up for the redo the page's command makes."""
    folder = tmp_path_factory.mktemp("gallery")
    items = [
        {"id": "ok-1", "prompt": "a red tote bag"},
        {"id": "ok-2", "prompt": INJECTED["script"], "aspect_ratio": "4:5"},
        {"id": "refused", "prompt": "[sim:safety] " + INJECTED["img"]},
        {"id": "down", "prompt": "[sim:502] a mug"},
        *({"id": f"sku-{k}", "prompt": f"a blue mug, view {k}"} for k in range(6)),
    ]
    manifest = folder / "jobs" / "g.yaml"
    manifest.parent.mkdir()
    variants = {
        "amazon": {"size": "200x200", "fit": "pad", "format": "jpeg"},
        "web": {"width": 300, "format": "webp"},
    }
    limits = {**FAST_LIMITS, "max_attempts": 2}
    manifest.write_text(yaml.safe_dump({"job": "g", "limits": limits, "variants": variants, "items": items}))
    with ThreadedSimulator(SimulatorConfig()) as sim:
        run = ["run", str(manifest), "--output", str(folder / "out"), "-q", "--base-url", sim.base_url]
        assert cli(*run) == 1  # its thumbnails and variants made before it returned
        yield folder / "out" / "g", sim


def test_the_page_draws_cards_with_thumbnails_and_runs_its_script(
    page: Any, job: tuple[Path, Simulator]
) -> None:
    folder, _ = job
    open_page(page, folder / "report.html")
    ids = ["ok-1", "ok-2", "refused", "down", *(f"sku-{k}" for k in range(6))]
    assert shown_ids(page) == ids
    expect(page.locator("#shown")).to_have_text("showing 10 of 10")
    sources = [img.get_attribute("src") for img in page.locator("#grid .card img").all()]
    assert sources[:2] == ["thumbs/ok-1.webp", "thumbs/ok-2.webp"]
    assert all((folder / src).is_file() for src in sources)
    page.wait_for_load_state("load")
    sides = page.locator("#grid .card img").evaluate_all(
        "imgs => imgs.map(i => Math.max(i.naturalWidth, i.naturalHeight))"
    )
    assert sides == [384] * 8  # thumbnails, not the 1024-px images
    assert [d.get_attribute("data-class") for d in page.locator("details").all()] == [
        "safety_filter",
        "server_error",
    ]


def test_the_viewer_lists_each_variant_and_opens_it(page: Any, job: tuple[Path, Simulator]) -> None:
    folder, _ = job
    open_page(page, folder / "report.html")
    page.locator(".card[data-id=ok-2]").click()
    links = page.locator("#viewer-variants a")
    expect(links).to_have_text(["amazon", "web"])
    assert [a.get_attribute("href") for a in links.all()] == [
        "variants/amazon/ok-2.jpg",
        "variants/web/ok-2.webp",
    ]
    image = page.locator("#viewer-image")
    with Image.open(folder / "images/ok-2.png") as original:  # 4:5, as the relay made it
        web = [300, round(original.height * 300 / original.width)]
    for name, path, size in [
        ("amazon", "variants/amazon/ok-2.jpg", [200, 200]),
        ("web", "variants/web/ok-2.webp", web),
    ]:
        page.get_by_role("link", name=name).click()
        expect(image).to_have_attribute("src", path)
        expect(page.get_by_role("link", name=name)).to_have_attribute("aria-current", "true")
        image.evaluate("img => img.decode()")  # loaded, or the promise rejects
        assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == size
    # A card without variants (a failure) lists none.
    page.locator("#viewer-close").click()
    page.locator(".card[data-id=refused]").click()
    expect(links).to_have_count(0)


def test_injected_markup_is_shown_as_text_and_runs_nothing(page: Any, job: tuple[Path, Simulator]) -> None:
    folder, _ = job
    open_page(page, folder / "report.html")
    assert page.title() == "g · partial"
    assert page.locator("body").get_attribute("data-pwned") is None
    assert page.locator("img[src=x]").count() == 0
    page.locator(".card[data-id=refused]").click()
    expect(page.locator("#viewer-prompt")).to_have_text("[sim:safety] " + INJECTED["img"])


def test_clicking_filters_and_typing_a_search_narrow_the_cards(
    page: Any, job: tuple[Path, Simulator]
) -> None:
    folder, _ = job
    open_page(page, folder / "report.html")
    page.get_by_role("button", name=re.compile("^failed")).click()
    expect(page.locator("#shown")).to_have_text("showing 2 of 10")
    assert shown_ids(page) == ["refused", "down"]
    page.locator("#class-filter").select_option("safety_filter")
    expect(page.locator("#shown")).to_have_text("showing 1 of 10")
    assert re.search(r"#status=failed&class=safety_filter$", page.url)
    page.get_by_role("button", name=re.compile("^all")).click()
    page.locator("#class-filter").select_option("")
    page.locator("#search").press_sequentially("tote")
    expect(page.locator("#shown")).to_have_text("showing 3 of 10")
    assert shown_ids(page) == ["ok-1", "ok-2", "refused"]
    page.locator("#search").fill("VIEW 3")  # case does not matter
    expect(page.locator("#shown")).to_have_text("showing 1 of 10")
    assert shown_ids(page) == ["sku-3"]


def test_a_view_link_opens_the_viewer_and_arrows_and_enter_work(
    page: Any, job: tuple[Path, Simulator]
) -> None:
    folder, _ = job
    open_page(page, folder / "report.html", "#view=ok-2")
    expect(page.locator("#viewer")).to_have_attribute("open", "")
    expect(page.locator("#viewer-prompt")).to_have_text(INJECTED["script"])
    expect(page.locator("#viewer-image")).to_have_attribute("src", "images/ok-2.png")  # the full image
    assert "aspect_ratio" in page.locator("#viewer-params").inner_text()
    page.keyboard.press("Escape")
    page.locator(".card[data-id=ok-1]").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(page.locator(".card:focus")).to_have_attribute("data-id", "refused")
    page.keyboard.press("Enter")
    expect(page.locator("#viewer-id")).to_have_text("refused")


def test_marking_three_cards_gives_a_redo_list_and_a_command_that_works(
    page: Any, job: tuple[Path, Simulator]
) -> None:
    folder, sim = job
    open_page(page, folder / "report.html")
    page.get_by_label("mark sku-1 to redo").check()  # a click on the checkbox
    page.get_by_label("mark ok-1 to redo").check()
    page.locator(".card[data-id=sku-4]").focus()
    page.keyboard.press("x")  # a keystroke on a focused card
    expect(page.locator("#marked-count")).to_have_text("3")
    expect(page.locator(".card.marked")).to_have_count(3)
    command = page.locator("#redo-command").inner_text()
    assert command == f"batchgen redo {folder} ok-1 sku-1 sku-4"

    with page.expect_download() as download:
        page.get_by_role("button", name="download redo.txt").click()
    assert download.value.suggested_filename == "redo.txt"
    text = Path(download.value.path()).read_text()
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["ok-1", "sku-1", "sku-4"]

    page.reload()  # marks survive
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#marked-count")).to_have_text("3")
    assert page.get_by_label("mark sku-4 to redo").is_checked()
    page.get_by_role("button", name="marked only").click()
    assert shown_ids(page) == ["ok-1", "sku-1", "sku-4"]

    before = dict(sim.stats.by_prompt)
    ids_file = folder.parent / "redo.txt"
    ids_file.write_text(text)
    assert cli("redo", str(folder), "--ids-file", str(ids_file), "--base-url", sim.base_url, "-q") == 1
    sent = {p: n - before.get(p, 0) for p, n in sim.stats.by_prompt.items() if n != before.get(p, 0)}
    assert sent == {"a red tote bag": 1, "a blue mug, view 1": 1, "a blue mug, view 4": 1}

    # The redone cards say v2, and the viewer shows both versions.
    open_page(page, folder / "report.html")
    expect(page.locator(".card[data-id=sku-1] small")).to_contain_text("v2")
    page.locator(".card[data-id=sku-1]").click()
    buttons = page.locator("#viewer-versions button")
    expect(buttons).to_have_text(["v1", "v2 (now)"])
    buttons.first.click()
    expect(page.locator("#viewer-image")).to_have_attribute("src", "history/sku-1.1.png")
    page.keyboard.press("Escape")
    page.get_by_role("button", name="clear").click()
    expect(page.locator("#marked-count")).to_have_text("0")


def big_report(n: int) -> tuple[Report, list[gallery_module.Card]]:
    """A catalog's worth of items: 20,000 products in 5 views, about 1% refused."""
    views = ("front", "back", "side", "detail", "lifestyle")
    params = [{"model": "nano-banana-2", "image_size": "2K", "aspect_ratio": r} for r in ("1:1", "4:5")]
    cards, items, failures = [], [], []
    for k in range(n):
        row, view = divmod(k, 5)
        item = f"sku-{row:06d}-{views[view]}"
        prompt = (
            f"Studio product photo of product {row} in colour {row % 97}, {views[view]} view,"
            " soft shadow on a seamless white background, e-commerce catalog style"
        )
        refused = k % 101 == 0
        files = () if refused else (f"images/{item}.png",)
        cards.append(
            gallery_module.Card(
                item,
                ItemStatus.FAILED if refused else ItemStatus.SUCCEEDED,
                1,
                files,
                prompt,
                params[view % 2],
                ErrorClass.SAFETY_FILTER if refused else None,
                "blocked: SAFETY" if refused else None,
            )
        )
        items.append({"id": item, "status": cards[-1].status.value, "files": list(files), "attempts": 1})
        if refused:
            failures.append(
                {"id": item, "prompt": prompt, "class": "safety_filter", "message": "blocked: SAFETY"}
            )
    counts = {"total": n, "succeeded": n - len(failures), "failed": len(failures), "skipped": 0, "pending": 0}
    report = {
        "job": "big",
        "manifest": "jobs/big.yaml",
        "status": "partial",
        "started_at": "2026-11-24T00:00:00Z",
        "finished_at": "2026-11-24T01:00:00Z",
        "duration_s": 3600.0,
        "counts": counts,
        "requests_sent": n,
        "unconfirmed_attempts": 0,
        "estimated_cost": 1.0,
        "failures": failures,
        "items": items,
    }
    return Report.from_json(report), cards


def test_a_100000_item_gallery_opens_fast_and_filters_searches_and_scrolls(page: Any, tmp_path: Path) -> None:
    report, cards = big_report(100_000)
    path = gallery_module.write(tmp_path, report, cards)
    assert path.stat().st_size < 25_000_000
    started = time.monotonic()
    open_page(page, path)
    ready_ms = int(page.locator("body").get_attribute("data-ready-ms"))
    assert ready_ms < FIRST_SCREEN_BAR_MS, f"first screen after {ready_ms} ms"
    assert time.monotonic() - started < 30
    expect(page.locator("#shown")).to_have_text("showing 100,000 of 100,000")
    assert page.locator("#grid .card").count() < 200  # only what is on screen is drawn

    page.locator("#search").fill("product 1234 in")
    expect(page.locator("#shown")).to_have_text("showing 5 of 100,000")
    assert shown_ids(page) == [f"sku-001234-{v}" for v in ("front", "back", "side", "detail", "lifestyle")]
    page.locator("#search").fill("")
    page.get_by_role("button", name=re.compile("^failed")).click()
    expect(page.locator("#shown")).to_have_text("showing 991 of 100,000")
    page.get_by_role("button", name=re.compile("^all")).click()
    expect(page.locator("#shown")).to_have_text("showing 100,000 of 100,000")

    page.keyboard.press("End")  # to the last row: its cards are drawn there
    expect(page.locator(".card[data-id=sku-019999-lifestyle]")).to_be_visible()
    assert page.locator("#grid .card").count() < 200


def test_an_older_job_without_thumbnails_shows_the_images_until_report_makes_them(
    page: Any, job: tuple[Path, Simulator], tmp_path: Path
) -> None:
    folder, _ = job
    old = tmp_path / "old"
    shutil.copytree(folder, old, ignore=shutil.ignore_patterns("thumbs"))
    report = read_report(old)
    gallery_module.write(old, report, cards_of_folder(old, report))
    open_page(page, old / "report.html")
    expect(page.locator(".card[data-id=ok-1] img")).to_have_attribute("src", re.compile(r"images/ok-1\.png$"))
    assert cli("report", str(old), "-q") == 1
    assert (old / "thumbs/ok-1.webp").is_file()
    open_page(page, old / "report.html")
    expect(page.locator(".card[data-id=ok-1] img")).to_have_attribute("src", "thumbs/ok-1.webp")


def test_hostile_messages_parameters_and_prompts_stay_text(page: Any, tmp_path: Path) -> None:
    """A failure message and request parameters from a service, and a prompt that would open a
    comment-and-script in the data block: each shown as written, none run, the page whole."""
    message = '<img src=x onerror="document.body.dataset.pwned=1"> refused'
    note = '<img src=x onerror="document.body.dataset.pwned=2">'
    prompt = "<!--<script a tote, --> <script"
    cards = [
        gallery_module.Card(
            "bad", ItemStatus.FAILED, 1, (), "a mug", {"note": note}, ErrorClass.SAFETY_FILTER, message
        ),
        gallery_module.Card("odd", ItemStatus.PENDING, 0, (), prompt),
    ]
    report = Report.from_json(
        {
            "job": "hostile",
            "manifest": "jobs/hostile.yaml",
            "status": "partial",
            "started_at": "2026-11-24T00:00:00Z",
            "finished_at": "2026-11-24T00:01:00Z",
            "duration_s": 60.0,
            "requests_sent": 1,
            "unconfirmed_attempts": 0,
            "estimated_cost": 0.0,
            "failures": [{"id": "bad", "prompt": "a mug", "class": "safety_filter", "message": message}],
            "items": [
                {"id": "bad", "status": "failed", "files": [], "attempts": 1},
                {"id": "odd", "status": "pending", "files": [], "attempts": 0},
            ],
        }
    )
    path = gallery_module.write(tmp_path, report, cards)
    open_page(page, path, "#view=bad")
    expect(page.locator("#viewer-message")).to_have_text(message)
    expect(page.locator("#viewer-params")).to_contain_text(note)
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("body").get_attribute("data-pwned") is None
    assert shown_ids(page) == ["bad", "odd"]
    page.keyboard.press("Escape")
    page.locator(".card[data-id=odd]").click()
    expect(page.locator("#viewer-prompt")).to_have_text(prompt)
