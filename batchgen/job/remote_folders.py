"""``batchgen report`` and ``batchgen merge`` on job folders in a bucket, and where ``retry``
and ``redo`` of one find its manifest.

The records (report.json, journal.jsonl, the sidecars) are brought down into a temporary
folder, the ordinary report and merge run there, and what they write is put back. Images
never pass through this machine: a merge copies them inside the store.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import tempfile
from collections.abc import Awaitable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from batchgen import config
from batchgen.errors import UsageError
from batchgen.output import journal, paths
from batchgen.output.bucket import Bucket, Location
from batchgen.output.lease import BucketLock
from batchgen.plan import shard
from batchgen.report import cards, gallery, merge, record

Shard = tuple[int, int] | None

AT_ONCE = 32  # objects read or copied at once
_SHARD_REPORT = re.compile(r"(?:^|/)(shard-\d+-of-\d+)/report\.json$")
COPIED = (paths.IMAGES, paths.HISTORY, "thumbs", "variants", "derived")  # what a merge brings from each shard


async def _bounded(calls: Iterable[Awaitable[object]]) -> None:
    slots = asyncio.Semaphore(AT_ONCE)

    async def one(call: Awaitable[object]) -> None:
        async with slots:
            await call

    await asyncio.gather(*(one(c) for c in calls))


async def _download(bucket: Bucket, relative: str, into: Path) -> bool:
    found = await bucket.get(relative)
    if found is None:
        return False
    target = into / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(found[0])
    return True


async def _history(bucket: Bucket) -> set[str]:
    """The names in the folder's history/ (the versions a redo kept), for its gallery."""
    return {path.partition("/")[2] for path in await bucket.sizes(paths.HISTORY)}


async def _records(bucket: Bucket, into: Path) -> record.Report:
    """A job folder's records, brought down: its report, journal and sidecars."""
    if not await _download(bucket, paths.REPORT_JSON, into):
        raise UsageError(f"{bucket}: no {paths.REPORT_JSON} here; is this a job folder?")
    report = record.read(into)
    await _download(bucket, paths.JOURNAL, into)
    sidecars = [paths.sidecar(item.id) for item in report.items if item.files]
    await _bounded(_download(bucket, name, into) for name in sidecars)
    return report


async def report(url: str, environ: Mapping[str, str]) -> record.Report:
    """Rebuild the gallery of the job folder at ``url`` from its records; its report."""
    bucket = Bucket(Location.parse(url), config.storage(environ))
    with tempfile.TemporaryDirectory(prefix="batchgen-report-") as temp:
        folder = Path(temp)
        found = await _records(bucket, folder)
        kept = await _history(bucket)
        gallery.write(folder, found, cards.from_folder(folder, found), shown=str(bucket), kept=kept)
        await bucket.put(paths.REPORT_HTML, folder / paths.REPORT_HTML)
    return found


async def merge_shards(
    given: Sequence[str], output: str, environ: Mapping[str, str]
) -> tuple[record.Report, str]:
    """``batchgen merge`` of shard folders in a bucket into ``output``/<job> in the same bucket."""
    sources = [Location.parse(url) for url in given]
    target_root = Location.parse(output)
    places = {(loc.scheme, loc.bucket) for loc in [*sources, target_root]}
    if len(places) != 1:
        raise UsageError("merge: the shard folders and --output must be in one bucket")
    settings = config.storage(environ)
    whole = Bucket(Location(target_root.scheme, target_root.bucket), settings)
    folders = [folder for loc in sources for folder in await _shard_folders(whole, loc)]
    with tempfile.TemporaryDirectory(prefix="batchgen-merge-") as temp:
        local = []
        kept: set[str] = set()  # the shards' history/, copied into the merged folder
        for i, folder in enumerate(folders):
            down = Path(temp) / "shards" / f"{i}-{folder.prefix.rsplit('/', 1)[-1]}"
            found = await _records(Bucket(folder, settings), down)
            kept |= await _history(Bucket(folder, settings))
            local.append(down)
        target = target_root.child(found.job)
        into = Bucket(target, settings)
        held = await _merged_before(into, Path(temp) / "merged" / found.job, local)
        kept |= await _history(into)

        def holds(files: Sequence[tuple[str, int]]) -> bool:
            return bool(files) and all(held.get(path) == size for path, size in files)

        # What the merged folder made itself stays: no shard's file of those items is copied.
        merged, written, leave = merge.merge(
            local, Path(temp) / "merged", shown=str(target), kept=kept, holds=holds
        )
        # The merged folder's lock, as a local merge takes the folder's: no run or other merge
        # writes there meanwhile. This merge's own token: only an expired lease is taken over.
        async with BucketLock(into, secrets.token_hex(16), config.LOCK_LEASE_S):
            for folder in folders:
                if folder != target:
                    await _copy_files(whole, folder, target, leave)
            names = [paths.JOURNAL, paths.REPORT_JSON, paths.REPORT_HTML]
            names += [paths.sidecar(item.id) for item in merged.items if item.files]
            await _bounded(into.put(name, written / name) for name in names if (written / name).is_file())
    return merged, str(target)


