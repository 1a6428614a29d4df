"""The job's journal: one fsync'd JSON line per finished item, appended, never rewritten.

It is what a re-run reads to know what is done. A crash can cut the last line
short; reading tolerates that (and any line it cannot parse), so a journal
is never a reason for a job not to run.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from batchgen.errors import ErrorClass
from batchgen.outcomes import FLAGS, Failure, Flag, ItemOutcome, ItemStatus
from batchgen.output import paths

log = logging.getLogger(__name__)

JOURNAL = paths.JOURNAL
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JournalFile:
    path: str
    sha256: str
    bytes: int
    width: int | None = None  # pixels; none in lines written before sizes were recorded
    height: int | None = None

    @property
    def pixels(self) -> tuple[int, int] | None:
        return None if self.width is None or self.height is None else (self.width, self.height)

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}
        if self.pixels is not None:
            line["width"], line["height"] = self.pixels
        return line

    @classmethod
    def from_json(cls, line: Mapping[str, Any]) -> JournalFile:
        width, height = line.get("width"), line.get("height")
        return cls(
            str(line["path"]),
            str(line["sha256"]),
            int(line["bytes"]),
            None if width is None else int(width),
            None if height is None else int(height),
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """An item's line in the journal: the last thing it says about that item.

    ``to_json`` is the one writer of the line and ``from_json`` its one reader; the line adds
    ``"type": "item"`` and when it was written (``finished_at``, which nothing reads back).
    """

    id: str
    status: ItemStatus  # SUCCEEDED or FAILED: the journal records only what finished
    fingerprint: str
    prompt: str
    attempts: int
    files: tuple[JournalFile, ...] = ()
    error_class: ErrorClass | None = None
    message: str | None = None
    http_status: int | None = None
    retryable: bool | None = None
    estimated_cost: float = 0.0
    links: tuple[str, ...] = ()  # download_failed: the links of images made and billed, to fetch again
    version: int = 1  # how many times its image was made; earlier versions are in history/
    flags: tuple[Flag, ...] = ()  # what the checks of what arrived found (a run skipping it reports them)
    blocked_by: tuple[str, ...] = ()  # dependency_failed: the referenced items that did not succeed

    @property
    def succeeded(self) -> bool:
        return self.status is ItemStatus.SUCCEEDED

    @property
    def refetchable(self) -> bool:
        """Made and billed, but its links failed: a later run fetches them, it does not make it again."""
        return (
            self.status is ItemStatus.FAILED
            and bool(self.links)
            and self.error_class is ErrorClass.DOWNLOAD_FAILED
        )

    @property
    def resent_by_retry(self) -> bool:
        """``batchgen retry`` sends it again: worth retrying, or failed only because the key or the
        credit did (fixed, presumably, by whoever runs retry)."""
        if self.status is not ItemStatus.FAILED:
            return False
        return bool(self.retryable) or (self.error_class is not None and self.error_class.stops_job)

    def to_json(self, finished_at: float) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": "item",
            "id": self.id,
            "status": self.status.value,
            "fingerprint": self.fingerprint,
            "prompt": self.prompt,
            "attempts": self.attempts,
            "files": [f.to_json() for f in self.files],
            "estimated_cost": self.estimated_cost,
            "finished_at": finished_at,
        }
        if self.version > 1:
            record["version"] = self.version
        if self.flags:
            record["flags"] = [flag.value for flag in self.flags]
        if self.status is ItemStatus.FAILED:
            record["class"] = None if self.error_class is None else self.error_class.value
            record["message"] = self.message
            record["http_status"] = self.http_status
            record["retryable"] = self.retryable
            if self.links:
                record["links"] = list(self.links)
            if self.blocked_by:
                record["blocked_by"] = list(self.blocked_by)
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Entry | None:
        """The entry a line holds; None if it is damaged (a missing id, status or fingerprint,
        a value of the wrong kind). A failure class this batchgen does not know reads as None."""
        try:
            files = tuple(JournalFile.from_json(f) for f in record["files"])
            return cls(
                id=str(record["id"]),
                status=_STATUSES[record["status"]],
                fingerprint=str(record["fingerprint"]),
                prompt=str(record.get("prompt", "")),
                attempts=int(record.get("attempts", 0)),
                files=files,
                error_class=_error_class(record.get("class")),
                message=_optional(str, record.get("message")),
                http_status=_optional(int, record.get("http_status")),
                retryable=_optional(bool, record.get("retryable")),
                estimated_cost=float(record.get("estimated_cost", 0.0)),
                links=tuple(str(link) for link in record.get("links", ())),
                version=int(record.get("version", 1)),
                flags=tuple(FLAGS[name] for name in record.get("flags", ()) if name in FLAGS),
                blocked_by=tuple(str(i) for i in record.get("blocked_by", ())),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Sent:
    """What this run's attempts at an item came to, beside what its journal line says."""

    requests: int = 0  # attempts that may have reached the service
    unconfirmed: int = 0  # of those, ones cut off after sending: perhaps billed, no image
    unconfirmed_cost: float = 0.0


