"""The gallery's cards of a job folder on its own (``batchgen report``, ``merge``), from its records.

A run hands the gallery cards made from its outcomes and the manifest's requests; a folder
read later has only its records: the report says what became of each item, the journal
its prompt and version, and the sidecar of an item with images what was asked for them
(the parameters the viewer lists). Each is read through its one reader.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from batchgen.output import journal, sidecar
from batchgen.output.journal import Entry
from batchgen.report.gallery import Card, request_params
from batchgen.report.record import Report


def from_folder(folder: Path, report: Report, entries: Mapping[str, Entry] | None = None) -> Iterator[Card]:
    """A card per item of ``report``, in its order; ``entries``: the journal's, if already read.

    One sidecar is read per item with images: the parameters it was asked with are in no
    other record (a run's gallery has them from the manifest instead, and reads none).
    """
    if entries is None:
        entries = journal.read(folder).entries
    failures = {f.id: f for f in report.failures}
    for item in report.items:
        found = sidecar.read(folder, item.id) if item.files else None
        request = found.request if found is not None else {}
        failure = failures.get(item.id)
        entry = entries.get(item.id)
        asked = request.get("prompt") or (failure.prompt if failure else "")
        prompt = asked or (entry.prompt if entry else "")
        yield Card(
            id=item.id,
            status=item.status,
            attempts=item.attempts,
            files=item.files,
            prompt=str(prompt),
            params=request_params(request),  # the gallery writes each distinct set once
            error_class=failure.error_class if failure else None,
            message=failure.message if failure else None,
            # The report writes a version from 2 up only; an item it lists without one (failed
            # or pending this run) shows the version the journal has of its image.
            version=item.version if item.version > 1 or entry is None else entry.version,
            pixels=item.pixels,
            flags=tuple(flag.value for flag in item.flags),
            variants=item.variants,
            parents=_parents(request),
        )


def _parents(request: Mapping[str, Any]) -> tuple[str, ...]:
    """The items a sidecar's request names as references (``item:@ID#K <digest>``, as written)."""
    found: list[str] = []
    for extra in (
        request.get("extra_fields", {}).values() if isinstance(request.get("extra_fields"), dict) else ()
    ):
        if isinstance(extra, list):
            found += [str(v)[6:].split(" ")[0].split("#")[0] for v in extra if str(v).startswith("item:@")]
    return tuple(dict.fromkeys(found))
