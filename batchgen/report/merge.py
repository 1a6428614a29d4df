"""Merging shard folders into one job folder: images, sidecars, journal and report.

The result is a job folder like any other: ``retry`` and ``report`` work on it.
Images are hard-linked where the file system allows (no extra space), copied
where it does not (shards synced from other machines, another disk); every file goes in
place through ``durable``'s one writer, and the folders are made durable at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path

import orjson

from batchgen.errors import StoreError, UsageError
from batchgen.output import durable, journal, paths, variants
from batchgen.output.lock import JobLock
from batchgen.output.store import JobStore
from batchgen.plan import shard
from batchgen.report import cards, gallery, record
from batchgen.report.record import ReportItem
from batchgen.report.report import merge_reports


def sources(given: Sequence[Path]) -> list[Path]:
    """Each path as given, or the shard folders inside it; each must hold a report.json."""
    found: list[Path] = []
    for path in given:
        shards = sorted(
            p
            for p in path.glob("shard-*-of-*")
            if shard.FOLDER.match(p.name) and (p / paths.REPORT_JSON).is_file()
        )
        if shards:
            found.extend(shards)
        elif (path / paths.REPORT_JSON).is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no report.json here, nor shard-K-of-N folders with one")
    return found


def merge(
    given: Sequence[Path],
    output: Path,
    *,
    shown: str | None = None,
    kept: Iterable[str] | None = None,
    holds: Callable[[Sequence[tuple[str, int]]], bool] | None = None,
) -> tuple[record.Report, Path, frozenset[str]]:
    """The shard folders ``given`` merged into ``output``/<job>; returns its report, its folder,
    and the shards' files of the items it made itself since (``made_here``), which it left.
    ``shown``, ``kept`` and ``holds``: how the gallery names the merged folder, what its history/
    holds, and whether it holds files of these sizes, when that is not the folder written here
    (a bucket's, whose files a merge copies inside the store: ``job/remote_folders``)."""
    folders = sources(given)
    reports = [record.read(folder) for folder in folders]
    jobs = {r.job for r in reports}
    if len(jobs) != 1:
        raise UsageError(
            f"these folders hold different jobs ({', '.join(sorted(jobs))}); merge one job at a time"
        )
    missing = _missing_shards(reports)
    target = output / reports[0].job
    target.mkdir(parents=True, exist_ok=True)
    with JobLock(target):
        store = JobStore(target)
        store.prepare()
        entries: dict[str, journal.Entry] = {}
        manifest = None
        for folder in folders:
            state = journal.read(folder)
            manifest = manifest or state.manifest
            for entry in state.entries.values():
                held = entries.get(entry.id)
                if held is None or not held.succeeded:
                    entries[entry.id] = entry
        here = made_here(target, entries, holds or store.intact)
        entries.update(here)
        for folder, report in zip(folders, reports, strict=True):
            if folder.resolve() != target.resolve():
                _bring_files(folder, store, report, leave=here.keys())
        merged = merge_reports(reports, missing, standing=_rows(target, here.keys()))
        lines = []
        if manifest:
            header = journal.RunHeader.of(Path(manifest), target, 0, merged=True)
            lines.append(orjson.dumps(header.to_json()))
        lines += [orjson.dumps(e.to_json(0)) for e in entries.values()]
        store.write_bytes(journal.JOURNAL, b"".join(line + b"\n" for line in lines))
        record.write(store, merged)
        gallery.write(target, merged, cards.from_folder(target, merged, entries), shown=shown, kept=kept)
        store.sync()
    left = frozenset(
        name for report in reports for item in report.items if item.id in here for name in _item_files(item)
    )
    return merged, target, left


def made_here(
    target: Path, merged: Mapping[str, journal.Entry], holds: Callable[[Sequence[tuple[str, int]]], bool]
) -> dict[str, journal.Entry]:
    """The items the merged folder made itself since the shards made theirs: a redo there (a
    newer version) or a retry of what its shard failed. Its own journal line wins for them, if
    its files are there: a merge again must not put back an image that was replaced, nor
    forget one that was paid for."""
    ours = journal.read(target).entries
    return {
        item_id: entry
        for item_id, entry in ours.items()
        if entry.succeeded
        and item_id in merged
        and (not merged[item_id].succeeded or entry.version > merged[item_id].version)
        and holds([(f.path, f.bytes) for f in entry.files])
    }


def _rows(target: Path, ids: Collection[str]) -> dict[str, ReportItem]:
    """The merged folder's own report rows of ``ids``."""
    if not ids:
        return {}
    return {item.id: item for item in record.read(target).items if item.id in ids}


def _item_files(item: ReportItem) -> list[str]:
    """What a merge brings of ``item``: its images and sidecar, and what was derived from its
    images (thumbnails, variants, their record)."""
    names = list(item.files)
    if not names:
        return []
    names += [paths.sidecar(item.id), variants.record_path(item.id)]
    names += [variants.thumb_path(f) for f in item.files]
    return names + [f for _, got in item.variants for f in got]


def _missing_shards(reports: Sequence[record.Report]) -> list[str]:
    labels = [r.shard for r in reports if r.shard]
    if not labels:
        return []
    counts = {int(label.split("/")[1]) for label in labels}
    if len(counts) != 1:
        raise UsageError(
            f"these shards were cut {sorted(counts)} ways; merge shards of one --shard K/N split"
        )
    (n,) = counts
    have = {int(label.split("/")[0]) for label in labels}
    return [f"{k}/{n}" for k in range(1, n + 1) if k not in have]


def _bring_files(source: Path, store: JobStore, report: record.Report, leave: Collection[str]) -> None:
    """Each item's files from ``source``, but those of the items in ``leave``."""
    root = source.resolve()
    for item in report.items:
        if item.id in leave:
            continue
        for name in _item_files(item):
            src = source / name
            if not src.resolve().is_relative_to(root):
                raise StoreError(f"{source}/report.json names {name!r}, outside its folder")
            if src.is_file():
                target = store.path(name)
                target.parent.mkdir(parents=True, exist_ok=True)  # derived/, variants/<name>/
                durable.link_or_copy(src, target)
