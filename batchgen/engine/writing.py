"""What an item leaves in the job folder: its images, its sidecar, its journal line.

All of it blocks (hashing, writing, fsync), so it runs in the I/O threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from batchgen.images import GeneratedImage
from batchgen.manifest.references import (
    ItemReference,
    LoadedReference,
    LocalReference,
    ParentImage,
    Reference,
)
from batchgen.output import history, variants
from batchgen.output.journal import Entry, Journal
from batchgen.output.sidecar import Sidecar
from batchgen.output.store import JobStore, StoredFile
from batchgen.plan.plan import PlannedRequest, build_body

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Made:
    """What an item's answer came to, for its sidecar."""

    created: int | None
    attempts: int
    latency_s: float


@dataclass
class Writer:
    store: JobStore
    journal: Journal | None = None
    io: Executor | None = None  # threads for blocking file work (None: the loop's default)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Reading references, writing files, appending to the journal: in the I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self.io, partial(fn, *args))

    async def journal_entry(self, entry: Entry) -> None:
        if self.journal is not None:
            await self.blocking(self.journal.append, entry.to_json(time.time()))

    def save(
        self,
        request: PlannedRequest,
        images: Sequence[GeneratedImage],
        loaded: Sequence[LoadedReference],
        made: Made,
        replacing: Entry | None = None,
    ) -> list[StoredFile]:
        """``replacing``: the entry of the image these replace, moved into history/ first."""
        if replacing is not None:
            history.keep(self.store, [*(f.path for f in replacing.files), request.sidecar], replacing.version)
            # Never a thumbnail or variant of the old picture beside the new one.
            variants.forget(self.store.root, request.id, (f.path for f in replacing.files))
        stored = self.store.write_images(request.image_stems, images)
        shown = [_describe(ref, got) for ref, got in zip(request.references, loaded, strict=True)]
        # The sidecar is metadata the journal also holds (files, sizes, sha256): it is renamed
        # into place whole, and made durable with the rest of the job's files at the end.
        sidecar = Sidecar(
            request.id,
            build_body(request, shown),
            request.model,
            made.created,
            made.attempts,
            round(made.latency_s, 3),
            tuple(stored),
            request.estimated_cost,
        )
        self.store.write_json(request.sidecar, sidecar.to_json(), durable=False)
        return stored


def _describe(ref: Reference, loaded: LoadedReference) -> str:
    """How a reference appears in a sidecar: never a multi-megabyte data URI."""
    if isinstance(ref, LocalReference):
        return f"file:{ref.written} {loaded.digest}"
    if isinstance(ref, (ParentImage, ItemReference)):
        return f"item:{ref.written} {loaded.digest}"
    if ref.url.startswith("data:"):
        return f"{ref.url[:40]}… {loaded.digest}"
    return ref.url
