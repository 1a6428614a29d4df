"""report.html, read as a parser reads it: every card and failure group there, nothing injected."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson

from batchgen import gallery

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


def report(items: list[dict[str, Any]], failures: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {s: sum(i["status"] == s for i in items) for s in ("succeeded", "failed", "skipped", "pending")}
    return {
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
    return gallery.render(report(items, failures), gallery.collect(tmp_path, report(items, failures)))


def views(page: str) -> dict[str, Any]:
    """What the page's script reads for its viewer: each card's data-view, unescaped as a browser does."""
    parser = Tags()
    parser.feed(page)
    return {a["data-id"]: orjson.loads(a["data-view"] or "") for t, a in parser.tags if t == "figure"}


def test_cards_filters_and_failure_groups_are_all_there(tmp_path: Path) -> None:
    page = hostile_page(tmp_path)
    parser = Tags()
    parser.feed(page)
    cards = [a for t, a in parser.tags if t == "figure"]
    assert [(c["data-id"], c["data-status"], c["data-class"]) for c in cards] == [
        ("ok", "succeeded", ""),
        ("bad", "failed", "safety_filter"),
        ("flaky", "failed", "server_error"),
        ("later", "pending", ""),
    ]
    assert [a["src"] for t, a in parser.tags if t == "img" and "loading" in a] == ["images/ok.png"]
    assert all(a["loading"] == "lazy" for t, a in parser.tags if t == "img" and "loading" in a)
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


def test_nothing_from_a_manifest_or_a_response_becomes_markup(tmp_path: Path) -> None:
    page = hostile_page(tmp_path)
    parser = Tags()
    parser.feed(page)
    scripts = [a for t, a in parser.tags if t == "script"]
    assert len(scripts) == 1  # ours, nothing else
    assert not any(k.startswith("on") for _, attrs in parser.tags for k in attrs)
    assert not any(t == "img" and a.get("src") == "x" for t, a in parser.tags)
    assert "<title>j&lt;b&gt; · partial</title>" in page
    assert views(page)["bad"]["prompt"] == HOSTILE[2]  # the text survives intact, as text
    assert views(page)["flaky"]["prompt"] == HOSTILE[3]  # slot names inside text are left alone
    assert page.count("<figure") == 4  # "{{grid}}" in a prompt did not repeat the grid


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
    data = views(hostile_page(tmp_path))
    assert data["ok"]["params"] == {
        "model": "nano-banana-2",
        "size": "1K",
        "aspect_ratio": "4:5",
        "extra_fields.style": HOSTILE[1],
    }
    assert data["ok"]["files"] == ["images/ok.png"]
    assert data["flaky"]["params"] == {"http_status": 502}
