"""Deriving one item's variants from its originals on disk: what runs in a derivation worker.

``derive_item`` is called in a worker process of the run's pool (``job.deriving``) with a
``Task``: it reads the item's record, makes again each variant whose spec changed, whose file
is missing or damaged, or whose original is new, writes each file atomically, then the record,
and returns what there is (``Result``). A variant that cannot be made (a damaged original, a
full disk) fails alone: it is named in the result and not recorded, so the next run tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batchgen.errors import StoreError
from batchgen.output.render import UNREADABLE, Source
from batchgen.output.store import JobStore
from batchgen.output.variants import Record, Variant, VariantFile, record_path

RECORD_ERROR = "(record)"  # in ``Result.errors``: the record could not be written


@dataclass(frozen=True, slots=True)
class Task:
    folder: str
    item_id: str
    images: tuple[str, ...]  # the item's originals, relative to the folder
    variants: tuple[Variant, ...]  # the thumbnail included
    meta: Mapping[str, str]  # what the XMP says: id, prompt, model, size, job


@dataclass(frozen=True, slots=True)
class Result:
    item_id: str
    files: dict[str, list[str]] = field(default_factory=dict)  # variant name: its files, one per image
    sizes: dict[str, list[int]] = field(default_factory=dict)  # ... and their sizes in bytes
    upscaled: tuple[str, ...] = ()  # variants that enlarged an original more than UPSCALE_FLAG
    errors: dict[str, str] = field(default_factory=dict)  # variant name: why it was not made
    made: int = 0  # files written by this task (the rest were already there and right)


def derive_item(task: Task) -> Result:
    """Every variant of every image of ``task``'s item, made where it is not already right."""
    store = JobStore(Path(task.folder))
    old = _read_record(store.root, task.item_id)
    record = Record()
    files: dict[str, list[str]] = {v.name: [] for v in task.variants}
    sizes: dict[str, list[int]] = {v.name: [] for v in task.variants}
    errors: dict[str, str] = {}
    upscaled: set[str] = set()
    made = 0
    for image in task.images:
        kept = record.made.setdefault(image, {})
        try:
            data = (store.root / image).read_bytes()
        except FileNotFoundError:
            # Not on this machine (a bucket run's spool holds only what this run wrote): what was
            # derived from it stays as recorded, and nothing is made or failed for it here.
            kept.update(old.made.get(image, {}))
            if not kept:  # known to no record here: nothing to say of it, nothing to write over
                del record.made[image]
            _list(kept, files, sizes, upscaled)
            continue
        except OSError as exc:
            errors.update((v.name, f"{image}: cannot be read ({exc.strerror})") for v in task.variants)
            continue
        source_sha = hashlib.sha256(data).hexdigest()
        todo: list[tuple[Variant, str]] = []
        for variant in task.variants:
            spec = variant.fingerprint(task.meta)
            was = old.made.get(image, {}).get(variant.name)
            if was is not None and was.spec == spec and was.source == source_sha and _intact(store, was):
                kept[variant.name] = was
            else:
                todo.append((variant, spec))
        if todo:
            made += _render(store, image, data, source_sha, todo, task.meta, kept, errors)
        _list(kept, files, sizes, upscaled)
    if made or record.made != old.made:
        try:
            store.path(record_path(task.item_id)).parent.mkdir(exist_ok=True)
            store.write_bytes(record_path(task.item_id), orjson.dumps(record.to_json()), durable=False)
        except (OSError, StoreError) as exc:
            errors[RECORD_ERROR] = f"{record_path(task.item_id)} cannot be written ({exc})"
    shown = {n: f for n, f in files.items() if n not in errors}
    return Result(task.item_id, shown, {n: sizes[n] for n in shown}, tuple(sorted(upscaled)), errors, made)


def outdated(task: Task) -> list[VariantFile] | None:
    """None when every variant of ``task`` is what its item's record says was made; else (a spec
    changed, or one was never made) the files of those that are, which ``derive_item`` keeps as
    they are if they are there. Asked, from the record alone, by a job folder that holds neither
    originals nor variants (a bucket run's spool) before it fetches what deriving again needs."""
    old = _read_record(Path(task.folder), task.item_id)
    kept: list[VariantFile] = []
    again = False
    for image in task.images:
        made = old.made.get(image, {})
        for variant in task.variants:
            was = made.get(variant.name)
            if was is None or was.spec != variant.fingerprint(task.meta):
                again = True
            else:
                kept.append(was)
    return kept if again else None


def _list(
    kept: Mapping[str, VariantFile],
    files: dict[str, list[str]],
    sizes: dict[str, list[int]],
    upscaled: set[str],
) -> None:
    for name, one in kept.items():
        if name in files:  # a variant the manifest no longer has is not listed
            files[name].append(one.path)
            sizes[name].append(one.bytes)
            if one.upscaled:
                upscaled.add(name)


def _render(
    store: JobStore,
    image: str,
    data: bytes,
    source_sha: str,
    todo: list[tuple[Variant, str]],
    meta: Mapping[str, str],
    kept: dict[str, VariantFile],
    errors: dict[str, str],
) -> int:
    """Make ``todo``'s variants of ``image``; how many were written."""
    try:
        source = Source(data, [v for v, _ in todo])
    except UNREADABLE as exc:
        errors.update((v.name, f"{image}: not a readable image ({type(exc).__name__})") for v, _ in todo)
        return 0
    written = 0
    for variant, spec in todo:
        path = variant.path(image)
        try:
            rendered = source.render(variant, {**meta, "source_sha256": source_sha})
            store.path(path).parent.mkdir(parents=True, exist_ok=True)
            store.write_bytes(path, rendered.data, durable=False)
        except (*UNREADABLE, StoreError) as exc:
            errors[variant.name] = f"{path}: {exc}"
            continue
        digest = hashlib.sha256(rendered.data).hexdigest()
        kept[variant.name] = VariantFile(
            spec, source_sha, path, len(rendered.data), digest, round(rendered.scale, 4)
        )
        written += 1
    return written


def _read_record(root: Path, item_id: str) -> Record:
    try:
        return Record.from_json(orjson.loads((root / record_path(item_id)).read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return Record()


def _intact(store: JobStore, made: VariantFile) -> bool:
    """The file is there, whole: its size and sha256 as recorded (a damaged one is made again)."""
    try:
        data = (store.root / made.path).read_bytes()
    except OSError:
        return False
    return len(data) == made.bytes and hashlib.sha256(data).hexdigest() == made.sha256


def worker_started(level: int, command: int) -> None:
    """The worker processes' initializer: ``level`` below the command's priority (while the run
    sends, so that the event loop and the writing of images come first); and ended with the
    command (process ``command``), so that not even a ``kill -9`` of it leaves a worker behind.
    Not Linux's idle class: on a busy machine it starves the workers for minutes, and the
    command waits for them at its end."""
    if level:
        with contextlib.suppress(AttributeError, OSError):
            os.nice(level)
    # A Ctrl-C reaches the whole process group: the command decides what stops, and when.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_with, args=(command,), name="batchgen-end-with", daemon=True).start()


def _end_with(command: int) -> None:
    try:
        handle = os.pidfd_open(command)  # readable once the process has ended (Linux)
    except (AttributeError, OSError):
        handle = None
    if handle is not None:
        select.select([handle], [], [])
    else:
        while True:
            time.sleep(1.0)
            try:
                os.kill(command, 0)
            except ProcessLookupError:
                break
            except OSError:
                continue
    os._exit(0)
