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
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from batchgen.errors import ErrorClass
from batchgen.outcomes import ItemStatus
from batchgen.output import paths, variants
from batchgen.output.store import JobStore
from batchgen.report.record import Report, ReportFailure, iso

log = logging.getLogger(__name__)

# The statuses in the order the page lists them (and numbers them, in its data).
STATUSES = (ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.SKIPPED, ItemStatus.PENDING)
_STATUS_INDEX = {status: k for k, status in enumerate(STATUSES)}
FAILURES_SHOWN = 50  # rows per failure class in the table above the grid; the grid shows them all


class Card(NamedTuple):
    """One item as the gallery shows it (a tuple: a catalog's page is made of 100,000 of them)."""

    id: str
    status: ItemStatus
    attempts: int
    files: tuple[str, ...] = ()  # relative to the job folder
    prompt: str = ""
    params: Mapping[str, Any] = MappingProxyType({})  # equal sets are written once (ParamTable)
    error_class: ErrorClass | None = None
    message: str | None = None
    version: int = 1
    pixels: tuple[int, int] | None = None  # of its (first) image
    flags: tuple[str, ...] = ()  # what the checks of what arrived found
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (channel variant, its files)
    parents: tuple[str, ...] = ()  # the items whose images it was made from (docs/chains.md)


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


class ParamTable:
    """Each distinct set of request parameters once, and the row of each item's: the one way the
    gallery's data block and the stamp of an unchanged job (``job/unchanged``) share them.

    Two sets are one when their values are (as canonical JSON), whichever objects hold them. An
    object already in the table is found again by identity, without being serialized: the table
    keeps it alive, so no other object can have its ``id()`` meanwhile.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._by_value: dict[bytes, int] = {}
        self._by_object: dict[int, tuple[Mapping[str, Any], int]] = {}

    def row_of(self, params: Mapping[str, Any]) -> int:
        """The row of ``params`` (any Mapping, the default's proxy too), added if new."""
        known = self._by_object.get(id(params))
        if known is not None:
            return known[1]
        row = dict(params)
        key = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
        k = self._by_value.get(key)
        if k is None:
            k = self._by_value[key] = len(self.rows)
            self.rows.append(row)
            self._by_object[id(params)] = (params, k)
        return k


def write(
    folder: Path,
    report: Report,
    cards: Iterable[Card],
    *,
    shown: str | None = None,
    kept: Iterable[str] | None = None,
) -> Path:
    """Render the gallery of the job in ``folder`` next to its report.json: ``cards`` from a run's
    outcomes, or from the folder's records (``report.cards``). ``shown``: how its redo command
    names the job folder (a bucket's URL), if not ``folder``; ``kept``: the names in its history/
    (a bucket's), if not those in ``folder``."""
    names = _listed(folder) if kept is None else kept
    parts = render_parts(report, cards, folder=shown or str(folder), history=_history(names))
    with JobStore(folder).open_atomic(paths.REPORT_HTML, durable=False) as out:
        for part in parts:  # written in parts: a catalog's page runs to megabytes, never one more copy
            out.write(part)
    return folder / paths.REPORT_HTML


def _listed(folder: Path) -> list[str]:
    try:
        return os.listdir(folder / paths.HISTORY)
    except OSError:
        return []


def _history(names: Iterable[str]) -> dict[str, list[str]]:
    """The earlier versions kept of each item, oldest first, from the names in history/."""
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
    report: Report,
    cards: Iterable[Card],
    *,
    folder: str = ".",
    history: Mapping[str, list[str]] | None = None,
) -> str:
    """The whole page as one string."""
    return b"".join(render_parts(report, cards, folder=folder, history=history)).decode()


