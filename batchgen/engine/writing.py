"""The blocking part of one item's path (``engine.item``): its references read, its images and
sidecar written. Plain functions that ``item`` runs in the I/O threads, never on the loop:
reading, hashing, writing and fsync block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from batchgen.images import GeneratedImage
from batchgen.manifest.references import (
    ItemReference,
    LoadedReference,
    LocalReference,
    ParentImage,
    Reference,
    ReferenceLoader,
)
from batchgen.output import history, variants
from batchgen.output.journal import Entry
from batchgen.output.sidecar import Sidecar
from batchgen.output.store import JobStore, StoredFile
from batchgen.plan.plan import PlannedRequest, build_body


@dataclass(frozen=True, slots=True)
class Made:
    """What an item's answer came to, for its sidecar."""

    created: int | None
    attempts: int
    latency_s: float


def save(
    store: JobStore,
    request: PlannedRequest,
    images: Sequence[GeneratedImage],
    loaded: Sequence[LoadedReference],
    made: Made,
    replacing: Entry | None = None,
) -> list[StoredFile]:
    """``request``'s images and sidecar written into ``store``; ``replacing``: the entry of the
    image these replace, moved into history/ first."""
    if replacing is not None:
        history.keep(store, [*(f.path for f in replacing.files), request.sidecar], replacing.version)
        # Never a thumbnail or variant of the old picture beside the new one.
        variants.forget(store.root, request.id, (f.path for f in replacing.files))
    stored = store.write_images(request.image_stems, images)
    if replacing is not None:  # fewer images than before, or in another format: no old one stays
        store.drop(sorted({f.path for f in replacing.files} - {f.path for f in stored}))
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
    store.write_json(request.sidecar, sidecar.to_json(), durable=False)
    return stored


def load_references(loader: ReferenceLoader, request: PlannedRequest) -> list[LoadedReference]:
    """``request``'s reference images, read (and shrunk if too large) for sending."""
    return [loader.load(ref) for ref in request.references]


def _describe(ref: Reference, loaded: LoadedReference) -> str:
    """How a reference appears in a sidecar: never a multi-megabyte data URI."""
    if isinstance(ref, LocalReference):
        return f"file:{ref.written} {loaded.digest}"
    if isinstance(ref, (ParentImage, ItemReference)):
        return f"item:{ref.written} {loaded.digest}"
    if ref.url.startswith("data:"):
        return f"{ref.url[:40]}… {loaded.digest}"
    return ref.url
