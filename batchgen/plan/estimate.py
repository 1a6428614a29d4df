"""What a manifest will cost and make: counts, sizes and estimated spend, as ``validate`` prints them.

(``--max-cost`` prices what a run will send with ``triage.Triage.to_send``.)"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from batchgen import relay
from batchgen.manifest.sizes import size_class
from batchgen.manifest.spec import ChainShape, Manifest
from batchgen.plan.pricing import PriceTable


@dataclass(frozen=True)
class Estimate:
    """What one manifest will make and cost: what ``validate`` prints, as text or as JSON."""

    manifest: str
    job: str
    items: int
    images: int
    sizes: dict[str, int]  # what the service will make ("2K 16:9", "1024x1792"): images
    groups: list[tuple[str, str, int, int, float]]  # model, size class, requests, images, cost
    total: float
    currency: str
    source: str
    variants: dict[str, tuple[str, int]] = field(default_factory=dict)  # name: (what it is, images)
    chains: ChainShape = field(default_factory=lambda: ChainShape(0, 0, 0))
    chain_cost: float = 0.0  # of the items in chains
    stale: int | None = None  # dependents made from an earlier image of their parent; None: not looked

    def with_stale(self, stale: int | None) -> Estimate:
        return replace(self, stale=stale)

    def lines(self) -> list[str]:
        lines = [
            f"{self.manifest}: ok: job {self.job!r}, {self.items} items, {self.items} requests,"
            f" {self.images} images",
            "  sizes: " + ", ".join(f"{shape} x{count}" for shape, count in self.sizes.items()),
        ]
        for model, klass, requests, count, cost in self.groups:
            money = f"~{self.currency} {cost:,.2f}"
            lines.append(f"  {model:<18} {klass:>3}  {requests:>6} requests {count:>6} images  {money}")
        lines.append(f"  estimated cost ~{self.currency} {self.total:,.2f} (estimates from {self.source})")
        for name, (what, count) in self.variants.items():
            lines.append(f"  variant {name}: {what}, {count} images (made here, nothing sent)")
        shape = self.chains
        if shape.dependents:
            lines.append(
                f"  chains: {shape.roots} roots, {shape.dependents} dependents, depth {shape.depth};"
                f" ~{self.currency} {self.chain_cost:,.2f} of the estimate (docs/chains.md)"
            )
        if self.stale:
            lines.append(
                f"  {self.stale} dependent(s) stale: made from an earlier image of an item they"
                " reference; `batchgen run` makes them again"
            )
        return lines

    def fields(self) -> dict[str, Any]:
        return {
            "event": "manifest_ok",
            "manifest": self.manifest,
            "job": self.job,
            "items": self.items,
            "requests": self.items,
            "images": self.images,
            "sizes": self.sizes,
            "by_model": [
                {"model": m, "size_class": k, "requests": r, "images": n, "estimated_cost": round(c, 4)}
                for m, k, r, n, c in self.groups
            ],
            "estimated_cost": round(self.total, 4),
            "currency": self.currency,
            "prices": self.source,
            "variants": {name: {"spec": what, "images": n} for name, (what, n) in self.variants.items()},
            "chains": {
                "roots": self.chains.roots,
                "dependents": self.chains.dependents,
                "depth": self.chains.depth,
                "estimated_cost": round(self.chain_cost, 4),
                "stale": self.stale,
            },
        }


def summary(job: Manifest, prices: PriceTable) -> Estimate:
    """Counts, sizes and estimated cost of one manifest."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    chained: dict[tuple[str, str], int] = defaultdict(int)  # images of the items in chains
    sizes: dict[str, int] = defaultdict(int)
    roots = job.chain_roots
    for item in job.items:
        klass = size_class(item.size, item.image_size)
        groups[(item.model, klass)][0] += 1
        groups[(item.model, klass)][1] += item.n
        if roots and item.id in roots:
            chained[(item.model, klass)] += item.n
        # What the service will make: the resolution class it bills, and the shape.
        if item.aspect_ratio is not None:
            shape = f"{klass} {item.aspect_ratio}"
        elif relay.WXH.match(item.size) and item.image_size is None:
            shape = item.size
        else:
            shape = klass
        sizes[shape] += item.n
    rows = [
        (model, klass, requests, count, prices.cost(model, klass, count))
        for (model, klass), (requests, count) in sorted(groups.items())
    ]
    chain_cost = sum(prices.cost(model, klass, count) for (model, klass), count in chained.items())
    return Estimate(
        manifest=str(job.path),
        job=job.job,
        items=len(job.items),
        images=sum(item.n for item in job.items),
        sizes=dict(sorted(sizes.items())),
        groups=rows,
        total=sum(row[4] for row in rows),
        currency=prices.currency,
        source=str(prices.source),
        variants=_variants(job),
        chains=job.chains,
        chain_cost=chain_cost,
    )


def _variants(job: Manifest) -> dict[str, tuple[str, int]]:
    """Each variant of the job, said in a few words, and how many images get it."""
    counts = dict.fromkeys(job.variants, 0)
    for item in job.items:
        for name in job.variants if item.variants is None else item.variants:
            counts[name] += item.n
    found = {}
    for name, v in job.variants.items():
        box = (
            f"{v.width}x{v.height} {v.fit}"
            if v.width and v.height
            else f"width {v.width}"
            if v.width
            else f"height {v.height}"
        )
        found[name] = (f"{box} {v.format}", counts[name])
    return found
