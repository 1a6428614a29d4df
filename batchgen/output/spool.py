"""The spool: a job folder on local disk that is mirrored into a bucket as it is written.

A run writing to a bucket works in a local job folder like any other (so every writer,
present and future, stays as it is), and ``Uploader`` carries what it writes up:

- the images and sidecar of each item as soon as its journal line appears (bounded, each
  request retried with backoff by obstore);
- the bucket's ``journal.jsonl``, rewritten now and then, listing an item only once all its
  files are in the bucket: whatever a later run reads there, it can trust;
- at the end, every other file the run wrote (thumbs/, variants/, history/, the report).

An image the run replaces (a redo, an edited prompt, ``--force``) is in the bucket, not in the
spool: the bucket keeps the old version in its history/ before the new one goes up (``replaced``).

``restore`` is the start of such a run: one listing of the bucket (paths and sizes: no image
is downloaded), its journal merged into the spool's, and what an earlier run from this work
dir could not upload sent first. The few earlier images a run needs on this disk are fetched
by ``downloads``. docs/storage.md has the whole story.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batchgen.errors import StoreError
from batchgen.output import journal, paths
from batchgen.output.bucket import Bucket
from batchgen.output.replaced import Replacements
from batchgen.output.store import JobStore
from batchgen.output.variants import RECORDS

log = logging.getLogger(__name__)

UPLOADS = 8  # files in flight at once
TAIL_S = 0.1  # how often the journal is read for new lines
JOURNAL_EVERY_S = 2.0  # the least time between two rewrites of the bucket's journal
# After an upload failed for good (obstore retried it), others wait this long before trying:
# a store that is down costs one retried upload per pause, not one per file.
PAUSE_S = 5.0
# The journal goes up filtered, the relay's limit to the job's folder (a shard's is not its own
# folder: job/remote.py carries it), the stamp never.
LOCAL_ONLY = frozenset({paths.JOURNAL, paths.RELAY_LIMIT, "unchanged.json"})


@dataclass
class Mirror:
    """What the bucket holds of the job (path -> size), as listed and as uploaded since."""

    sizes: dict[str, int]
    journal: list[bytes]  # the bucket journal's lines, as found
    # Files this run fetched from the bucket (output/downloads.py), as written: never carried up.
    fetched: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size, mtime_ns)
    replaced: Replacements = field(init=False)  # the bucket's images that new versions replace

    def __post_init__(self) -> None:
        self.replaced = Replacements(self.sizes)

    def holds(self, relative: str, size: int) -> bool:
        return self.sizes.get(relative) == size


async def restore(bucket: Bucket, folder: Path) -> Mirror:
    """List the bucket, and make the spool's journal the bucket's plus what only the spool has
    (lines of items whose files an earlier run from here could not upload)."""
    sizes = await bucket.sizes()
    found = await bucket.get(paths.JOURNAL)
    remote = _lines(found[0]) if found else []
    local_path = folder / paths.JOURNAL
    try:
        local = _lines(local_path.read_bytes())
    except FileNotFoundError:
        local = []
    known = set(remote)
    ours = [line for line in local if line not in known]
    merged = remote + ours
    if merged != local:
        temp = folder / f".{paths.JOURNAL}.restore"
        temp.write_bytes(b"".join(line + b"\n" for line in merged))
        os.replace(temp, local_path)
    await _records_down(bucket, folder, sizes)
    mirror = Mirror(sizes, remote)
    mirror.replaced.note_journal(remote, ours)
    return mirror


RECORDS_AT_ONCE = 32


async def _records_down(bucket: Bucket, folder: Path, sizes: dict[str, int]) -> None:
    """The records of what was derived from each image (``derived/<id>.json``, small), brought
    into a spool that lacks them: the derivation stage reads them to know what the bucket already
    holds, and would otherwise write empty ones over them."""
    wanted = [
        p for p in sizes if p.startswith(f"{RECORDS}/") and p.endswith(".json") and not (folder / p).exists()
    ]
    if not wanted:
        return
    (folder / RECORDS).mkdir(parents=True, exist_ok=True)
    turns = asyncio.Semaphore(RECORDS_AT_ONCE)

    async def one(path: str) -> None:
        async with turns:
            found = await bucket.get(path)
        if found is not None:
            JobStore(folder).write_bytes(path, found[0], durable=False)

    await asyncio.gather(*(one(p) for p in wanted))


class SpooledStore(JobStore):
    """The spool's job folder, where a file the bucket holds whole counts as there."""

    def __init__(self, root: Path, mirror: Mirror) -> None:
        super().__init__(root)
        self.mirror = mirror

    def intact(self, files: Sequence[tuple[str, int]]) -> bool:
        local = super().intact
        return bool(files) and all(self.mirror.holds(p, s) or local([(p, s)]) for p, s in files)

    def keeping(self, files: Sequence[str], version: int) -> None:
        self.mirror.replaced.add(files, version)

    def drop(self, files: Sequence[str]) -> None:
        super().drop(files)
        self.mirror.replaced.drop(files)

    def history_names(self) -> list[str]:
        return sorted({*super().history_names(), *self.mirror.replaced.history()})


