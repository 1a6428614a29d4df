"""The one way batchgen puts a file in place, and the one sweep of what a crash left behind.

Every file appears whole or not at all: written (or linked) to a temp file in its own folder,
fsync'd, renamed over the target. The folder's own fsync, which makes the rename survive a power
cut, is ``fsync_dir``: called once per folder where it matters (at a job's end, after a merge),
not once per file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".batchgen-"
TEMP_SUFFIX = ".tmp"


def temp_beside(target: Path) -> Path:
    """A fresh temp name in ``target``'s folder: a rename within one file system is atomic."""
    return target.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"


@contextlib.contextmanager
def atomic(target: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A file to write, which appears as ``target`` whole when the block ends, or never.

    ``durable``: fsync'd before the rename. Without, it is still whole after a crash of the
    process (the rename is atomic); an ``os.sync`` at the job's end makes it durable.
    Raises OSError as it comes; the temp file never outlives a failure.
    """
    temp = temp_beside(target)
    # Not tempfile.mkstemp: its files are 0600, and images are meant to be shared.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def link_or_copy(source: Path, target: Path) -> None:
    """``source`` as ``target``, atomically: hard-linked where the file system allows (no extra
    space), else copied and fsync'd."""
    temp = temp_beside(target)
    try:
        try:
            os.link(source, temp)
        except OSError:
            shutil.copyfile(source, temp)
            with open(temp, "rb+") as copied:
                os.fsync(copied.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def sweep(folder: Path, names: Iterable[str] | None = None) -> list[str]:
    """Delete the temp files a crashed write left in ``folder``; the other names in it.

    ``names``: the folder's listing, if already made (images/ of a catalog holds 200,000)."""
    kept = []
    for name in os.listdir(folder) if names is None else names:
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)
        else:
            kept.append(name)
    return kept


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)