_NOTHING_SENT = Sent()


def outcome(entry: Entry, index: int, prompt: str, sent: Sent | None = None) -> ItemOutcome:
    """The outcome ``entry`` stands for, as item ``index`` of a run asking for ``prompt``: the one
    mapping from a journal line to what the report and the run's events say of the item.

    ``sent``: this run wrote ``entry``; a success is SUCCEEDED, with what it cost and the digests
    its dependents name. None: an earlier run wrote it and this one leaves it alone; a success is
    SKIPPED, and nothing of it was sent or spent now.
    """
    now = sent is not None
    sent = sent or _NOTHING_SENT
    cost = entry.estimated_cost if now else 0.0
    if entry.succeeded:
        return ItemOutcome(
            index,
            entry.id,
            prompt,
            ItemStatus.SUCCEEDED if now else ItemStatus.SKIPPED,
            entry.attempts,
            tuple(f.path for f in entry.files),
            sizes=tuple(f.bytes for f in entry.files),
            requests_sent=sent.requests,
            unconfirmed=sent.unconfirmed,
            estimated_cost=cost,
            unconfirmed_cost=sent.unconfirmed_cost,
            version=entry.version,
            pixels=entry.files[0].pixels if entry.files else None,
            flags=entry.flags,
            digests=tuple(f.sha256 for f in entry.files) if now else (),
        )
    failure = Failure(
        entry.error_class or ErrorClass.INVALID_RESPONSE,
        entry.message or "",
        entry.http_status,
        bool(entry.retryable),
        entry.links,
        entry.blocked_by,
    )
    return ItemOutcome(
        index,
        entry.id,
        prompt,
        ItemStatus.FAILED,
        entry.attempts,
        failure=failure,
        requests_sent=sent.requests,
        unconfirmed=sent.unconfirmed,
        estimated_cost=cost,
        unconfirmed_cost=sent.unconfirmed_cost,
    )


@dataclass(frozen=True, slots=True)
class RunHeader:
    """A run's first line: its manifest, absolute and relative to the job folder, so that a job
    folder moved or copied along with its manifest (a project moved, a backup restored) still
    finds its own copy. ``to_json`` writes it, ``from_json`` reads it."""

    manifest: str  # absolute; "" when a line does not say
    manifest_relative: str | None
    started_at: float
    shard: str | None = None  # "K/N" when the run was a shard
    merged: bool = False  # written by `batchgen merge`, not by a run

    @classmethod
    def of(
        cls, manifest: Path, folder: Path, started_at: float, shard: str | None = None, merged: bool = False
    ) -> RunHeader:
        where = manifest.resolve()
        relative = os.path.relpath(where, folder.resolve())
        return cls(str(where), relative, started_at, shard or None, merged)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": "run",
            "manifest": self.manifest,
            "manifest_relative": self.manifest_relative,
            "started_at": self.started_at,
        }
        if self.merged:
            record["merged"] = True
        if self.shard:
            record["shard"] = self.shard
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> RunHeader:
        relative, shard = record.get("manifest_relative"), record.get("shard")
        started = record.get("started_at")
        return cls(
            manifest=str(record.get("manifest") or ""),
            manifest_relative=relative if isinstance(relative, str) else None,
            started_at=float(started) if isinstance(started, int | float) else 0.0,
            shard=shard if isinstance(shard, str) else None,
            merged=record.get("merged") is True,
        )


