"""report.html, read as a parser reads it: every card and failure group there, nothing injected."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson

from batchgen.outcomes import ItemStatus
from batchgen.report import cards as folder_cards
from batchgen.report import gallery
from batchgen.report.record import Report

HOSTILE = [
    "<script>document.title='pwned'</script>",
    '"><img src=x onerror="document.body.dataset.pwned=1">',
    "</script><script>document.title='pwned'</script>",
    "{{nonce}} {{grid}} & <!-- comment",
]


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def report(items: list[dict[str, Any]], failures: list[dict[str, Any]]) -> Report:
    """A report.json as written, read back through its reader."""
    counts = {s: sum(i["status"] == s for i in items) for s in ("succeeded", "failed", "skipped", "pending")}
    return Report.from_json(
        {
            "job": "j<b>",
            "manifest": "m.yaml",
            "status": "partial",
            "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:00:09Z",
            "duration_s": 9.0,
            "counts": {"total": len(items), **counts},
            "requests_sent": 7,
            "unconfirmed_attempts": 1,
            "estimated_cost": 0.12,
            "failures": failures,
            "items": items,
        }
    )


def hostile_page(tmp_path: Path) -> str:
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "images/ok.json").write_bytes(
        orjson.dumps(
            {
                "request": {
                    "prompt": HOSTILE[0],
                    "model": "nano-banana-2",
                    "size": "1K",
                    "extra_fields": {"aspect_ratio": "4:5", "style": HOSTILE[1]},
                }
            }
        )
    )
    items = [
        {"id": "ok", "status": "succeeded", "files": ["images/ok.png"], "attempts": 1},
        {"id": "bad", "status": "failed", "files": [], "attempts": 1},
        {"id": "flaky", "status": "failed", "files": [], "attempts": 4},
        {"id": "later", "status": "pending", "files": [], "attempts": 0},
    ]
    failures = [
        {
            "id": "bad",
            "prompt": HOSTILE[2],
            "class": "safety_filter",
            "message": HOSTILE[1],
            "http_status": 500,
            "attempts": 1,
            "retryable": False,
        },
        {
            "id": "flaky",
            "prompt": HOSTILE[3],
            "class": "server_error",
            "message": "HTTP 502",
            "http_status": 502,
            "attempts": 4,
            "retryable": True,
        },
    ]
    return gallery.render(
        report(items, failures), folder_cards.from_folder(tmp_path, report(items, failures))
    )


def data(page: str) -> dict[str, Any]:
    """The page's data block, read as its script reads it (JSON.parse of the element's text)."""
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert found is not None
    return dict(orjson.loads(found.group(1)))


def cards(page: str) -> dict[str, dict[str, Any]]:
    """Each item as the script sees it, keyed by id."""
    d = data(page)
    out = {}
    for row in d["items"]:
        row = [*row, *[None] * (9 - len(row))]
        out[row[0]] = {
            "status": d["statuses"][row[1]],
            "class": d["classes"][row[2]] if row[2] >= 0 else "",
            "attempts": row[3],
            "params": d["params"][row[4]],
            "prompt": row[5],
            "files": row[6],
            "version": row[7] or 1,
            "message": row[8],
        }
    return out


def test_items_filters_and_failure_groups_are_all_there(tmp_path: Path) -> None:
    page = hostile_page(tmp_path)
    parser = Tags()
    parser.feed(page)
    shown = cards(page)
    assert [(k, c["status"], c["class"]) for k, c in shown.items()] == [
        ("ok", "succeeded", ""),
        ("bad", "failed", "safety_filter"),
        ("flaky", "failed", "server_error"),
        ("later", "pending", ""),
    ]
    assert shown["ok"]["files"] == "png"  # images/ok.png, written as its extension alone
    assert shown["flaky"]["attempts"] == 4
    assert [a["data-class"] for t, a in parser.tags if t == "details"] == ["safety_filter", "server_error"]
    assert [a["data-status"] for t, a in parser.tags if t == "button" and "data-status" in a] == [
        "all",
        "succeeded",
        "failed",
        "skipped",
        "pending",
    ]
    assert [a["value"] for t, a in parser.tags if t == "option"] == ["", "safety_filter", "server_error"]
    assert "<b>9.0 s</b>" in page
    assert "<b>$0.12</b>" in page
    assert not any(t == "figure" for t, _ in parser.tags)  # the script draws the cards on screen only


def test_nothing_from_a_manifest_or_a_response_becomes_markup(tmp_path: Path) -> None:
    page = hostile_page(tmp_path)
    parser = Tags()
    parser.feed(page)
    scripts = [a for t, a in parser.tags if t == "script"]
    assert [a.get("type") for a in scripts] == ["application/json", None]  # data, and ours
    assert "nonce" not in scripts[0]  # the data block is never run
    assert not any(k.startswith("on") for _, attrs in parser.tags for k in attrs)
    assert not any(t == "img" and a.get("src") == "x" for t, a in parser.tags)
    assert "<title>j&lt;b&gt; · partial</title>" in page
    shown = cards(page)
    assert shown["bad"]["prompt"] == HOSTILE[2]  # the text survives intact, as text
    assert shown["flaky"]["prompt"] == HOSTILE[3]  # slot names inside text are left alone
    assert shown["bad"]["message"] == HOSTILE[1]
    assert page.count("</script>") == 2  # a prompt's "</script>" did not end the data block


def test_a_nonce_csp_locks_scripts_styles_and_the_network(tmp_path: Path) -> None:
    page = hostile_page(tmp_path)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp.group(1))
    assert nonce is not None
    assert "default-src 'none'" in csp.group(1)
    assert f'<script nonce="{nonce.group(1)}">' in page
    assert f'<style nonce="{nonce.group(1)}">' in page
    again = re.search(r"script-src 'nonce-([^']+)'", hostile_page(tmp_path / "again"))
    assert again is not None
    assert nonce.group(1) != again.group(1)  # fresh per file
    assert "http://" not in page  # no CDN, nothing fetched
    assert "https://" not in page


def test_the_viewer_gets_request_parameters_from_the_sidecar(tmp_path: Path) -> None:
    shown = cards(hostile_page(tmp_path))
    assert shown["ok"]["params"] == {
        "model": "nano-banana-2",
        "size": "1K",
        "aspect_ratio": "4:5",
        "extra_fields.style": HOSTILE[1],
    }
    assert shown["flaky"]["params"] == {}


def test_items_asked_the_same_way_share_one_parameter_entry() -> None:
    # Equal values in objects of their own (as a folder's sidecars give them), keys in any order.
    many = [
        gallery.Card(
            f"i{k}",
            ItemStatus.SUCCEEDED,
            1,
            (f"images/i{k}.png",),
            f"p {k}",
            {"model": "nano-banana-2", "size": "1K"} if k % 2 else {"size": "1K", "model": "nano-banana-2"},
        )
        for k in range(500)
    ]
    items = [{"id": c.id, "status": c.status, "files": list(c.files), "attempts": 1} for c in many]
    page = gallery.render(report(items, []), many)
    assert data(page)["params"] == [{"model": "nano-banana-2", "size": "1K"}]
    assert len(page) < 500 * 40 + 30_000  # about 30 bytes per item beyond its id and prompt


def test_each_item_shows_its_own_parameters_when_each_card_brings_a_fresh_set() -> None:
    # Cards made one at a time and dropped once drawn: a set gone may leave its address to the next.
    def made() -> Iterator[gallery.Card]:
        for k in range(200):
            yield gallery.Card(f"i{k}", ItemStatus.PENDING, 0, (), "p", {"size": f"{k % 3}K"})

    items = [{"id": f"i{k}", "status": "pending", "files": [], "attempts": 0} for k in range(200)]
    page = gallery.render(report(items, []), made())
    shown = cards(page)
    assert [shown[f"i{k}"]["params"] for k in range(200)] == [{"size": f"{k % 3}K"} for k in range(200)]
    assert len(data(page)["params"]) == 3


def test_a_folders_items_asked_the_same_way_share_one_entry(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    asked = {"model": "nano-banana-2", "size": "1K", "extra_fields": {"aspect_ratio": "4:5"}}
    for k in range(3):
        sidecar = {"request": {**asked, "prompt": f"p {k}"}}
        (tmp_path / f"images/i{k}.json").write_bytes(orjson.dumps(sidecar))
    items = [
        {"id": f"i{k}", "status": "succeeded", "files": [f"images/i{k}.png"], "attempts": 1} for k in range(3)
    ]
    page = gallery.render(report(items, []), folder_cards.from_folder(tmp_path, report(items, [])))
    assert data(page)["params"] == [{"model": "nano-banana-2", "size": "1K", "aspect_ratio": "4:5"}]
    assert {c["params"]["aspect_ratio"] for c in cards(page).values()} == {"4:5"}


def test_redone_items_list_their_kept_versions(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "history").mkdir()
    for name in (
        "a.1.png",
        "a.1.json",
        "a.2.jpg",
        "a.2.json",
        "b-x.1.png",
        "b-x.1.json",
        "c-1.1.png",
        "c-2.1.png",
        "c.1.json",
    ):
        (tmp_path / "history" / name).write_bytes(b"x")
    items = [
        {"id": i, "status": "succeeded", "files": [f"images/{i}.png"], "attempts": 1, "version": v}
        for i, v in (("a", 3), ("b-x", 2), ("c", 2), ("d", 1))
    ]
    path = gallery.write(tmp_path, report(items, []), folder_cards.from_folder(tmp_path, report(items, [])))
    d = data(path.read_text())
    assert d["history"] == {
        "a": ["history/a.1.png", "history/a.2.jpg"],
        "b-x": ["history/b-x.1.png"],  # an id with a dash is not an image number
        "c": ["history/c-1.1.png", "history/c-2.1.png"],
    }
    assert {k: c["version"] for k, c in cards(path.read_text()).items()} == {"a": 3, "b-x": 2, "c": 2, "d": 1}


def test_a_long_failure_class_is_cut_short_in_the_table(tmp_path: Path) -> None:
    failures = [
        {"id": f"f{k}", "prompt": "p", "class": "timeout", "message": "m", "attempts": 1, "retryable": True}
        for k in range(gallery.FAILURES_SHOWN + 7)
    ]
    items = [{"id": f["id"], "status": "failed", "files": [], "attempts": 1} for f in failures]
    page = gallery.render(
        report(items, failures), folder_cards.from_folder(tmp_path, report(items, failures))
    )
    assert page.count("<tr><td>f") == gallery.FAILURES_SHOWN
    assert "… and 7 more" in page
    assert len(data(page)["items"]) == len(failures)  # the grid has them all


def test_a_prompt_that_opens_a_comment_and_a_script_leaves_the_data_block_whole() -> None:
    # "<!--<script" puts an HTML parser in a state where the block's "</script>" no longer ends it:
    # escaping "</" alone is not enough, no "<" may reach the block at all.
    prompt = "<!--<script a tote, --> <script"
    odd = [gallery.Card("odd", ItemStatus.PENDING, 0, (), prompt)]
    page = gallery.render(report([{"id": "odd", "status": "pending", "files": [], "attempts": 0}], []), odd)
    block = page.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block
    assert cards(page)["odd"]["prompt"] == prompt  # and the prompt reads back as written


def test_the_pages_script_writes_text_never_markup() -> None:
    # What a service answered (a failure message, a parameter) reaches the page through the script:
    # every sink that parses HTML would turn it into markup. (tests/test_browser.py sees it in Chromium.)
    page = gallery.render(report([], []), [])
    script = page.rsplit("<script nonce=", 1)[1]
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "srcdoc",
        "createContextualFragment",
    ):
        assert sink not in script, sink
