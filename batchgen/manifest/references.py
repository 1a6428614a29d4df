"""Reference images: checked when the manifest loads, read when their item is sent.

Local files are read at send time, not at load time, so a catalog of 5,000
SKUs with a 2 MB photo each never holds them all in memory; the ones many
items share (a brand style sheet) are cached encoded.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pybase64

from batchgen.config import Limits
from batchgen.errors import ReferenceImageError
from batchgen.images import SNIFF_BYTES, ImageFormat, sniff
from batchgen.manifest import shrink

_DEFAULT = Limits()  # the one place default limits are written
_PARENTS_KEPT = 16  # other items' images kept encoded, the most recently sent


@dataclass(frozen=True, slots=True)
class UrlReference:
    """A URL or ``data:`` URI, sent as written."""

    url: str


@dataclass(frozen=True, slots=True)
class LocalReference:
    """A file next to the manifest, sent as a ``data:`` URI."""

    path: Path  # resolved, absolute
    written: str  # as the manifest spells it, for messages and sidecars


@dataclass(frozen=True, slots=True)
class ItemReference:
    """``@ID`` or ``@ID#K``: the K-th image of another item of the same job (docs/chains.md)."""

    item_id: str
    k: int  # 1-based
    written: str


@dataclass(frozen=True, slots=True)
class ParentImage:
    """An ``ItemReference`` found in the job folder: the parent's image file, sent like a local
    file, and its content hash as journaled (what a dependent's fingerprint names)."""

    path: Path  # absolute
    written: str  # ``@ID`` as the manifest spells it
    sha256: str


Reference = UrlReference | LocalReference | ItemReference | ParentImage

ITEM_REFERENCE = re.compile(r"@([A-Za-z0-9._-]{1,100})(?:#([1-9][0-9]{0,3}))?")


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "data:"))


def item_reference(text: str) -> ItemReference | None:
    """``text`` read as ``@ID`` or ``@ID#K``; None if it is not one."""
    match = ITEM_REFERENCE.fullmatch(text)
    if match is None:
        return None
    return ItemReference(match.group(1), int(match.group(2) or 1), text)


