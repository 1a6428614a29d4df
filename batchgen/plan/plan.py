"""The plan: validated items in, frozen request records out. Pure: no I/O, no clock.

Reference images are read only when an item is sent, so a record carries the
body without them; ``build_body`` and ``fingerprint`` put them in (as data
URIs and as content digests respectively) once they are loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchgen.manifest.references import Reference
from batchgen.manifest.sizes import Shape, requested
from batchgen.manifest.spec import ItemSpec, output_stems
from batchgen.output import paths
from batchgen.plan import pricing


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """Everything about one item's request that is known before sending it."""

    index: int
    id: str
    body: Mapping[str, Any]  # the request without reference images
    references: tuple[Reference, ...]
    reference_field: str
    image_stems: tuple[str, ...]  # relative to the job folder, without extension
    sidecar: str  # relative to the job folder
    size_class: str
    estimated_cost: float
    shape: Shape  # what the images should be: checked when they arrive

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def prompt(self) -> str:
        return str(self.body["prompt"])

    @property
    def n(self) -> int:
        return int(self.body["n"])


def plan_item(spec: ItemSpec, reference_field: str, prices: pricing.PriceTable) -> PlannedRequest:
    body: dict[str, Any] = {
        "model": spec.model,
        "prompt": spec.prompt,
        "size": spec.size,
        "n": spec.n,
        "response_format": spec.response_format,
    }
    if spec.extra_fields:
        body["extra_fields"] = dict(spec.extra_fields)
    shape = requested(spec.size, spec.image_size, spec.aspect_ratio)
    size_class = shape.size_class
    return PlannedRequest(
        index=spec.index,
        id=spec.id,
        body=body,
        references=spec.references,
        reference_field=reference_field,
        image_stems=tuple(paths.image(stem) for stem in output_stems(spec.id, spec.n)),
        sidecar=paths.sidecar(spec.id),
        size_class=size_class,
        estimated_cost=prices.cost(spec.model, size_class, spec.n),
        shape=shape,
    )


def build_body(request: PlannedRequest, reference_values: Sequence[str]) -> dict[str, Any]:
    """The JSON body to send, with one value per reference (a URL or a data URI)."""
    body = dict(request.body)
    if reference_values:
        extra = dict(body.get("extra_fields", {}))
        extra[request.reference_field] = list(reference_values)
        body["extra_fields"] = extra
    return body


def fingerprint(request: PlannedRequest, reference_digests: Sequence[str]) -> str:
    """Identifies what was asked: the body, with reference images by content, not by path."""
    canonical = orjson.dumps(build_body(request, reference_digests), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()
