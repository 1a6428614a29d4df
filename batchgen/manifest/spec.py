"""What a valid manifest is: its items (``ItemSpec``), the job around them (``Manifest``), and
the signatures of the files they were made from."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.config import ApiSettings, Limits
from batchgen.errors import Problem
from batchgen.manifest.references import ItemReference, Reference
from batchgen.output.variants import Variant


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One validated item: defaults applied, shorthands folded into extra_fields."""

    index: int
    id: str
    prompt: str
    model: str
    size: str
    n: int
    response_format: str
    extra_fields: Mapping[str, Any]
    references: tuple[Reference, ...]
    variants: tuple[str, ...] | None = None  # the job's variants it gets; None: all of them

    @property
    def parents(self) -> tuple[str, ...]:
        """The ids of the items whose images it references (``@ID``), each once."""
        if not self.references:
            return ()
        return tuple(dict.fromkeys(r.item_id for r in self.references if isinstance(r, ItemReference)))

    @property
    def image_size(self) -> str | None:
        value = self.extra_fields.get("image_size")
        return value if isinstance(value, str) else None

    @property
    def aspect_ratio(self) -> str | None:
        value = self.extra_fields.get("aspect_ratio")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class ChainShape:
    """A job's chains (docs/chains.md), as ``validate`` says them."""

    roots: int  # items others reference that reference none themselves
    dependents: int  # items that reference another item
    depth: int  # items in the longest chain; 0 without chains


@dataclass(frozen=True)
class Manifest:
    path: Path
    job: str
    items: tuple[ItemSpec, ...]
    limits: Limits
    api: ApiSettings
    warnings: tuple[Problem, ...]
    prices: Path | None = None  # the manifest's own price table, if it names one
    # Every file the items are made from (the manifest, its CSVs, its local references, its price
    # table), each with its signature taken before it was read: what a re-run compares to know
    # that nothing changed since (see ``unchanged``).
    sources: tuple[tuple[str, Signature], ...] = ()
    variants: Mapping[str, Variant] = field(default_factory=dict)  # name: how to make it
    variant_names: tuple[str, ...] = ()  # every name the section gives, a mistaken variant's too
    # Each item in a chain, by id: the smallest root id of the items it is connected to. What
    # --shard splits by, so that a chain is never cut in two.
    chain_roots: Mapping[str, str] = field(default_factory=dict)
    chains: ChainShape = field(default_factory=lambda: ChainShape(0, 0, 0))


Signature = tuple[int, int, int, int]  # size, modification and change times (ns), inode


def signature(st: os.stat_result) -> Signature:
    """What tells a file from its edited self without reading it: an edit changes the change time
    (which no user can set back), a replacement the inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class Sources:
    """The files a manifest is made from, as ``Manifest.sources`` lists them."""

    def __init__(self) -> None:
        self._signed: dict[str, Signature] = {}  # absolute path: signature, before it was read

    def sign(self, path: Path, st: os.stat_result | None = None) -> None:
        """Note ``path`` (``st``: its stat, if taken already); call it before reading the file."""
        with contextlib.suppress(OSError):
            self._signed.setdefault(os.path.abspath(path), signature(st or os.stat(path)))

    def signed(self) -> tuple[tuple[str, Signature], ...]:
        return tuple(self._signed.items())


def output_stems(item_id: str, n: int) -> tuple[str, ...]:
    """File names (without extension) of an item's images."""
    return (item_id,) if n == 1 else tuple(f"{item_id}-{k}" for k in range(1, n + 1))
