"""report.html: a gallery of the job for people, one self-contained file that works from disk.

Everything that came from a manifest or a response is escaped: text by
``html.escape``, data for the script as JSON with ``<``, ``>`` and ``&``
escaped, and the script writes it with ``textContent`` only. A Content
Security Policy with a per-file nonce stops any script or inline handler
that is not ours, and any network request, should escaping ever fail.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from .store import JobStore

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"


@dataclass(frozen=True)
class Card:
    id: str
    status: str
    attempts: int
    image: str | None = None  # relative to the job folder
    files: tuple[str, ...] = ()
    prompt: str = ""
    shape: str = ""  # "2K · 4:5"
    error_class: str | None = None
    message: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def collect(folder: Path, report: dict[str, Any]) -> Iterator[Card]:
    """A card per item, made as they are written: the report's word on it, and the sidecar's
    record of what was sent (a 100,000-item job never holds them all)."""
    failures = {f["id"]: f for f in report["failures"]}
    for item in report["items"]:
        sidecar = _sidecar(folder, item["id"]) if item["files"] else {}
        request = sidecar.get("request", {}) if isinstance(sidecar, dict) else {}
        failure = failures.get(item["id"], {})
        extra = dict(request.get("extra_fields") or {})
        params = {
            "model": request.get("model"),
            "size": request.get("size"),
            "image_size": extra.pop("image_size", None),
            "aspect_ratio": extra.pop("aspect_ratio", None),
            "n": request.get("n"),
            "response_format": request.get("response_format"),
            **{f"extra_fields.{k}": v for k, v in extra.items()},
            "created": sidecar.get("created") if isinstance(sidecar, dict) else None,
            "latency_s": sidecar.get("latency_s") if isinstance(sidecar, dict) else None,
            "http_status": failure.get("http_status"),
        }
        yield Card(
            id=item["id"],
            status=item["status"],
            attempts=item["attempts"],
            image=next((f for f in item["files"] if not f.endswith(".json")), None),
            files=tuple(item["files"]),
            prompt=str(request.get("prompt") or failure.get("prompt") or ""),
            shape=" · ".join(
                str(v) for v in (params["image_size"] or params["size"], params["aspect_ratio"]) if v
            ),
            error_class=failure.get("class"),
            message=failure.get("message"),
            params={k: v for k, v in params.items() if v not in (None, "", [])},
        )


def _sidecar(folder: Path, item_id: str) -> dict[str, Any]:
    try:
        data = orjson.loads((folder / "images" / f"{item_id}.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write(folder: Path, report: dict[str, Any]) -> Path:
    """Render the gallery of the job in ``folder`` next to its report.json, streaming it to disk."""
    with JobStore(folder).open_atomic(REPORT_HTML) as out:
        for piece in pieces(report, collect(folder, report)):
            out.write(piece.encode())
    return folder / REPORT_HTML


def render(report: dict[str, Any], cards: Iterable[Card]) -> str:
    """The whole page as one string (for tests; ``write`` streams the same pieces)."""
    return "".join(pieces(report, cards))


def pieces(report: dict[str, Any], cards: Iterable[Card]) -> Iterator[str]:
    """The page, in order: the template's text with its slots filled, one card at a time."""
    nonce = secrets.token_urlsafe(16)
    e = html.escape
    counts = report["counts"]
    facts = [
        ("status", report["status"]),
        ("items", counts["total"]),
        ("succeeded", counts["succeeded"]),
        ("failed", counts["failed"]),
        ("skipped", counts["skipped"]),
        ("pending", counts["pending"]),
        ("duration", f"{report['duration_s']:.1f} s"),
        ("requests sent", report["requests_sent"]),
        ("unconfirmed attempts", report["unconfirmed_attempts"]),
        ("perhaps billed", f"${report.get('unconfirmed_cost', 0.0):.2f}"),
        ("estimated cost", f"${report['estimated_cost']:.2f}"),
    ]
    header = "".join(f'<div class="fact"><span>{e(k)}</span><b>{e(str(v))}</b></div>' for k, v in facts)
    stopped = report.get("aborted_reason") or report.get("interrupted_by")
    notice = f'<p class="notice">Stopped: {e(str(stopped))}</p>' if stopped else ""
    classes = sorted({f["class"] for f in report["failures"]})
    status_buttons = "".join(
        f'<button type="button" data-status="{s}"{" aria-pressed=true" if s == "all" else ""}>'
        f"{s} <small>{counts['total'] if s == 'all' else counts.get(s, 0)}</small></button>"
        for s in ("all", "succeeded", "failed", "skipped", "pending")
    )
    slots: dict[str, str] = {
        "nonce": nonce,
        "title": e(f"{report['job']} · {report['status']}"),
        "job": e(report["job"]),
        "meta": e(f"{report['manifest']} · {report['started_at']} → {report['finished_at']}"),
        "facts": header + notice,
        "status_buttons": status_buttons,
        "class_options": "".join(f'<option value="{e(c)}">{e(c)}</option>' for c in classes),
        "failures": _failures(report["failures"]),
    }
    template = resources.files("batchgen").joinpath("gallery.html").read_text(encoding="utf-8")
    # One pass over the template: text already put into a slot is never scanned for slots
    # again (a prompt saying "{{grid}}" must stay those eight characters).
    last = 0
    for slot in _SLOT.finditer(template):
        yield template[last : slot.start()]
        if slot.group(1) == "grid":
            for card in cards:
                yield _card(card) + "\n"
        else:
            yield slots[slot.group(1)]
        last = slot.end()
    yield template[last:]


_SLOT = re.compile(r"\{\{(\w+)\}\}")


def _card(c: Card) -> str:
    e = html.escape
    search = e(f"{c.id} {c.prompt}".lower())
    view = orjson.dumps(
        {"prompt": c.prompt, "params": c.params, "files": c.files, "message": c.message}
    ).decode()
    if c.image:
        picture = f'<img loading="lazy" decoding="async" src="{e(c.image)}" alt="{e(c.id)}">'
    else:
        picture = f'<div class="empty">{e(c.error_class or c.status)}</div>'
    badge = f'<span class="badge {e(c.status)}">{e(c.error_class or c.status)}</span>'
    return (
        f'<figure class="card" tabindex="0" data-id="{e(c.id)}" data-status="{e(c.status)}"'
        f' data-class="{e(c.error_class or "")}" data-search="{search}" data-view="{e(view)}">'
        f"{picture}<figcaption><b>{e(c.id)}</b>{badge}"
        f"<small>{e(c.shape or '—')} · {c.attempts} attempt{'s' if c.attempts != 1 else ''}</small>"
        "</figcaption></figure>"
    )


def _failures(failures: list[dict[str, Any]]) -> str:
    e = html.escape
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for failure in failures:
        groups[failure["class"]].append(failure)
    if not groups:
        return ""
    sections = []
    for name, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        rows = "".join(
            f"<tr><td>{e(f['id'])}</td><td>{e(str(f.get('message') or ''))}</td>"
            f"<td>{f.get('attempts', '')}</td><td>{e(str(f.get('prompt') or ''))}</td></tr>"
            for f in group
        )
        sections.append(
            f'<details class="failure-group" data-class="{e(name)}" open><summary>{e(name)}'
            f" <small>{len(group)}</small></summary><table><thead><tr><th>id</th><th>message</th>"
            f"<th>attempts</th><th>prompt</th></tr></thead><tbody>{rows}</tbody></table></details>"
        )
    return '<section id="failures"><h2>Failures by class</h2>' + "".join(sections) + "</section>"