# Looked up, not called: Enum(value) is slow, and a re-run reads 100,000 lines.
_STATUSES = {status.value: status for status in ItemStatus}
_CLASSES = {error_class.value: error_class for error_class in ErrorClass}


def _error_class(value: object) -> ErrorClass | None:
    return _CLASSES.get(value) if isinstance(value, str) else None


def _optional(kind: Callable[[Any], T], value: object) -> T | None:
    return None if value is None else kind(value)


class Journal:
    """Appends entries to ``<job>/journal.jsonl``; blocking, so called from a worker thread."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL
        self._fd: int | None = None
        self._lock = threading.Lock()  # appends come from worker threads

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size and _last_byte(self.path, size) != b"\n":
            # The previous run died mid-line: end that line so ours starts clean.
            os.write(self._fd, b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def append(self, record: dict[str, Any]) -> None:
        assert self._fd is not None, "Journal.open() first"
        line = orjson.dumps(record) + b"\n"
        with self._lock:
            os.write(self._fd, line)
        # Outside the lock: threads that append together wait on one journal commit,
        # instead of queueing one fsync each.
        os.fsync(self._fd)

    def run_started(self, manifest: Path, started_at: float, shard: str | None = None) -> None:
        self.append(RunHeader.of(manifest, self.path.parent, started_at, shard).to_json())


@dataclass
class JournalState:
    entries: dict[str, Entry]
    manifest: str | None  # the manifest of the latest run, as an absolute path
    damaged_lines: int
    shard: str | None = None  # "K/N" when the latest run was a shard
    manifest_relative: str | None = None  # the same manifest, relative to the job folder


def read(folder: Path) -> JournalState:
    """What the journal in ``folder`` says, last word per item; empty if there is none."""
    state = JournalState({}, None, 0)
    try:
        for line in lines(folder):
            if line is None:
                state.damaged_lines += 1
            elif isinstance(line, RunHeader):
                state.manifest = line.manifest or state.manifest
                state.manifest_relative = line.manifest_relative
                state.shard = line.shard
            else:
                state.entries[line.id] = line
    except FileNotFoundError:
        pass
    if state.damaged_lines:
        log.warning(
            "%s: skipped %d damaged line(s) (a crash mid-write?)", folder / JOURNAL, state.damaged_lines
        )
    return state


def lines(folder: Path) -> Iterator[RunHeader | Entry | None]:
    """Every line of the journal in ``folder``, in order, as its record: None for a damaged one;
    a line of a kind this batchgen does not know is passed over. FileNotFoundError if there is none."""
    with open(folder / JOURNAL, "rb") as f:
        for line in _lines(f):
            record = _parse(line)
            if record is None:
                yield None
            elif record.get("type") == "run":
                yield RunHeader.from_json(record)
            elif record.get("type") == "item":
                yield Entry.from_json(record)


def entry(line: bytes) -> Entry | None:
    """One journal line's item record; None for a run header, a damaged line or another kind."""
    record = _parse(line)
    return Entry.from_json(record) if record is not None and record.get("type") == "item" else None


def _lines(f: Any) -> Iterator[bytes]:
    for line in f:
        if line.strip():
            yield line


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)
