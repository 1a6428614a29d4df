"""The README's picture of the review loop: the catalog's gallery with three cards marked.

make screenshot      # runs make demo first; needs chromium
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

PAGE = Path("output/catalog/report.html").resolve()
SHOT = Path("docs/report-catalog.png")
MARKED = ("tote-1001-front-square", "tote-1002-front-portrait", "tote-1003-back-square")


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not PAGE.is_file():
        print("needs chromium and output/catalog/report.html (make demo)", file=sys.stderr)
        return 2
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(PAGE.as_uri())
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        page.locator("#search").fill("tote")
        for item in MARKED:
            page.get_by_label(f"mark {item} to redo").check()
        page.locator(f".card[data-id={MARKED[-1]}]").focus()
        page.wait_for_load_state("load")
        page.evaluate("document.querySelector('h2').scrollIntoView()")
        page.wait_for_timeout(300)  # the thumbnails just scrolled in finish decoding
        page.screenshot(path=str(SHOT))
        browser.close()
    print(f"wrote {SHOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
