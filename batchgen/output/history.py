"""history/: earlier versions of an image that was redone, kept, never deleted by batchgen."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from batchgen.output import durable, paths
from batchgen.output.paths import HISTORY

if TYPE_CHECKING:
    from batchgen.output.store import JobStore


def keep(store: JobStore, files: Sequence[str], version: int) -> None:
    """Keep ``files`` (an item's images and sidecar) as version ``version`` in ``history/``,
    before a new version replaces them: ``images/a.png`` becomes ``history/a.<version>.png``.

    A hard link, so the file stays where it is until the new one is renamed over it: a crash
    at any point leaves the old image or the new one under ``images/``, never neither.
    Never deletes or overwrites anything already in ``history/``. A spool's store (a run into a
    bucket) has the bucket keep its own copies too (``output/replaced.py``).
    """
    (store.root / HISTORY).mkdir(exist_ok=True)
    for relative in files:
        source = store.path(relative)
        target = store.path(paths.history(relative, version))
        try:
            os.link(source, target)
        except FileExistsError:
            continue  # kept by an earlier redo that stopped before its journal line
        except FileNotFoundError:
            continue
        except OSError:
            # A file system without hard links: a copy, renamed into place whole.
            try:
                store.write_bytes(str(target.relative_to(store.root)), source.read_bytes())
            except FileNotFoundError:
                continue
    durable.fsync_dir(store.root / HISTORY)
    store.keeping(files, version)
