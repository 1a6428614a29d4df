"""A job folder opened again (``retry``, ``redo``, ``report``): the manifest it was made from,
found where the folder is now, the ids a redo names (or the flags it names), checked against the
job, and the derived images a run did not leave, made again."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from batchgen import manifest
from batchgen.errors import JobLockedError, ManifestError, UsageError
from batchgen.job.deriving import Deriving
from batchgen.job.jobs import RunOptions
from batchgen.manifest import chains
from batchgen.outcomes import FLAGS, Derived, ItemStatus
from batchgen.output import journal
from batchgen.output.lock import JobLock
from batchgen.output.store import JobStore
from batchgen.plan import shard
from batchgen.report import record

log = logging.getLogger(__name__)


def load_for_retry(
    job_dir: Path, options: RunOptions, given: Path | None = None
) -> tuple[manifest.Manifest, RunOptions]:
    """The manifest an output folder was made from (or ``given``), and options that write back
    into that folder."""
    state = journal.read(job_dir)
    if state.manifest is None:
        raise UsageError(f"{job_dir}: no {journal.JOURNAL} with a run in it; is this a batchgen job folder?")
    job = manifest.load(given or find_manifest(job_dir, state))
    job_folder, sharded = job_dir, None
    if state.shard and shard.FOLDER.match(job_dir.name):
        job_folder, sharded = job_dir.parent, shard.parse(state.shard)
    if job.job != job_folder.name:
        raise UsageError(f"{job.path} now names job {job.job!r}, not {job_folder.name!r}; run it with `run`")
    overrides = replace(options.overrides, output_dir=job_folder.parent)
    return job, replace(options, overrides=overrides, shard=sharded)


def redo_ids(
    job: manifest.Manifest, options: RunOptions, given: Sequence[str], ids_file: Path | None
) -> frozenset[str]:
    """The ids a redo names, checked against the job: an unknown one is an error, and nothing is sent."""
    wanted = list(given)
    if ids_file is not None:
        try:
            text = ids_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{ids_file}: cannot be read ({getattr(exc, 'strerror', None) or exc})"
            ) from None
        wanted += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    wanted = [w for w in wanted if w]
    if not wanted:
        raise UsageError(
            "name the items to make again: batchgen redo OUTPUT_JOB_DIR ID..., --ids-file FILE or --flag NAME"
        )
    items = shard.select(job.items, options.shard, job.chain_roots)
    known = {item.id for item in items}
    unknown = sorted(set(wanted) - known)
    if unknown:
        where = f"shard {options.shard[0]}/{options.shard[1]} of " if options.shard else ""
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise UsageError(
            f"{len(unknown)} id(s) not in {where}job {job.job!r} ({job.path}): {shown}; nothing was sent"
        )
    return frozenset(wanted)


def flagged(state: journal.JournalState, job: manifest.Manifest, names: Sequence[str]) -> list[str]:
    """The items of ``job`` whose current image the journal (``state``: the job folder's, or a
    bucket's) has flagged with any of ``names`` (``Flag`` values), for ``redo --flag``. Only a
    success carries flags: a redo that fails leaves the flagged image, and its line, as they were.
    An item the manifest no longer has is passed over: there is no request left to send for it."""
    wanted = {FLAGS[name] for name in names}
    entries = state.entries.values()
    found = sorted(e.id for e in entries if not wanted.isdisjoint(e.flags))
    known = {item.id for item in job.items}
    gone = [item_id for item_id in found if item_id not in known]
    if gone:
        log.info(
            "%d flagged item(s) no longer in %s, left as they are: %s", len(gone), job.path, ", ".join(gone)
        )
    return [item_id for item_id in found if item_id in known]


def with_dependents(
    job: manifest.Manifest, options: RunOptions, ids: frozenset[str], dependents: bool = True
) -> frozenset[str]:
    """``ids`` and, unless ``dependents`` is False, every item made from their images: a redone
    hero is followed by its views in the same command (docs/chains.md). Left out, they are stale,
    and the next ``run`` makes them again."""
    found = chains.descendants(shard.select(job.items, options.shard, job.chain_roots), ids)
    if not found:
        return ids
    if dependents:
        log.info("%s: also making again %d item(s) made from the redone image(s)", job.job, len(found))
        return ids | found
    log.warning(
        "%s: %d item(s) made from the redone image(s) will be stale (--no-dependents);"
        " the next run makes them again",
        *(job.job, len(found)),
    )
    return ids


def find_manifest(job_dir: Path, state: journal.JournalState) -> Path:
    """Where the manifest is now: relative to the job folder first (a moved or copied project
    finds its own copy), then where the run recorded it (a job folder moved on its own)."""
    assert state.manifest is not None
    relative = job_dir / state.manifest_relative if state.manifest_relative else None
    if relative is not None and relative.is_file():
        return relative
    recorded = Path(state.manifest)
    if recorded.is_file():
        if relative is not None:
            log.warning(
                "%s: no manifest at %s (where it was relative to this folder); using %s, where the run"
                " recorded it (give another with --manifest FILE)",
                *(job_dir, os.path.normpath(relative), recorded),
            )
        return recorded
    if relative is not None:
        where = f"neither at {os.path.normpath(relative)} (relative to this folder) nor at {recorded}"
    else:
        where = f"no longer at {recorded}"
    raise UsageError(f"{job_dir}: the manifest it was made from is {where}; give it with --manifest FILE")


def derive_again(job_dir: Path, report: record.Report) -> record.Report:
    """``batchgen report``: the thumbnails and variants a run did not leave (killed first, or
    a job folder from before they existed) made, under the job's lock; the report with them.

    The variants need the manifest they are defined in; without one, thumbnails only.
    """
    state = journal.read(job_dir)
    try:
        job: manifest.Manifest | None = (
            manifest.load(find_manifest(job_dir, state)) if state.manifest else None
        )
    except (UsageError, ManifestError) as exc:
        log.warning(
            "%s: variants are made from the manifest, which cannot be read (%s); thumbnails only",
            job_dir,
            exc,
        )
        job = None
    specs = {spec.id: spec for spec in job.items} if job is not None else {}
    derivations = Deriving(job_dir, report.job, job.variants if job is not None else {})
    done = (ItemStatus.SUCCEEDED, ItemStatus.SKIPPED)
    try:
        with JobLock(job_dir):
            derivations.start()
            for item in report.items:
                if item.status in done and item.files:
                    derivations.submit(specs.get(item.id) or _bare(item.id), item.files)
            results = derivations.close()
    except JobLockedError:
        log.info("%s: a run holds the job; it makes the thumbnails and variants itself", job_dir)
        return report
    items = tuple(_with(item, results.get(item.id)) for item in report.items)
    if items == report.items:
        return report
    found = replace(report, items=items)
    record.write(JobStore(job_dir), found)
    return found


def _bare(item_id: str) -> manifest.ItemSpec:
    """An item known only by its id: it gets its thumbnail, and no variant."""
    return manifest.ItemSpec(0, item_id, "", "", "", 1, "b64_json", {}, (), variants=())


def _with(item: record.ReportItem, derived: Derived | None) -> record.ReportItem:
    if derived is None:
        return item
    return replace(item, variants=derived.channels, upscaled=derived.upscaled, variant_errors=derived.errors)
