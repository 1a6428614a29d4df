"""Earlier runs' images brought back from a bucket into the spool, when a run needs them.

A bucket run's spool holds only what its own runs wrote, and lets go of the images once they
are in the bucket. Two things need an earlier run's image on this disk: a dependent sent with
its parent's image (docs/chains.md), and a variant made again from its original after its spec
changed (with the item's other variants, which stay as they are). ``bring`` fetches those, and
only those, each checked against the sha256 its record (journal line, derivation record) holds.
docs/storage.md tells the user's side.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from batchgen.errors import StoreError
from batchgen.output.bucket import Bucket
from batchgen.output.journal import JournalFile
from batchgen.output.spool import Mirror, Stats
from batchgen.output.store import JobStore

log = logging.getLogger(__name__)

AT_ONCE = 8  # downloads in flight at once


async def bring(
    bucket: Bucket, folder: Path, mirror: Mirror, stats: Stats, files: Sequence[JournalFile]
) -> None:
    """``files`` fetched from ``bucket`` into ``folder`` where they are not whole, and kept only
    if they are what their record says (its sha256): a dependent is never sent with another
    image than its fingerprint names. What cannot be had is left out, and the dependent fails, or the variant
    stays as it was, as they would without the bucket. Each is noted in ``mirror.fetched``."""
    wanted = {f.path: f for f in files if not _whole(folder / f.path, f.bytes)}
    turns = asyncio.Semaphore(AT_ONCE)

    async def one(file: JournalFile) -> None:
        async with turns:
            try:
                found = await bucket.get(file.path)
            except StoreError as exc:
                log.warning("%s", exc)
                return
        st = None if found is None else await asyncio.to_thread(_keep, folder, file, found[0])
        if st is None:
            log.warning("%s/%s: not the file its record names (its sha256); not used", bucket, file.path)
            return
        mirror.fetched[file.path] = (st.st_size, st.st_mtime_ns)
        stats.brought.append(file.path)

    await asyncio.gather(*(one(f) for f in wanted.values()))


def _keep(folder: Path, file: JournalFile, data: bytes) -> os.stat_result | None:
    if hashlib.sha256(data).hexdigest() != file.sha256:
        return None
    store = JobStore(folder)
    store.path(file.path).parent.mkdir(parents=True, exist_ok=True)  # refused if outside the folder
    store.write_bytes(file.path, data, durable=False)
    return os.stat(folder / file.path)


def _whole(path: Path, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False