def _lines(data: bytes) -> list[bytes]:
    # A line cut short by a crash has no newline after it: it is not a line yet.
    whole = data if data.endswith(b"\n") else data[: data.rfind(b"\n") + 1]
    return [line for line in whole.split(b"\n") if line.strip()]


@dataclass
class Stats:
    uploaded: int = 0
    uploaded_under: Counter[str] = field(default_factory=Counter)  # by the folder at the top
    brought: list[str] = field(default_factory=list)  # earlier runs' images fetched (output/downloads.py)
    waits_s: list[float] = field(default_factory=list)  # per image: written -> in the bucket
    last_image_at: float = 0.0  # time.monotonic() when the last image reached the bucket


class Ledger:
    """The spool's journal, line by line, and which lines the bucket's journal may list: those
    it listed already, and those whose files are all in the bucket. A flag per line, not the
    line itself: the lines are read again from the spool's journal when the bucket's is written."""

    def __init__(self, folder: Path, mirror: Mirror, failed: set[str]) -> None:
        self.folder = folder
        self.mirror = mirror
        self._failed = failed  # the uploader's: files that could not be uploaded
        self._from_bucket = {_digest(line) for line in mirror.journal}
        mirror.journal.clear()  # read once, here
        self._listed = bytearray()  # per line of the spool's journal: 1 if the bucket may list it
        self._waiting: dict[int, tuple[list[tuple[str, int]], str]] = {}  # line -> (its files, sidecar)
        self._offset = 0

    def read(self) -> list[str]:
        """The lines appended since the last read; the files they stand for that the bucket lacks."""
        data = self._journal(self._offset, None)
        end = data.rfind(b"\n") + 1  # a line being written is read once it is whole
        self._offset += end
        wanted: list[str] = []
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            entry = None if _digest(line) in self._from_bucket else journal.entry(line)
            files = [(f.path, f.bytes) for f in entry.files] if entry else []
            sidecar = paths.sidecar(entry.id) if entry else ""
            if entry is not None:
                with contextlib.suppress(OSError):
                    files.append((sidecar, os.stat(self.folder / sidecar).st_size))
            missing = [path for path, size in files if not self.mirror.holds(path, size)]
            if missing:
                self._waiting[len(self._listed)] = (files, sidecar)
            self._listed.append(0 if missing else 1)
            wanted += missing
        return wanted

    def body(self) -> bytes:
        """The bucket's journal: every line it may list, in the spool journal's order."""
        for i, (files, sidecar) in list(self._waiting.items()):
            if all(self.mirror.holds(p, n) for p, n in files) and sidecar not in self._failed:
                self._listed[i] = 1
                del self._waiting[i]
        lines = [line for line in self._journal(0, self._offset).split(b"\n") if line.strip()]
        return b"".join(line + b"\n" for line, ok in zip(lines, self._listed, strict=False) if ok)

    def _journal(self, start: int, end: int | None) -> bytes:
        try:
            with open(self.folder / paths.JOURNAL, "rb") as f:
                f.seek(start)
                return f.read(-1 if end is None else end - start)
        except FileNotFoundError:
            return b""


def _digest(line: bytes) -> bytes:
    return hashlib.blake2b(line, digest_size=16).digest()


