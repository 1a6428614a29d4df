"""How fast a run may send: the configured rate, shards' parts of it, and the relay's own limit
remembered from an earlier run (docs/real-service.md, "The relay's rate limit")."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from batchgen import config
from batchgen.errors import RelayLimit
from batchgen.output import relaylimit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rates:
    """The configured rate (a shard's part of it), and the relay's own limit remembered from an
    earlier run, which the run starts at only when no rate is configured: a configured one wins."""

    per_minute: float | None
    relay: relaylimit.Remembered | None  # remembered, whether or not it applies
    shards: int
    configured: str | None  # where per_minute comes from: "--rpm", "requests_per_minute", or None

    @property
    def mirrored(self) -> RelayLimit | None:
        """The remembered limit the run starts at (the whole key's: each shard takes its part)."""
        return self.relay.limit if self.relay is not None and self.per_minute is None else None

    def fields(self) -> dict[str, object]:
        """The same, for ``validate --log-format json``."""
        found: dict[str, object] = {"requests_per_minute": self.per_minute}
        if self.relay is not None:
            limit = self.relay.limit
            found["relay_limit"] = {
                "requests": limit.requests,
                "window_s": limit.window_s,
                "learned_at": self.relay.learned_at,
            }
        return found

    def lines(self) -> list[str]:
        """What ``validate`` says about the rate."""
        found: list[str] = []
        if self.relay is not None:
            found.append(f"the relay allows {self.relay.limit.describe()} (learned {self.relay.learned_at})")
        if self.per_minute is not None:
            part = " (this shard's part)" if self.shards > 1 and self.configured != "--rpm" else ""
            found.append(f"rate: {self.per_minute:g} requests a minute, from {self.configured}{part}")
        elif self.relay is not None:
            found.append(
                f"rate: starts at the relay's limit, {self.relay.limit.share(self.shards).describe()}"
            )
        return found


def of(
    job_name: str,
    limits: config.Limits,
    shard: tuple[int, int] | None,
    overrides: config.Overrides,
    output_dir: Path,
) -> Rates:
    """``requests_per_minute`` is the job's total: each of N shards takes 1/N of it, unless the
    command line gave ``--rpm``. The relay's limit is remembered in the job's own folder."""
    shards = shard[1] if shard is not None else 1
    from_cli = overrides.limits.get("requests_per_minute") is not None
    per_minute = limits.requests_per_minute
    if per_minute is not None and not from_cli:
        per_minute /= shards
    configured = None if per_minute is None else "--rpm" if from_cli else "requests_per_minute"
    found = Rates(per_minute, relaylimit.recall(output_dir / job_name), shards, configured)
    if found.mirrored is not None:
        log.info(
            "%s: the relay allows %s (an earlier run learned it): starting at that",
            job_name,
            found.mirrored.describe(),
        )
    return found


def learned(limit: RelayLimit | None, job_folder: Path) -> None:
    """Keep what a 429 stated for the job's next run."""
    if limit is not None:
        relaylimit.remember(job_folder, limit, time.time())
