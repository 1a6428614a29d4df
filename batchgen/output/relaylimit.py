"""``relay-limit.json``: the relay's rate limit as a run learned it, so the next run starts at it.

One writer (``keep``: through ``remember`` when a 429 stated a limit, or as a bucket holds it)
and one reader (``read``, through ``recall``). It lives in the job's own folder, not a shard's:
the limit is the key's, and every shard reads it. A bucket run carries it up and down with the
job (docs/storage.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from batchgen.errors import RelayLimit
from batchgen.output import paths
from batchgen.output.store import JobStore

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class Remembered:
    limit: RelayLimit
    learned_at: str  # ISO 8601, UTC

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "requests": self.limit.requests,
            "window_s": self.limit.window_s,
            "learned_at": self.learned_at,
        }


def remember(folder: Path, limit: RelayLimit, when: float) -> Remembered:
    """Keep ``limit`` in ``folder``, the job's folder (not a shard's)."""
    learned_at = datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return keep(folder, Remembered(limit, learned_at))


def keep(folder: Path, record: Remembered) -> Remembered:
    """``record`` written in ``folder`` (as learned here, or as another machine learned it)."""
    folder.mkdir(parents=True, exist_ok=True)
    JobStore(folder).write_json(paths.RELAY_LIMIT, record.to_json())
    return record


def recall(folder: Path) -> Remembered | None:
    """What ``remember`` kept in ``folder``; None if nothing (a damaged file is said, and ignored)."""
    path = folder / paths.RELAY_LIMIT
    try:
        return read(path.read_bytes(), str(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s: ignored, not a rate limit batchgen wrote (%s)", path, exc)
        return None


def read(data: bytes, where: str) -> Remembered | None:
    """The record in ``data`` (the file's bytes, from ``where``); None if it is not one, said."""
    try:
        found = orjson.loads(data)
        limit = RelayLimit(int(found["requests"]), float(found["window_s"]))
        return Remembered(limit, str(found.get("learned_at") or ""))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: ignored, not a rate limit batchgen wrote (%s)", where, exc)
        return None


def later(one: Remembered | None, other: Remembered | None) -> bool:
    """Whether ``one`` was learned after ``other`` (each, if there is none, is never the later)."""
    return one is not None and (other is None or one.learned_at > other.learned_at)
