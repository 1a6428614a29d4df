"""report.html: a gallery of the job for people, one self-contained file that works from disk.

At catalog scale the page cannot be a card per item: 100,000 cards of markup take a
browser minutes to lay out. The page carries the items as one compact JSON block
(request parameters shared between items are written once) and its script draws only
the cards on screen. Cards show ``thumbs/`` previews; the viewer shows the full image
and the versions a redo kept in ``history/``. A reviewer marks cards, and the page hands
out ``redo.txt`` and the ``batchgen redo`` command.

Everything that came from a manifest or a response is escaped: text by ``html.escape``,
the data block as JSON with ``<``, ``>`` and ``&`` escaped, and the script writes it
with ``textContent`` only. A Content Security Policy with a per-file nonce stops any
script or inline handler that is not ours, and any network request.
"""

from __future__ import annotations

import html
import logging
import os
import re
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from batchgen.output import journal, paths, thumbs
from batchgen.output.journal import Entry
from batchgen.output.store import JobStore

log = logging.getLogger(__name__)

REPORT_HTML = paths.REPORT_HTML
STATUSES = ("succeeded", "failed", "skipped", "pending")
FAILURES_SHOWN = 50  # rows per failure class in the table above the grid; the grid shows them all


class Card(NamedTuple):
    """One item as the gallery shows it (a tuple: a catalog's page is made of 100,000 of them)."""

    id: str
    status: str
    attempts: int
    files: tuple[str, ...] = ()  # relative to the job folder
    prompt: str = ""
    params: Mapping[str, Any] = MappingProxyType({})  # shared by items asked the same way
    error_class: str | None = None
    message: str | None = None
    version: int = 1