class Uploader:
    """``async with Uploader(bucket, folder, mirror)`` around a run; ``finish()`` at its end."""

    def __init__(
        self,
        bucket: Bucket,
        folder: Path,
        mirror: Mirror,
        uploads: int = UPLOADS,
        still_ours: Callable[[], bool] = lambda: True,
    ) -> None:
        self.bucket = bucket
        self._still_ours = still_ours  # False once another run took the job's lock
        self.folder = folder
        self.mirror = mirror
        self.stats = Stats()
        self._slots = asyncio.Semaphore(uploads)
        self._started_ns = time.time_ns()
        self._sent: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) uploaded this run
        self._failed: set[str] = set()
        self._ledger = Ledger(folder, mirror, self._failed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tail: asyncio.Task[None] | None = None
        self._journal_written = 0.0
        self._journal_every = JOURNAL_EVERY_S
        self._journal_dirty = False
        self._paused_until = 0.0

    async def __aenter__(self) -> Uploader:
        await self.drain()
        self._tail = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop_following()

    async def _stop_following(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail
            self._tail = None

    async def drain(self) -> None:
        """Upload what an earlier run from this spool left waiting (an item's files and what was
        made from them, not the report: this run writes its own). An item's files go up for its
        journal line (``Ledger``), the image they replace kept first; an image that no line
        vouches for (a run killed before its line) never goes over the bucket's."""
        await self._read_journal()
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        pending = await asyncio.to_thread(self._changed, deep_only=True)
        await self._upload_all(pending)

    async def finish(self) -> int:
        """After the run: every line read, every file up, the journal written; how many files wait."""
        await self._stop_following()
        await self._read_journal()
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        retry = sorted(self._failed)
        self._failed.clear()
        self._paused_until = 0.0  # one more try each; a store still down fails the first and pauses
        changed = await asyncio.to_thread(self._changed, deep_only=False)
        await self._upload_all({*retry, *changed})
        await self._write_journal(force=True)
        return len(self._failed)

    async def _follow(self) -> None:
        while True:
            await self._read_journal()
            await self._write_journal(force=False)
            await asyncio.sleep(TAIL_S)

    async def _read_journal(self) -> None:
        for path in await asyncio.to_thread(self._ledger.read):
            self._journal_dirty = True
            if path not in self._sent and path not in self._failed:
                task = asyncio.create_task(self._upload(path))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _upload_all(self, relatives: Collection[str]) -> None:
        """Images and sidecars first: one that replaces an image deletes the old one's thumbnail
        and variants (``Replacements.keep``), which must not race the upload of the new ones."""
        for first in (True, False):
            under = (self._upload(p) for p in relatives if _image(p) is first)
            await asyncio.gather(*under)

    async def _upload(self, relative: str) -> None:
        local = self.folder / relative
        async with self._slots:
            try:
                st = os.stat(local)
            except OSError:
                return  # gone (a redo moved it): nothing of it to carry up
            if time.monotonic() < self._paused_until:
                self._failed.add(relative)  # tried again at the end of the run
                return
            try:
                await self.mirror.replaced.keep(self.bucket, relative)
                await self.bucket.put(relative, local)
                await self.mirror.replaced.drop_superseded(self.bucket, relative)
            except StoreError as exc:
                if not self._failed:
                    log.warning("%s; the file waits in the spool for the next run", exc)
                self._failed.add(relative)
                self._paused_until = time.monotonic() + PAUSE_S
                return
        self._failed.discard(relative)
        self._sent[relative] = (st.st_size, st.st_mtime_ns)
        self.mirror.sizes[relative] = st.st_size
        self.stats.uploaded += 1
        self.stats.uploaded_under[relative.split("/", 1)[0]] += 1
        if relative.startswith(f"{paths.IMAGES}/") and not relative.endswith(".json"):
            self.stats.waits_s.append(max(0.0, time.time() - st.st_mtime_ns / 1e9))
            self.stats.last_image_at = time.monotonic()
        self._journal_dirty = True

    async def _write_journal(self, *, force: bool) -> None:
        if not force and (
            not self._journal_dirty or time.monotonic() - self._journal_written < self._journal_every
        ):
            return
        if not self._still_ours():  # the journal is the lock holder's to write now
            self._failed.add(paths.JOURNAL)
            return
        body = await asyncio.to_thread(self._ledger.body)
        self._journal_written = time.monotonic()
        self._journal_dirty = False
        try:
            await self.bucket.put(paths.JOURNAL, body)
            # A large journal is written less often: never more than a tenth of the time.
            self._journal_every = max(JOURNAL_EVERY_S, 10 * (time.monotonic() - self._journal_written))
        except StoreError as exc:
            self._journal_dirty = True
            if force:
                self._failed.add(paths.JOURNAL)
            log.warning("%s", exc)
        else:
            self._failed.discard(paths.JOURNAL)

    def _changed(self, *, deep_only: bool) -> list[str]:
        """The spool's files the bucket lacks, or that this run changed since it uploaded them."""
        found = []
        for relative, st in _walk(self.folder):
            if (deep_only and "/" not in relative) or relative in LOCAL_ONLY:
                continue
            now = (st.st_size, st.st_mtime_ns)
            if self._sent.get(relative) == now or self.mirror.fetched.get(relative) == now:
                continue  # uploaded by this run, or fetched from the bucket by it
            if st.st_mtime_ns < self._started_ns and self.mirror.holds(relative, st.st_size):
                continue
            if st.st_mtime_ns < self._started_ns and relative in self.mirror.sizes and _image(relative):
                continue  # an earlier run's, over the bucket's: only for its journal line (``Ledger``)
            found.append(relative)
        return found

    @property
    def waiting(self) -> int:
        return len(self._failed)


def _image(relative: str) -> bool:
    """An item's image or sidecar."""
    return relative.startswith(f"{paths.IMAGES}/")


def _walk(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every file of the spool (not its lock, temp files or other dot files), relative, with its stat."""
    root = str(folder)
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = os.path.relpath(top, root)
        for name in files:
            if name.startswith("."):
                continue
            relative = name if base == "." else f"{base}/{name}".replace(os.sep, "/")
            with contextlib.suppress(OSError):
                yield relative, os.stat(os.path.join(top, name))


def evict(folder: Path, mirror: Mirror) -> int:
    """Delete from the spool the images the bucket holds whole: the spool keeps what waits."""
    gone = 0
    for relative, st in list(_walk(folder)):
        top = relative.split("/", 1)[0]
        evictable = top in (paths.IMAGES, paths.HISTORY) and not relative.endswith(".json")
        if evictable and mirror.holds(relative, st.st_size):
            with contextlib.suppress(OSError):
                os.unlink(folder / relative)
                gone += 1
    return gone
