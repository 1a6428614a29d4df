"""The job's journal: one fsync'd JSON line per finished item, appended, never rewritten.

It is what a re-run reads to know what is done. A crash can cut the last line
short; reading tolerates that (and any line it cannot parse), so a journal
is never a reason for a job not to run.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchgen.errors import ErrorClass
from batchgen.output import paths

log = logging.getLogger(__name__)

JOURNAL = paths.JOURNAL
STOPS_JOB = frozenset(c.value for c in ErrorClass if c.stops_job)


@dataclass(frozen=True, slots=True)
class JournalFile:
    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class Entry:
    """The last thing the journal says about one item."""

    id: str
    status: str  # "succeeded" or "failed"
    fingerprint: str
    prompt: str
    attempts: int
    files: tuple[JournalFile, ...] = ()
    error_class: str | None = None
    message: str | None = None
    http_status: int | None = None
    retryable: bool | None = None
    estimated_cost: float = 0.0
    links: tuple[str, ...] = ()  # download_failed: the links of images made and billed, to fetch again
    version: int = 1  # how many times its image was made; earlier versions are in history/

    @property
    def refetchable(self) -> bool:
        """Made and billed, but its links failed: a later run fetches them, it does not make it again."""
        return self.status == "failed" and bool(self.links) and self.error_class == ErrorClass.DOWNLOAD_FAILED

    @property
    def resent_by_retry(self) -> bool:
        """``batchgen retry`` sends it again: worth retrying, or failed only because the key or the
        credit did (fixed, presumably, by whoever runs retry)."""
        if self.status != "failed":
            return False
        return bool(self.retryable) or self.error_class in STOPS_JOB


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
        self.append(run_record(manifest, self.path.parent, started_at, shard))


def run_record(
    manifest: Path, folder: Path, started_at: float, shard: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A run's first line: its manifest, absolute and relative to the job folder, so that a job
    folder moved or copied along with its manifest (a project moved, a backup restored) still
    finds its own copy."""
    where = manifest.resolve()
    record: dict[str, Any] = {
        "type": "run",
        "manifest": str(where),
        "manifest_relative": os.path.relpath(where, folder.resolve()),
        "started_at": started_at,
        **extra,
    }
    if shard:
        record["shard"] = shard
    return record


def entry_record(entry: Entry, finished_at: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "item",
        "id": entry.id,
        "status": entry.status,
        "fingerprint": entry.fingerprint,
        "prompt": entry.prompt,
        "attempts": entry.attempts,
        "files": [{"path": f.path, "sha256": f.sha256, "bytes": f.bytes} for f in entry.files],
        "estimated_cost": entry.estimated_cost,
        "finished_at": finished_at,
    }
    if entry.version > 1:
        record["version"] = entry.version
    if entry.status == "failed":
        record.update(
            {
                "class": entry.error_class,
                "message": entry.message,
                "http_status": entry.http_status,
                "retryable": entry.retryable,
            }
        )
        if entry.links:
            record["links"] = list(entry.links)
    return record


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
    path = folder / JOURNAL
    try:
        with open(path, "rb") as f:
            for line in _lines(f):
                record = _parse(line)
                if record is None:
                    state.damaged_lines += 1
                elif record.get("type") == "run":
                    state.manifest = str(record.get("manifest") or "") or state.manifest
                    relative = record.get("manifest_relative")
                    state.manifest_relative = relative if isinstance(relative, str) else None
                    state.shard = record.get("shard")
                elif record.get("type") == "item":
                    entry = _entry(record)
                    if entry is None:
                        state.damaged_lines += 1
                    else:
                        state.entries[entry.id] = entry
    except FileNotFoundError:
        pass
    if state.damaged_lines:
        log.warning("%s: skipped %d damaged line(s) (a crash mid-write?)", path, state.damaged_lines)
    return state


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


def _entry(record: dict[str, Any]) -> Entry | None:
    try:
        files = tuple(JournalFile(str(f["path"]), str(f["sha256"]), int(f["bytes"])) for f in record["files"])
        return Entry(
            id=str(record["id"]),
            status=str(record["status"]),
            fingerprint=str(record["fingerprint"]),
            prompt=str(record.get("prompt", "")),
            attempts=int(record.get("attempts", 0)),
            files=files,
            error_class=record.get("class"),
            message=record.get("message"),
            http_status=record.get("http_status"),
            retryable=record.get("retryable"),
            estimated_cost=float(record.get("estimated_cost", 0.0)),
            links=tuple(str(link) for link in record.get("links", ())),
            version=int(record.get("version", 1)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)