def request_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the viewer lists about a request: all of it but the prompt and the reference images."""
    extra = dict(body.get("extra_fields") or {})
    params = {
        "model": body.get("model"),
        "size": body.get("size"),
        "image_size": extra.pop("image_size", None),
        "aspect_ratio": extra.pop("aspect_ratio", None),
        "n": body.get("n"),
        "response_format": body.get("response_format"),
        **{f"extra_fields.{k}": v for k, v in extra.items()},
    }
    return {k: v for k, v in params.items() if v not in (None, "", [])}


def collect(
    folder: Path, report: dict[str, Any], entries: Mapping[str, Entry] | None = None
) -> Iterator[Card]:
    """Cards for a job folder on its own (``batchgen report``, ``merge``): the report's word on each
    item, its prompt and version from the journal, what was sent from its sidecar."""
    entries = entries or {}
    failures = {f["id"]: f for f in report["failures"]}
    shared: dict[bytes, dict[str, Any]] = {}
    for item in report["items"]:
        sidecar = _sidecar(folder, item["id"]) if item["files"] else {}
        request = sidecar.get("request", {}) if isinstance(sidecar.get("request"), dict) else {}
        failure = failures.get(item["id"], {})
        entry = entries.get(item["id"])
        params = request_params(request)
        key = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
        yield Card(
            id=item["id"],
            status=item["status"],
            attempts=item["attempts"],
            files=tuple(item["files"]),
            prompt=str(request.get("prompt") or failure.get("prompt") or (entry.prompt if entry else "")),
            params=shared.setdefault(key, params),
            error_class=failure.get("class"),
            message=failure.get("message"),
            version=int(item.get("version") or (entry.version if entry else 1)),
        )


def _sidecar(folder: Path, item_id: str) -> dict[str, Any]:
    try:
        data = orjson.loads((folder / "images" / f"{item_id}.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write(folder: Path, report: dict[str, Any], cards: Iterable[Card] | None = None) -> Path:
    """Render the gallery of the job in ``folder`` next to its report.json (``cards``: from the run;
    without, read from the folder's files)."""
    if cards is None:
        cards = collect(folder, report, journal.read(folder).entries)
    parts = render_parts(report, cards, folder=str(folder), history=_history(folder))
    with JobStore(folder).open_atomic(REPORT_HTML, durable=False) as out:
        for part in parts:  # written in parts: the page of a catalog is 19 MB, never one more copy
            out.write(part)
    return folder / REPORT_HTML


def _history(folder: Path) -> dict[str, list[str]]:
    """The earlier versions kept of each item, oldest first: one listing of history/."""
    try:
        names = os.listdir(folder / paths.HISTORY)
    except OSError:
        return {}
    # history/<stem>.<v>.<ext>: the stem is the item's id, or <id>-<k> for its k-th image;
    # each version's sidecar, history/<id>.<v>.json, says which ids there are.
    split = [(name, parts) for name in names if (parts := paths.parse_history(name)) is not None]
    ids = {stem for _, (stem, _, ext) in split if ext == "json"}
    kept: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for name, (stem, v, ext) in split:
        if ext != "json":
            item = stem if stem in ids else stem.rpartition("-")[0] or stem
            kept[item].append((v, stem, f"{paths.HISTORY}/{name}"))
    return {item: [path for *_, path in sorted(versions)] for item, versions in kept.items()}


def render(
    report: dict[str, Any],
    cards: Iterable[Card],
    *,
    folder: str = ".",
    history: Mapping[str, list[str]] | None = None,
) -> str:
    """The whole page as one string."""
    return b"".join(render_parts(report, cards, folder=folder, history=history)).decode()


def render_parts(
    report: dict[str, Any],
    cards: Iterable[Card],
    *,
    folder: str = ".",
    history: Mapping[str, list[str]] | None = None,
) -> tuple[bytes, bytes, bytes]:
    """The page as the text before the item data, the data, and the text after."""
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
        for s in ("all", *STATUSES)
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
    template = resources.files("batchgen.report").joinpath("gallery.html").read_text(encoding="utf-8")
    before, after = template.split("{{data}}")
    # One pass over each part of the template: text put into a slot is never scanned for slots again.
    return (
        _SLOT.sub(lambda m: slots[m.group(1)], before).encode(),
        _data(report, cards, folder, history or {}),
        _SLOT.sub(lambda m: slots[m.group(1)], after).encode(),
    )


_SLOT = re.compile(r"\{\{(\w+)\}\}")


def _data(
    report: dict[str, Any], cards: Iterable[Card], folder: str, history: Mapping[str, list[str]]
) -> bytes:
    """The items as the page's script reads them: one array per item, shared values written once.

    ``[id, status, class, attempts, params, prompt, files, version, message]``, where status,
    class and params index the tables beside it, files is just the extension when the item
    has the one image ``images/<id>.<ext>``, and trailing empty values are left out.
    """
    params: dict[int, int] = {}
    params_table: list[Mapping[str, Any]] = []
    classes: dict[str, int] = {}
    rows: list[list[Any]] = []
    for c in cards:
        shared = params.get(id(c.params))
        if shared is None:
            shared = params[id(c.params)] = len(params_table)
            params_table.append(c.params)
        files: Any = list(c.files)
        if len(c.files) == 1 and c.files[0].startswith(f"{paths.image(c.id)}."):
            files = c.files[0].rpartition(".")[2]
        row: list[Any] = [
            c.id,
            STATUSES.index(c.status),
            classes.setdefault(c.error_class, len(classes)) if c.error_class else -1,
            c.attempts,
            shared,
            c.prompt,
            files,
            c.version,
            c.message,
        ]
        if c.message is None:
            row.pop()
            if c.version == 1:
                row.pop()
        rows.append(row)
    data = {
        "job": report["job"],
        "folder": folder,
        "thumbs": thumbs.FOLDER,
        "statuses": STATUSES,
        "classes": list(classes),
        "params": params_table,
        "history": dict(history),
        "items": rows,
    }
    # "</script>" or "<!--" in a prompt must not end the block: JSON's own escapes for < > &
    # (ASCII bytes, never part of a UTF-8 sequence, so replaced in the bytes directly).
    return orjson.dumps(data).replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


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
            for f in group[:FAILURES_SHOWN]
        )
        more = len(group) - FAILURES_SHOWN
        if more > 0:
            rows += f'<tr><td colspan="4">… and {more:,} more: filter the images below by {e(name)}</td></tr>'
        sections.append(
            f'<details class="failure-group" data-class="{e(name)}" open><summary>{e(name)}'
            f" <small>{len(group)}</small></summary><table><thead><tr><th>id</th><th>message</th>"
            f"<th>attempts</th><th>prompt</th></tr></thead><tbody>{rows}</tbody></table></details>"
        )
    return '<section id="failures"><h2>Failures by class</h2>' + "".join(sections) + "</section>"
