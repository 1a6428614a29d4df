"""The names of the files in a job folder: each one built here, and nowhere else.

    <job>/images/<stem>.<ext>          an item's images (``<id>``, or ``<id>-<k>`` for n > 1)
    <job>/images/<id>.json             its sidecar (output/sidecar.py)
    <job>/history/<stem>.<v>.<ext>     version ``v`` of an image or sidecar, kept by a redo
    <job>/journal.jsonl                the journal (output/journal.py)
    <job>/report.json, report.html     the report (report/record.py) and the gallery
    <job>/unchanged.json               the stamp of a finished job (job/unchanged.py)
    <job>/.lock                        held while a run works in the folder (output/lock.py)
    <job>/thumbs/<stem>.webp           the gallery's previews, the built-in variant ``thumb``
    <job>/variants/<name>/<stem>.<ext> the channel variants (``variants.Variant.path``)
    <job>/derived/<id>.json            what was derived from an item's images (``variants.Record``)
    <job>/relay-limit.json             the relay's rate limit as a run learned it (output/relaylimit.py)

All relative to the job folder, with ``/`` between parts, as they appear in the journal,
the sidecars and the report.
"""

from __future__ import annotations

from pathlib import PurePosixPath

IMAGES = "images"
HISTORY = "history"
JOURNAL = "journal.jsonl"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
STAMP = "unchanged.json"
LOCK = ".lock"
RELAY_LIMIT = "relay-limit.json"  # in the job's own folder, shared by its shards: the limit is per key


def image(stem: str) -> str:
    """``images/<stem>``: where an image goes, without its extension (its bytes decide it)."""
    return f"{IMAGES}/{stem}"


def sidecar(item_id: str) -> str:
    """``images/<id>.json``: what was asked and what came back, next to the item's images."""
    return f"{IMAGES}/{item_id}.json"


def history(relative: str, version: int) -> str:
    """Where version ``version`` of ``images/a.png`` is kept: ``history/a.<version>.png``."""
    stem, dot, ext = PurePosixPath(relative).name.rpartition(".")
    return f"{HISTORY}/{stem}.{version}.{ext}" if dot else f"{HISTORY}/{ext}.{version}"


def parse_history(name: str) -> tuple[str, int, str] | None:
    """``a.2.png`` (a name in history/) as ``("a", 2, "png")``; None for any other name."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or name.startswith(".") or not parts[1].isdecimal():
        return None
    return parts[0], int(parts[1]), parts[2]