def inspect(path: Path, root: Path, max_bytes: int) -> str | None:
    """Why ``path`` cannot serve as a reference image, or None when it can.

    Reads only the first bytes, and never opens what is not a regular file
    (opening a FIFO would hang).
    """
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return "file not found"
    except (OSError, RuntimeError) as exc:
        return f"cannot be resolved ({exc})"
    if not real.is_relative_to(root.resolve()):
        return "resolves outside the manifest's folder tree"
    try:
        st = real.stat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_size > max_bytes:
        return (
            f"is {st.st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB cap (limits.max_reference_mb)"
        )
    try:
        with open(real, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if sniff(head) is None:
        return "is not a PNG, JPEG, WebP or GIF image"
    return None


@dataclass(frozen=True, slots=True)
class LoadedReference:
    uri: str  # what goes into the request
    digest: str  # what goes into the fingerprint: content, not path


class ReferenceLoader:
    """Reads local references at send time, caching the encoded ones up to a byte budget.

    A reference over ``max_side`` pixels or ``send_bytes`` is sent downscaled and
    re-encoded (the file itself is never touched); its digest, and so the item's
    fingerprint, then names those settings too.
    """

    def __init__(
        self,
        max_bytes: int,
        cache_bytes: int = 64 * 1024 * 1024,
        *,
        max_side: int = _DEFAULT.reference_max_side,
        send_bytes: int = _DEFAULT.reference_send_bytes,
    ) -> None:
        self._max_bytes = max_bytes
        self._cache_bytes = cache_bytes
        self._max_side = max_side
        self._send_bytes = send_bytes
        self._cache: OrderedDict[tuple[Path, int, int], LoadedReference] = OrderedDict()
        self._cached = 0
        self._shrunk: OrderedDict[str, LoadedReference] = OrderedDict()  # by the original's content
        self._parents: OrderedDict[str, LoadedReference] = OrderedDict()  # by content: other items' images
        self._digests: dict[tuple[Path, int, int], str] = {}  # a few dozen bytes per file, never evicted
        self.shrink_count = 0  # how many times an image was actually re-encoded
        self._lock = threading.Lock()  # load() runs in worker threads

    def load(self, ref: Reference) -> LoadedReference:
        if isinstance(ref, UrlReference):
            if ref.url.startswith("data:"):
                return LoadedReference(ref.url, "sha256:" + hashlib.sha256(ref.url.encode()).hexdigest())
            return LoadedReference(ref.url, ref.url)
        if isinstance(ref, ItemReference):
            raise ReferenceImageError(f"reference {ref.written}: that item has no image yet")
        if isinstance(ref, ParentImage):
            return self._parent(ref)
        return self._file(ref)

    def _parent(self, ref: ParentImage) -> LoadedReference:
        """The parent's file, checked against the hash its journal line holds: a damaged or
        replaced image is never sent in its place. Kept for the few dependents sent right after
        one another, not in the cache of shared files: each parent serves only its own chain."""
        digest = "sha256:" + ref.sha256
        with self._lock:
            hit = self._parents.get(digest)
        if hit is not None:
            return hit
        loaded = self._file(LocalReference(ref.path, ref.written), keep=False)
        if loaded.digest.split("@", 1)[0] != digest:
            raise ReferenceImageError(
                f"reference {ref.written}: its image changed on disk since it was made;"
                f" `batchgen redo` {ref.written[1:].split('#')[0]} to make it again"
            )
        found = LoadedReference(loaded.uri, digest)
        with self._lock:
            self._parents[digest] = found
            while len(self._parents) > _PARENTS_KEPT:
                self._parents.popitem(last=False)
        return found

    def _file(self, ref: LocalReference, keep: bool = True) -> LoadedReference:
        try:
            fd = os.open(ref.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise ReferenceImageError(f"reference {ref.written}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ReferenceImageError(f"reference {ref.written}: not a regular file")
            if st.st_size > self._max_bytes:
                raise ReferenceImageError(f"reference {ref.written}: over the size cap")
            key = (ref.path, st.st_size, st.st_mtime_ns)
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
            data = f.read(self._max_bytes + 1)
        fmt = sniff(data[:SNIFF_BYTES])
        if fmt is None or len(data) > self._max_bytes:
            raise ReferenceImageError(f"reference {ref.written}: no longer a readable image")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if shrink.too_large(data, self._max_side, self._send_bytes):
            loaded = self._shrunk_version(ref, data, digest)
        else:
            loaded = LoadedReference(_data_uri(data, fmt), digest)
        if keep:
            self._remember(key, loaded)
        return loaded

    def digest(self, ref: Reference) -> str:
        """What ``load(ref).digest`` would be, without encoding the file or keeping its bytes: a
        re-run decides what is done by fingerprint, and a catalog of 20,000 product photos must not
        hold them all. Read once per file and modification time."""
        if isinstance(ref, UrlReference):
            return self.load(ref).digest
        if isinstance(ref, ParentImage):
            return "sha256:" + ref.sha256
        if isinstance(ref, ItemReference):
            raise ReferenceImageError(f"reference {ref.written}: that item has no image yet")
        try:
            st = os.stat(ref.path)
        except OSError as exc:
            raise ReferenceImageError(f"reference {ref.written}: {exc.strerror}") from exc
        key = (ref.path, st.st_size, st.st_mtime_ns)
        found = self._digests.get(key)
        if found is None:
            found = self._digests[key] = self.load(ref).digest
        return found

    def _shrunk_version(self, ref: LocalReference, data: bytes, digest: str) -> LoadedReference:
        with self._lock:
            hit = self._shrunk.get(digest)
        if hit is not None:
            return hit
        try:
            small, fmt = shrink.shrink(data, self._max_side, self._send_bytes)
        except shrink.ShrinkError as exc:
            raise ReferenceImageError(f"reference {ref.written}: {exc}") from exc
        settings = f"@{self._max_side}px,{self._send_bytes}B"
        loaded = LoadedReference(_data_uri(small, fmt), digest + settings)
        with self._lock:
            self.shrink_count += 1
            self._shrunk[digest] = loaded
            while len(self._shrunk) > 32:
                self._shrunk.popitem(last=False)
        return loaded

    def _remember(self, key: tuple[Path, int, int], loaded: LoadedReference) -> None:
        size = len(loaded.uri)
        if size > self._cache_bytes:
            return
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = loaded
            self._cached += size
            while self._cached > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old.uri)


def _data_uri(data: bytes, fmt: ImageFormat) -> str:
    return f"data:{fmt.mime};base64,{pybase64.b64encode(data).decode('ascii')}"
