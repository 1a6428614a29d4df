"""Knowing that a finished job has nothing to do, without expanding its manifest.

A run that ends with every item made from exactly the request its manifest asks for leaves a
stamp in the job folder, ``unchanged.json``, the way ``make`` trusts file times:

- the size, modification time, change time and inode of every file the items were made from
  (the manifest, its CSVs, its local references, the price table);
- the journal's size and modification time;
- what the report and the gallery say about each item, in order (id, prompt, attempts,
  version, files with their sizes, the request's parameters) and the manifest's warnings.

The next ``batchgen run`` reads only the manifest's header. If the stamp is for the same manifest,
shard, price table and batchgen version, every source file is as it was, the journal has not been
written since and every image is still there at its size, the run writes its report and gallery
from the stamp and sends nothing: exactly what expanding the manifest would have ended in. Any
difference, and the run takes the long way. The change time cannot be set back by a user (``touch``
sets the modification time only), so an edited file is never mistaken for an unchanged one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchgen import __version__
from batchgen.manifest import validate as manifest
from batchgen.manifest.spec import Manifest
from batchgen.outcomes import ItemOutcome, ItemStatus
from batchgen.output import journal
from batchgen.output.store import JobStore

log = logging.getLogger(__name__)

STAMP = "unchanged.json"
FORMAT = 1


@dataclass(frozen=True)
class Stamp:
    """What a finished run left to be trusted while nothing changes."""

    key: str
    sources: list[list[Any]]  # [path, size, mtime_ns, ctime_ns, inode]
    journal: list[int]  # [size, mtime_ns]
    ids: list[str]
    prompts: list[str]
    attempts: list[int]
    versions: list[int]
    files: list[list[list[Any]]]  # per item: [[path relative to the job folder, bytes], ...]
    params: list[dict[str, Any]]  # the requests' parameters, each written once ...
    param_of: list[int]  # ... and which one each item was asked with
    warnings: list[str]
    parents: dict[str, list[str]] = field(default_factory=dict)  # the items each dependent is made from


@dataclass(frozen=True)
class Unchanged:
    """A job whose stamp matched when it was loaded: its header, and what the stamp says."""

    header: Manifest  # without items
    stamp: Stamp

    @property
    def job(self) -> str:
        return self.header.job

    @property
    def path(self) -> Path:
        return self.header.path


def key(header: Manifest, shard: tuple[int, int] | None, prices: Path | None) -> str:
    """What a stamp is valid for: this manifest, this shard of it, this price table, this batchgen."""
    what = [FORMAT, __version__, str(header.path.resolve()), shard, str(prices.resolve()) if prices else None]
    return hashlib.sha256(orjson.dumps(what)).hexdigest()


def signature(path: Path | str) -> list[int] | None:
    try:
        return list(manifest.signature(os.stat(path)))
    except OSError:
        return None


def find(folder: Path, wanted: str) -> Stamp | None:
    """The stamp in ``folder`` if it is for ``wanted`` and none of its sources changed since."""
    try:
        data = orjson.loads((folder / STAMP).read_bytes())
        if data.get("format") != FORMAT or data.get("key") != wanted:
            return None
        given = {name: data[name] for name in Stamp.__dataclass_fields__ if name != "parents"}
        stamp = Stamp(**given, parents=data.get("parents", {}))
    except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None
    for path, *was in stamp.sources:
        if signature(path) != was:
            return None
    return stamp  # the journal and the images are checked under the job's lock (``outcomes``)


def journal_signature(folder: Path) -> list[int] | None:
    sig = signature(folder / journal.JOURNAL)
    return None if sig is None else sig[:2]


def outcomes(stamp: Stamp, store: JobStore) -> list[ItemOutcome] | None:
    """Every item skipped, as the long way would report it; None if an image is gone or cut short
    (the long way makes it again) or the journal was written since the stamp."""
    if journal_signature(store.root) != stamp.journal:
        return None
    skipped = ItemStatus.SKIPPED
    made: list[ItemOutcome] = []
    for index, (item_id, prompt, attempts, version, files) in enumerate(
        zip(stamp.ids, stamp.prompts, stamp.attempts, stamp.versions, stamp.files, strict=True)
    ):
        if not store.intact([(path, size) for path, size in files]):
            return None
        if len(files) == 1:
            paths, sizes = (files[0][0],), (files[0][1],)
        else:
            paths, sizes = tuple(f[0] for f in files), tuple(f[1] for f in files)
        made.append(
            ItemOutcome(index, item_id, prompt, skipped, attempts, paths, sizes=sizes, version=version)
        )
    return made


def write(
    store: JobStore,
    wanted: str,
    sources: Sequence[tuple[str, manifest.Signature]],
    outcomes: Sequence[ItemOutcome],
    asked: tuple[Sequence[Mapping[str, Any]], Sequence[int]],
    warnings: Sequence[object],
    parents: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """Stamp a finished job (call with the journal closed, after its last line); ``sources`` with
    the signatures they had before they were read; ``asked``: the distinct request parameters and
    which each item was asked with; ``parents``: what each dependent is made from. False, and no
    stamp, if one changed since: what this run made may not be what the file asks for now."""
    for path, was in sources:
        if signature(path) != list(was):
            log.info("%s changed while the job ran: the next run reads the manifest again", path)
            return False
    params, param_of = asked
    stamp = {
        "format": FORMAT,
        "key": wanted,
        "sources": [[path, *sig] for path, sig in sources],
        "journal": journal_signature(store.root),
        "ids": [o.id for o in outcomes],
        "prompts": [o.prompt for o in outcomes],
        "attempts": [o.attempts for o in outcomes],
        "versions": [o.version for o in outcomes],
        "files": [[[path, size] for path, size in zip(o.files, o.sizes, strict=True)] for o in outcomes],
        "params": list(params),
        "param_of": list(param_of),
        "warnings": [str(w) for w in warnings],
        "parents": {k: list(v) for k, v in (parents or {}).items()},
    }
    _save(store, stamp)
    return True


def _save(store: JobStore, stamp: dict[str, Any]) -> None:
    # Compact and not fsync'd: lost to a power cut, the next run takes the long way, that is all.
    store.write_bytes(STAMP, orjson.dumps(stamp), durable=False)


def forget(store: JobStore) -> None:
    """The job is about to change: no stamp may outlive that, even if this run dies."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(store.root / STAMP)


def stampable(outcomes: Sequence[ItemOutcome]) -> bool:
    """Every item made (now or before) and nothing to fetch or retry."""
    return bool(outcomes) and all(
        o.status in (ItemStatus.SUCCEEDED, ItemStatus.SKIPPED) and len(o.sizes) == len(o.files) and o.files
        for o in outcomes
    )


def param_rows(stamp: Stamp) -> Iterator[Mapping[str, Any]]:
    """Each item's parameters, shared between items asked the same way."""
    for k in stamp.param_of:
        yield stamp.params[k]