def render_parts(
    report: Report,
    cards: Iterable[Card],
    *,
    folder: str = ".",
    history: Mapping[str, list[str]] | None = None,
) -> tuple[bytes, bytes, bytes]:
    """The page as the text before the item data, the data, and the text after."""
    nonce = secrets.token_urlsafe(16)
    e = html.escape
    counts = report.counts
    facts = [
        ("status", report.status.value),
        ("items", counts.total),
        *((status.value, counts.of_status(status)) for status in STATUSES),
        ("duration", f"{report.duration_s:.1f} s"),
        ("requests sent", report.requests_sent),
        ("unconfirmed attempts", report.unconfirmed_attempts),
        ("perhaps billed", f"${report.unconfirmed_cost:.2f}"),
        ("estimated cost", f"${report.estimated_cost:.2f}"),
    ]
    if report.flags is not None:
        facts.append(("flagged", sum(1 for item in report.items if item.flags)))
    header = "".join(f'<div class="fact"><span>{e(k)}</span><b>{e(str(v))}</b></div>' for k, v in facts)
    notice = f'<p class="notice">Stopped: {e(report.stopped)}</p>' if report.stopped else ""
    classes = sorted({f.error_class.value for f in report.failures})
    shown = [("all", counts.total), *((status.value, counts.of_status(status)) for status in STATUSES)]
    status_buttons = "".join(
        f'<button type="button" data-status="{s}"{" aria-pressed=true" if s == "all" else ""}>'
        f"{s} <small>{n}</small></button>"
        for s, n in shown
    )
    slots: dict[str, str] = {
        "nonce": nonce,
        "title": e(f"{report.job} · {report.status.value}"),
        "job": e(report.job),
        "meta": e(f"{report.manifest} · {iso(report.started_at)} → {iso(report.finished_at)}"),
        "facts": header + notice,
        "status_buttons": status_buttons,
        "class_options": "".join(f'<option value="{e(c)}">{e(c)}</option>' for c in classes),
        "flag_filter": _flag_filter(report),
        "failures": _failures(report.failures),
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


def _data(report: Report, cards: Iterable[Card], folder: str, history: Mapping[str, list[str]]) -> bytes:
    """The items as the page's script reads them: one array per item, shared values written once.

    ``[id, status, class, attempts, params, prompt, files, version, message, variants]``, where status,
    class and params index the tables beside it, files is just the extension when the item
    has the one image ``images/<id>.<ext>``, and trailing empty values are left out. Beside the
    rows: each item's pixel size (``pixel_of`` indexes ``pixels``; -1: unknown) and the rows
    each flag is on (``flagged``).
    """
    params = ParamTable()
    classes: dict[ErrorClass, int] = {}
    rows: list[list[Any]] = []
    shapes: dict[tuple[int, int], int] = {}  # pixel sizes, each written once
    pixel_of: list[int] = []
    flagged: dict[str, list[int]] = defaultdict(list)  # flag: the rows of the items it is on
    parents: dict[str, list[str]] = {}  # the viewer links a dependent to these, and them back to it
    for c in cards:
        pixel_of.append(-1 if c.pixels is None else shapes.setdefault(c.pixels, len(shapes)))
        for flag in c.flags:
            flagged[flag].append(len(rows))
        if c.parents:
            parents[c.id] = list(c.parents)
        rows.append(_row(c, params.row_of(c.params), classes))
    data = {
        "job": report.job,
        "folder": folder,
        "thumbs": variants.THUMBS,
        "statuses": [status.value for status in STATUSES],
        "classes": [error_class.value for error_class in classes],
        "params": params.rows,
        "history": dict(history),
        "parents": parents,
        "items": rows,
        "pixels": list(shapes),
        "pixel_of": pixel_of,
        "flagged": flagged,
    }
    # "</script>" or "<!--" in a prompt must not end the block: JSON's own escapes for < > &
    # (ASCII bytes, never part of a UTF-8 sequence, so replaced in the bytes directly).
    return orjson.dumps(data).replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def _flag_filter(report: Report) -> str:
    """The flag filter: any flag, then each flag, with how many items carry it; none for a report
    made before the checks of what arrived."""
    if report.flags is None:
        return ""
    options = [("any", "flagged", sum(1 for item in report.items if item.flags))]
    options += [(name, name, n) for name, n in report.flags.items()]
    e = html.escape
    choices = "".join(f'<option value="{e(v)}">{e(label)} ({n})</option>' for v, label, n in options)
    every = '<option value="">flagged or not</option>'
    return f'<select id="flag-filter" aria-label="flag">{every}{choices}</select>'


def _failures(failures: Iterable[ReportFailure]) -> str:
    e = html.escape
    groups: dict[str, list[ReportFailure]] = defaultdict(list)
    for failure in failures:
        groups[failure.error_class.value].append(failure)
    if not groups:
        return ""
    sections = []
    for name, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        rows = "".join(
            f"<tr><td>{e(f.id)}</td><td>{e(f.message)}</td><td>{f.attempts}</td><td>{e(f.prompt)}</td></tr>"
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


def _row(c: Card, shared: int, classes: dict[ErrorClass, int]) -> list[Any]:
    """One item's array in the page's data (see ``_data``), its trailing empty values left out."""
    files: Any = list(c.files)
    if len(c.files) == 1 and c.files[0].startswith(f"{paths.image(c.id)}."):
        files = c.files[0].rpartition(".")[2]
    row: list[Any] = [
        c.id,
        _STATUS_INDEX[c.status],
        classes.setdefault(c.error_class, len(classes)) if c.error_class else -1,
        c.attempts,
        shared,
        c.prompt,
        files,
        c.version,
        c.message,
        {name: list(files) for name, files in c.variants},
    ]
    for empty in (lambda v: not v, lambda v: v is None, lambda v: v == 1):
        if not empty(row[-1]):
            break
        row.pop()  # trailing empty values: variants, then message, then version
    return row
