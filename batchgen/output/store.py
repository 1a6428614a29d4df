"""Where files are written: atomically, and only inside the job folder.

Every file appears whole or not at all, through ``durable.atomic`` (a temp file in the same
folder, fsync'd, renamed over the target); the folders are fsync'd once, in ``sync()``, so a
crash or ``kill -9`` leaves complete images or none. All methods block; the runner calls them
in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import orjson

from batchgen.errors import StoreError
from batchgen.images import GIF, JPEG, PNG, WEBP, GeneratedImage, pixel_size
from batchgen.output import durable as files
from batchgen.output import paths

_IMAGE_EXTS = tuple(f.ext for f in (PNG, JPEG, WEBP, GIF))


@dataclass(frozen=True, slots=True)
class StoredFile:
    path: str  # relative to the job folder
    sha256: str
    bytes: int
    mime: str
    width: int | None = None  # pixels, from the image's header; None when it could not be read
    height: int | None = None

    @property
    def pixels(self) -> tuple[int, int] | None:
        return None if self.width is None or self.height is None else (self.width, self.height)


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._real_root = root.resolve()
        self._folders: dict[Path, bool] = {}
        self._existing: set[str] = set()  # image files there before this run (relative paths)

    def prepare(self) -> None:
        """Create the folders and remove temp files a crashed run left behind."""
        images = self.root / paths.IMAGES
        try:
            images.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {images}: {exc.strerror}") from exc
        self._real_root = self.root.resolve()
        self._folders.clear()
        self.tidy()
        if (self.root / paths.HISTORY).is_dir():
            files.sweep(self.root / paths.HISTORY)
        # One listing: images/ of a catalog holds 200,000 names.
        names = files.sweep(images, os.listdir(images))
        self._existing = {paths.image(name) for name in names}

    def tidy(self) -> None:
        """Remove the temp files a crashed write left in the job folder itself (not in images/,
        which ``prepare`` sweeps as it lists it)."""
        files.sweep(self.root)

    def path(self, relative: str) -> Path:
        """The path of ``relative``, refused if it would leave the job folder.

        Lexically (no absolute path, no ``..``), and by where its folder really is; folders
        are resolved once each, since a catalog writes thousands of files into one.
        Renames and unlinks act on a symlink itself, never on what it points to.
        """
        parts = PurePosixPath(relative).parts
        if not parts or os.path.isabs(relative) or ".." in parts or "\0" in relative:
            raise StoreError(f"refusing to write {relative!r}: outside the job folder {self.root}")
        target = self.root / relative
        inside = self._folders.get(target.parent)
        if inside is None:
            inside = self._folders[target.parent] = target.parent.resolve().is_relative_to(self._real_root)
        if not inside:
            raise StoreError(f"refusing to write {relative!r}: outside the job folder {self.root}")
        return target

    def write_bytes(self, relative: str, data: bytes, *, durable: bool = True) -> None:
        with self.open_atomic(relative, durable=durable) as f:
            f.write(data)

    @contextlib.contextmanager
    def open_atomic(self, relative: str, *, durable: bool = True) -> Iterator[BinaryIO]:
        """A file to write, which appears under its name whole when the block ends, or never.

        ``durable``: fsync'd before it appears. Without, it is still whole after a crash of
        the process (the rename is atomic), and ``sync()`` makes it durable at the job's end.
        """
        target = self.path(relative)
        try:
            with files.atomic(target, durable=durable) as f:
                yield f
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror}") from exc
        # No directory fsync per file (one per folder in sync()): a rename lost to a power cut
        # leaves the old file or none, and the next run's journal-against-files check sends that
        # item again. The file's own data is fsync'd above, so what appears is always whole.

    def write_json(self, relative: str, data: Any, *, durable: bool = True) -> None:
        self.write_bytes(relative, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n", durable=durable)

    def write_images(self, stems: Sequence[str], images: Sequence[GeneratedImage]) -> list[StoredFile]:
        """One file per image, named by stem and the format its bytes show, with its pixel size
        read from its header (for the check of what arrived)."""
        if len(images) > len(stems):
            images = images[: len(stems)]  # the service sent more than asked; keep what was asked
        stored = []
        for stem, image in zip(stems, images, strict=False):
            relative = f"{stem}.{image.format.ext}"
            self.write_bytes(relative, image.data)
            self._remove_other_formats(stem, image.format.ext)
            self._existing.add(relative)
            width, height = pixel_size(image.data) or (None, None)
            stored.append(
                StoredFile(
                    relative,
                    hashlib.sha256(image.data).hexdigest(),
                    len(image.data),
                    image.format.mime,
                    width,
                    height,
                )
            )
        return stored

    def _remove_other_formats(self, stem: str, keep: str) -> None:
        # A regenerated image may come back as JPEG where it was PNG; the old one must not linger.
        # Only files there when the job started can be such leftovers: no failing unlink per image.
        for ext in _IMAGE_EXTS:
            name = f"{stem}.{ext}"
            if ext != keep and name in self._existing:
                with contextlib.suppress(FileNotFoundError):
                    self.path(name).unlink()

    def intact(self, files: Sequence[tuple[str, int]]) -> bool:
        """Every ``(path, size)`` is there with that size.

        Size, not a hash: files are written atomically, so a damaged one is a missing or
        truncated one, and re-hashing gigabytes on every run would make re-runs of large
        catalogs slow.
        """
        if not files:
            return False
        root = str(self.root)
        for relative, size in files:
            try:
                if os.stat(f"{root}/{relative}").st_size != size:
                    return False
            except OSError:
                return False
        return True

    def keeping(self, files: Sequence[str], version: int) -> None:
        """``files`` were kept as version ``version`` in history/ (``history.keep``) and are about to
        be replaced. Nothing more to do in a job folder; a spool's has its bucket keep them too."""

    def drop(self, files: Sequence[str]) -> None:
        """An old version's ``files`` that its new version did not write over (fewer images, or
        another format), kept in history/ before: removed from images/."""
        for relative in files:
            with contextlib.suppress(FileNotFoundError):
                self.path(relative).unlink()

    def history_names(self) -> list[str]:
        """The names in history/: the versions a redo kept."""
        try:
            return sorted(os.listdir(self.root / paths.HISTORY))
        except OSError:
            return []

    def sync(self) -> None:
        """Make this run's files durable: once per job, not once per file."""
        os.sync()  # the sidecars written without their own fsync
        for folder in (self.root / paths.IMAGES, self.root):
            files.fsync_dir(folder)
