"""Knowing that a finished job has nothing to do, without expanding its manifest.

A run that ends with every item made from exactly the request its manifest asks for leaves a
stamp in the job folder, ``unchanged.json``, the way ``make`` trusts file times:

- the size, modification time, change time and inode of every file the items were made from
  (the manifest, its CSVs, its local references, the price table);
- the journal's size and modification time;
- what the report and the gallery say about each item, in order (id, prompt, attempts,
  version, files with their sizes, pixel size, flags, the request's parameters, its thumbnails
  and variants with their sizes) and the manifest's warnings.

The next ``batchgen run`` reads only the manifest's header. If the stamp is for the same manifest,
shard, price table and batchgen version, every source file is as it was, the journal has not
been written since and every image, thumbnail and variant is still there at its size, the run
writes its report and gallery from the stamp and sends nothing: exactly what expanding the
manifest would have ended in. Any difference, and the run takes the long way. The change time
cannot be set back by a user (``touch`` sets the modification time only), so an edited file is
never mistaken for an unchanged one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchgen import __version__, manifest
from batchgen.manifest.spec import Manifest, Signature
from batchgen.outcomes import FLAGS, Derived, ItemOutcome, ItemStatus
from batchgen.output import journal, paths
from batchgen.output.store import JobStore
from batchgen.plan.resume import Mode

log = logging.getLogger(__name__)

FORMAT = 4  # 2: pixel sizes and flags; 3: thumbnails and variants; 4: parents

# The stamp policy, whole. Runs in these modes compare every item with its journal entry, so what
# they end with may be stamped ...
WRITTEN_BY = frozenset({Mode.RUN, Mode.FORCE})
# ... and a job loaded in these modes, finished with nothing changed since, sends nothing: its
# stamp says so (``--force`` must send everything, ``redo`` what it names, whatever a stamp says).
TRUSTED_BY = frozenset({Mode.RUN, Mode.ONLY_FAILED, Mode.ALL_FAILED})


Stored = tuple[str, int]  # a file an item made: its path relative to the job folder, its size


@dataclass(frozen=True)
class Stamp:
    """What a finished run left to be trusted while nothing changes: ``to_json`` its one writer,
    ``from_json`` its one reader. Per item, in the report's order: id, prompt, attempts, version,
    files, and the index of its parameters (each distinct set written once)."""

    key: str
    sources: tuple[tuple[str, Signature], ...]  # each file the items were made from, as signed
    journal: tuple[int, int] | None  # the journal's size and mtime_ns when the stamp was written
    ids: tuple[str, ...]
    prompts: tuple[str, ...]
    attempts: tuple[int, ...]
    versions: tuple[int, ...]
    files: tuple[tuple[Stored, ...], ...]
    params: tuple[dict[str, Any], ...]
    param_of: tuple[int, ...]
    warnings: tuple[str, ...]
    pixels: tuple[tuple[int, int] | None, ...]  # per item: width, height of its first image, if known
    flags: tuple[tuple[str, ...], ...]  # per item
    derived: tuple[Any, ...]  # per item: [[[variant, [[path, bytes], ...]], ...], upscaled] or None
    parents: Mapping[str, tuple[str, ...]]  # the items each dependent is made from

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "sources": [[path, *sig] for path, sig in self.sources],
            "journal": list(self.journal) if self.journal else None,
            "ids": self.ids,
            "prompts": self.prompts,
            "attempts": self.attempts,
            "versions": self.versions,
            "files": self.files,
            "params": self.params,
            "param_of": self.param_of,
            "warnings": self.warnings,
            "pixels": self.pixels,
            "flags": self.flags,
            "derived": self.derived,
            "parents": {k: list(v) for k, v in self.parents.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stamp:
        """The stamp ``data`` holds; KeyError, TypeError or ValueError if it holds none."""
        if data["format"] != FORMAT:
            raise ValueError(f"format {data['format']!r}")
        journal_sig = data["journal"]
        return cls(
            key=str(data["key"]),
            sources=tuple((str(path), _signature(sig)) for path, *sig in data["sources"]),
            journal=(int(journal_sig[0]), int(journal_sig[1])) if journal_sig else None,
            ids=tuple(data["ids"]),
            prompts=tuple(data["prompts"]),
            attempts=tuple(data["attempts"]),
            versions=tuple(data["versions"]),
            files=tuple(tuple((str(path), int(size)) for path, size in item) for item in data["files"]),
            params=tuple(data["params"]),
            param_of=tuple(data["param_of"]),
            warnings=tuple(data["warnings"]),
            pixels=tuple((int(p[0]), int(p[1])) if p else None for p in data["pixels"]),
            flags=tuple(tuple(str(f) for f in item) for item in data["flags"]),
            derived=tuple(data["derived"]),
            parents={str(k): tuple(map(str, v)) for k, v in data["parents"].items()},
        )


def _signature(values: Sequence[Any]) -> Signature:
    size, mtime_ns, ctime_ns, inode = (int(v) for v in values)
    return size, mtime_ns, ctime_ns, inode


@dataclass(frozen=True)
class Unchanged:
    """A job whose stamp matched when it was loaded: its header, and what the stamp says."""

    header: Manifest  # without items
    stamp: Stamp

    @property
    def job(self) -> str:
        return self.header.job

    @property
    def path(self) -> Path:
        return self.header.path


def key(header: Manifest, shard: tuple[int, int] | None, prices: Path | None) -> str:
    """What a stamp is valid for: this manifest, this shard of it, this price table, this batchgen."""
    what = [FORMAT, __version__, str(header.path.resolve()), shard, str(prices.resolve()) if prices else None]
    return hashlib.sha256(orjson.dumps(what)).hexdigest()


def signature(path: Path | str) -> Signature | None:
    try:
        return manifest.signature(os.stat(path))
    except OSError:
        return None


def find(folder: Path, wanted: str) -> Stamp | None:
    """The stamp in ``folder`` if it is for ``wanted`` and none of its sources changed since."""
    try:
        data = orjson.loads((folder / paths.STAMP).read_bytes())
        if data.get("key") != wanted:
            return None
        stamp = Stamp.from_json(data)
    except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    for path, was in stamp.sources:
        if signature(path) != was:
            return None
    return stamp  # the journal and the images are checked under the job's lock (``outcomes``)


def journal_signature(folder: Path) -> tuple[int, int] | None:
    sig = signature(folder / journal.JOURNAL)
    return None if sig is None else sig[:2]


def outcomes(stamp: Stamp, store: JobStore) -> list[ItemOutcome] | None:
    """Every item skipped, as the long way would report it; None if an image is gone or cut short
    (the long way makes it again) or the journal was written since the stamp."""
    if journal_signature(store.root) != stamp.journal:
        return None
    skipped = ItemStatus.SKIPPED
    made: list[ItemOutcome] = []
    columns = (
        stamp.ids,
        stamp.prompts,
        stamp.attempts,
        stamp.versions,
        stamp.files,
        stamp.pixels,
        stamp.flags,
    )
    for index, (item_id, prompt, attempts, version, files, pixels, flags) in enumerate(
        zip(*columns, strict=True)
    ):
        derived = _derived(stamp.derived[index])
        if not store.intact(files) or not _derived_intact(store, derived):
            return None
        names: tuple[str, ...]
        sizes: tuple[int, ...]
        if len(files) == 1:
            names, sizes = (files[0][0],), (files[0][1],)
        else:
            names, sizes = tuple(f[0] for f in files), tuple(f[1] for f in files)
        made.append(
            ItemOutcome(
                index,
                item_id,
                prompt,
                skipped,
                attempts,
                names,
                sizes=sizes,
                version=version,
                pixels=pixels,
                flags=tuple(FLAGS[name] for name in flags if name in FLAGS),
                derived=derived,
            )
        )
    return made


def _derived(saved: Any) -> Derived | None:
    if saved is None:
        return None
    files, upscaled = saved
    return Derived(
        files=tuple((name, tuple(p for p, _ in made)) for name, made in files),
        sizes=tuple(tuple(size for _, size in made) for _, made in files),
        upscaled=tuple(upscaled),
    )


def _derived_intact(store: JobStore, derived: Derived | None) -> bool:
    """Every thumbnail and variant still there at its size: a deleted one is made again."""
    if derived is None:
        return True
    return all(
        not files or store.intact(list(zip(files, sizes, strict=True)))
        for (_, files), sizes in zip(derived.files, derived.sizes, strict=True)
    )


def _saved(derived: Derived | None) -> Any:
    if derived is None:
        return None
    files = [
        [name, [[path, size] for path, size in zip(paths, sizes, strict=True)]]
        for (name, paths), sizes in zip(derived.files, derived.sizes, strict=True)
    ]
    return [files, list(derived.upscaled)]


def write(
    store: JobStore,
    wanted: str,
    sources: Sequence[tuple[str, manifest.Signature]],
    outcomes: Sequence[ItemOutcome],
    asked: tuple[Sequence[Mapping[str, Any]], Sequence[int]],
    warnings: Sequence[object],
    parents: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """Stamp a finished job (call with the journal closed, after its last line); ``sources`` with
    the signatures they had before they were read; ``asked``: the distinct request parameters and
    which each item was asked with; ``parents``: what each dependent is made from. False, and no
    stamp, if one changed since: what this run made may not be what the file asks for now."""
    for path, was in sources:
        if signature(path) != tuple(was):
            log.info("%s changed while the job ran: the next run reads the manifest again", path)
            return False
    params, param_of = asked
    stamp = Stamp(
        key=wanted,
        sources=tuple(sources),
        journal=journal_signature(store.root),
        ids=tuple(o.id for o in outcomes),
        prompts=tuple(o.prompt for o in outcomes),
        attempts=tuple(o.attempts for o in outcomes),
        versions=tuple(o.version for o in outcomes),
        files=tuple(tuple(zip(o.files, o.sizes, strict=True)) for o in outcomes),
        params=tuple(dict(p) for p in params),
        param_of=tuple(param_of),
        warnings=tuple(str(w) for w in warnings),
        pixels=tuple(o.pixels for o in outcomes),
        flags=tuple(tuple(flag.value for flag in o.flags) for o in outcomes),
        derived=tuple(_saved(o.derived) for o in outcomes),
        parents={k: tuple(v) for k, v in (parents or {}).items()},
    )
    # Compact and not fsync'd: lost to a power cut, the next run takes the long way, that is all.
    store.write_bytes(paths.STAMP, orjson.dumps(stamp.to_json()), durable=False)
    return True


def forget(store: JobStore) -> None:
    """The job is about to change: no stamp may outlive that, even if this run dies."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(store.root / paths.STAMP)


def stampable(outcomes: Sequence[ItemOutcome]) -> bool:
    """Every item made (now or before), every variant made, and nothing to fetch or retry."""
    return bool(outcomes) and all(
        o.status in (ItemStatus.SUCCEEDED, ItemStatus.SKIPPED)
        and len(o.sizes) == len(o.files)
        and o.files
        and not (o.derived and o.derived.errors)
        for o in outcomes
    )


def param_rows(stamp: Stamp) -> Iterator[Mapping[str, Any]]:
    """Each item's parameters, shared between items asked the same way."""
    for k in stamp.param_of:
        yield stamp.params[k]