async def _shard_folders(whole: Bucket, location: Location) -> list[Location]:
    """The shard folders under ``location``, or the folder itself if it holds a report."""
    listed = await whole.sizes(location.prefix)
    inside = [key[len(location.prefix) + 1 :] if location.prefix else key for key in listed]
    shards = sorted({m.group(1) for key in inside if (m := _SHARD_REPORT.match(key)) and key.count("/") == 1})
    if shards:
        return [location.child(name) for name in shards]
    if paths.REPORT_JSON in inside:
        return [location]
    raise UsageError(f"{location}: no report.json here, nor shard-K-of-N folders with one")


async def _merged_before(into: Bucket, here: Path, shards: Sequence[Path]) -> dict[str, int]:
    """What an earlier merge left in the merged folder, brought down to ``here``: its journal and
    report, and the sidecars of the items it made itself since (a redo or a retry there), which
    a merge again keeps; returns the sizes of its images."""
    if not await _download(into, paths.JOURNAL, here):
        return {}
    await _download(into, paths.REPORT_JSON, here)
    theirs: dict[str, journal.Entry] = {}
    for down in shards:
        theirs.update(journal.read(down).entries)
    ours = journal.read(here).entries
    differ = [item_id for item_id, entry in ours.items() if entry.succeeded and entry != theirs.get(item_id)]
    await _bounded(_download(into, paths.sidecar(item_id), here) for item_id in differ)
    return await into.sizes(paths.IMAGES)


async def _copy_files(whole: Bucket, source: Location, target: Location, leave: Collection[str]) -> None:
    listed = await whole.sizes(source.prefix)
    start = len(source.prefix) + 1 if source.prefix else 0
    names = [
        key[start:] for key in listed if key[start:].split("/", 1)[0] in COPIED and key[start:] not in leave
    ]
    base = f"{target.prefix}/" if target.prefix else ""
    await _bounded(
        whole.copy(f"{source.prefix}/{name}" if source.prefix else name, base + name) for name in names
    )


@dataclass(frozen=True)
class Target:
    """A bucket's job folder opened again by ``retry`` or ``redo``."""

    manifest: Path  # ``--manifest``, or the one its journal names, found on this machine
    job: str  # the job's name: its folder's
    output: str  # the bucket folder the job's folder is in: its runs' ``--output``
    shard: Shard
    state: journal.JournalState  # its journal, as the bucket holds it (``redo --flag`` reads it)


async def retry_target(url: str, given: Path | None, environ: Mapping[str, str]) -> Target:
    """``batchgen retry URL`` and ``batchgen redo URL``: where the job at ``url`` came from."""
    location = Location.parse(url)
    with tempfile.TemporaryDirectory(prefix="batchgen-retry-") as temp:
        if not await _download(Bucket(location, config.storage(environ)), paths.JOURNAL, Path(temp)):
            raise UsageError(f"{location}: no {paths.JOURNAL} here; is this a batchgen job folder?")
        state = journal.read(Path(temp))
    parts = location.prefix.split("/")
    sharded = None
    if state.shard and shard.FOLDER.match(parts[-1]):
        sharded, parts = shard.parse(state.shard), parts[:-1]
    path = given or (Path(state.manifest) if state.manifest else None)
    if path is None or not path.is_file():
        raise UsageError(
            f"{location}: its manifest ({state.manifest or 'unknown'}) is not here: give --manifest FILE"
        )
    output = str(Location(location.scheme, location.bucket, "/".join(parts[:-1])))
    return Target(path, parts[-1], output, sharded, state)
