"""What the simulator counts: tests and ``GET /_sim/stats`` read it to see what a run sent."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimulatorStats:
    requests: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    by_prompt: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    throttled: int = 0  # answered 429 by the relay's rate limit
    downloads: int = 0
    failed_downloads: int = 0
    billed: Counter[str] = field(default_factory=Counter)  # per prompt: generations the service did
    references: Counter[str] = field(default_factory=Counter)  # per prompt: references it read
    ignored_fields: Counter[str] = field(default_factory=Counter)  # extra_fields keys it does not know
    arrivals: list[float] = field(default_factory=list)  # monotonic seconds, for rate-limit checks
    bodies: list[dict[str, Any]] = field(default_factory=list)  # with SimulatorConfig.record_bodies

    def count(self, key: str, prompt: object, arrived: float) -> int:
        """Count a request the relay read; its attempt number under its Idempotency-Key."""
        self.requests += 1
        self.arrivals.append(arrived)
        attempt = self.by_key[key] = self.by_key[key] + 1
        if isinstance(prompt, str):
            self.by_prompt[prompt] += 1
        return attempt

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_key": dict(self.by_key),
            "by_prompt": dict(self.by_prompt),
            "faults": dict(self.faults),
            "throttled": self.throttled,
            "downloads": self.downloads,
            "failed_downloads": self.failed_downloads,
            "billed": dict(self.billed),
            "references": dict(self.references),
            "ignored_fields": dict(self.ignored_fields),
        }
