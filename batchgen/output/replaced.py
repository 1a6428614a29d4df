"""The images a run into a bucket replaces (a redo, an edited prompt, ``--force``): the old
version kept in the bucket's history/ before a new file of its item goes up.

A local job folder keeps the old version with a hard link (``history.keep``) and removes what
was derived from it (``variants.forget``). A spool holds no copy of the image it replaces, so the
bucket does both itself, inside the store: the run that replaces an image notes it here
(``SpooledStore.keeping``), as does the next run from the same work dir for the new versions an
earlier one could not upload (``note_journal``); the uploader calls ``keep`` before each file
under images/ goes up. docs/storage.md, "Redo in the bucket", tells the user's side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from batchgen.output import journal, paths
from batchgen.output.bucket import Bucket
from batchgen.output.journal import Entry
from batchgen.output.variants import FOLDER, RECORDS, THUMBS


@dataclass(frozen=True)
class Replaced:
    """An item's files in the bucket that a new version replaces."""

    copies: tuple[tuple[str, str], ...]  # (a file in the bucket, its name in history/)
    stems: frozenset[str]  # ``images/<stem>`` of each of its files: a new file of one waits for the copies


class Replacements:
    """The bucket's files that new versions replace, by stem, and which of them are kept."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self._sizes = sizes  # the mirror's: what the bucket holds, as listed and written since
        self._by_stem: dict[str, Replaced] = {}
        self._kept: set[Replaced] = set()
        self._keeping: dict[Replaced, asyncio.Lock] = {}  # one item's files wait for its own copies
        self._derived: dict[str, list[str]] | None = None  # stem -> its thumbnail and variants
        self._dropped: set[str] = set()  # old files no new one writes over: deleted once it is up

    def add(self, files: Sequence[str], version: int) -> None:
        """``files`` (an item's images and sidecar) are about to be replaced: those the bucket
        holds are to be kept as version ``version`` in its history/. Called from the I/O threads:
        one dict write per stem."""
        copies = tuple((f, paths.history(f, version)) for f in files if f in self._sizes)
        if copies:
            found = Replaced(copies, frozenset(_stem(f) for f in files))
            for stem in found.stems:
                self._by_stem[stem] = found

    def note_journal(self, held: Iterable[bytes], ours: Iterable[bytes]) -> None:
        """``ours``: lines of the spool's journal that the bucket's (``held``) lacks: new versions
        an earlier run from here made and could not upload. The images they replace (held whole,
        as triage judges them) are kept before those go up, as that run would have kept them."""
        newer = {e.id: e for e in map(journal.entry, ours) if e is not None and e.succeeded}
        if not newer:
            return
        found: dict[str, Entry] = {}
        for line in held:
            entry = journal.entry(line)
            if entry is not None and entry.id in newer:
                found[entry.id] = entry
        for item_id, new in newer.items():
            old = found.get(item_id)
            if old is None or not old.succeeded or old.version >= new.version:
                continue
            if all(self._sizes.get(f.path) == f.bytes for f in old.files):
                self.add([*(f.path for f in old.files), paths.sidecar(item_id)], old.version)
                self.drop([f.path for f in old.files if f.path not in {g.path for g in new.files}])

    def history(self) -> set[str]:
        """The names in the bucket's history/, with those this run is keeping there."""
        start = len(paths.HISTORY) + 1
        names = {p[start:] for p in list(self._sizes) if p.startswith(f"{paths.HISTORY}/")}
        return names | {target[start:] for r in list(self._by_stem.values()) for _, target in r.copies}

    async def keep(self, bucket: Bucket, relative: str) -> None:
        """Before ``relative`` goes up, if it is a new file of an item whose image is replaced:
        the bucket's old files copied into its history/ (no image passes through this machine),
        and the old picture's thumbnail, variants and derivation record deleted. So the bucket
        holds the old image or the new one, never neither, and never a thumbnail of the old one
        beside the new. Nothing already in history/ is written over: after a crash, what is there
        is the old version. StoreError if it cannot be done: the new file then waits."""
        found = self._by_stem.get(_stem(relative)) if relative.startswith(f"{paths.IMAGES}/") else None
        if found is None or found in self._kept:
            return
        async with self._keeping.setdefault(found, asyncio.Lock()):
            if found in self._kept:
                return
            copies = [(s, t) for s, t in found.copies if t not in self._sizes and s in self._sizes]
            await asyncio.gather(*(bucket.copy(source, target) for source, target in copies))
            for source, target in copies:
                self._sizes[target] = self._sizes[source]
            derived = [path for path in self._derived_from(found.stems) if path in self._sizes]
            await asyncio.gather(*(bucket.delete(path) for path in derived))
            for path in derived:
                del self._sizes[path]
            self._kept.add(found)
            del self._keeping[found]

    def drop(self, files: Sequence[str]) -> None:
        """``files`` of an old version that its new one does not write over (fewer images, or
        another format): deleted from the bucket once the new version's files go up. Called
        from the I/O threads, after ``add`` and before the new sidecar is written."""
        self._dropped.update(f for f in files if f in self._sizes)

    async def drop_superseded(self, bucket: Bucket, relative: str) -> None:
        """After ``relative``, a new file of an item whose image was replaced, went up: the old
        version's files it dropped deleted from images/ (each kept in history/ by ``keep``).
        StoreError if it cannot be: ``relative`` is then uploaded again, and this tried again."""
        found = self._by_stem.get(_stem(relative)) if relative.startswith(f"{paths.IMAGES}/") else None
        if found is None or not self._dropped:
            return
        stale = [old for old, _ in found.copies if old in self._dropped and old in self._sizes]
        self._dropped.difference_update(stale)  # this call deletes them; the item's other files do not
        try:
            await asyncio.gather(*(bucket.delete(old) for old in stale))
        except BaseException:
            self._dropped.update(stale)
            raise
        for old in stale:
            self._sizes.pop(old, None)

    def _derived_from(self, stems: Iterable[str]) -> list[str]:
        """What the bucket holds that was derived from the images ``stems`` (``images/<stem>``)."""
        if self._derived is None:  # one pass over the listing, for the first item replaced
            self._derived = {}
            for path in list(self._sizes):
                if path.split("/", 1)[0] in (THUMBS, FOLDER):
                    self._derived.setdefault(PurePosixPath(path).stem, []).append(path)
        names = [PurePosixPath(stem).name for stem in stems]
        return [f"{RECORDS}/{n}.json" for n in names] + [p for n in names for p in self._derived.get(n, ())]


def _stem(relative: str) -> str:
    """``images/a-2.png`` and ``images/a-2.json`` as ``images/a-2``."""
    return str(PurePosixPath(relative).with_suffix(""))
