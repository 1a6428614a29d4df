"""Sharding: the K-th of N disjoint slices of a job, by a stable hash of each item id, or of its
chain's root for an item in a chain (docs/chains.md), so that a chain is never cut in two."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from batchgen.manifest.spec import ItemSpec

FOLDER = re.compile(r"^shard-([1-9][0-9]*)-of-([1-9][0-9]*)$")


def parse(text: str) -> tuple[int, int]:
    """``"K/N"`` with 1 <= K <= N, or ValueError saying what is wanted."""
    match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)
    if not match:
        raise ValueError(f"must be K/N, like 2/8, not {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= k <= n:
        hint = " (shards count from 1: a Kubernetes JOB_COMPLETION_INDEX i is shard i+1)" if k == 0 else ""
        raise ValueError(f"must have 1 <= K <= N, not {text!r}{hint}")
    return k, n


def shard_of(item_id: str, count: int) -> int:
    """Which of ``count`` shards (1-based) an item belongs to; the same on every machine."""
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def select(
    items: Sequence[ItemSpec], sharded: tuple[int, int] | None, roots: Mapping[str, str]
) -> Sequence[ItemSpec]:
    """The items of shard ``(K, N)``, all of them when not sharded; ``roots``: the chain root of
    each item in a chain (``Manifest.chain_roots``), whose shard it takes."""
    if sharded is None:
        return items
    k, n = sharded
    return tuple(item for item in items if shard_of(roots.get(item.id, item.id), n) == k)


def folder(k: int, n: int) -> str:
    return f"shard-{k}-of-{n}"
