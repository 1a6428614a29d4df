"""``relay-limit.json``: the relay's rate limit as a run learned it, so the next run starts at it.

One writer (``remember``, when a 429 stated a limit) and one reader (``recall``). It lives in
the job's own folder, not a shard's: the limit is the key's, and every shard reads it.
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
    record = Remembered(limit, learned_at)
    folder.mkdir(parents=True, exist_ok=True)
    JobStore(folder).write_json(paths.RELAY_LIMIT, record.to_json())
    return record


def recall(folder: Path) -> Remembered | None:
    """What ``remember`` kept in ``folder``; None if nothing (a damaged file is said, and ignored)."""
    path = folder / paths.RELAY_LIMIT
    try:
        data = orjson.loads(path.read_bytes())
        limit = RelayLimit(int(data["requests"]), float(data["window_s"]))
        return Remembered(limit, str(data.get("learned_at") or ""))
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: ignored, not a rate limit batchgen wrote (%s)", path, exc)
        return None
