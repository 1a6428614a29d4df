"""What a manifest will cost and make: counts, sizes and estimated spend (``validate``, ``--max-cost``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from . import provider
from .manifest import ItemSpec, Manifest
from .pricing import PriceTable


def item_cost(item: ItemSpec, prices: PriceTable) -> float:
    return prices.cost(item.model, provider.size_class(item.size, item.image_size), item.n)


def total_cost(items: Iterable[ItemSpec], prices: PriceTable) -> float:
    return sum(item_cost(item, prices) for item in items)


def describe(job: Manifest, prices: PriceTable) -> list[str]:
    """What ``validate`` prints: counts, sizes and estimated cost of one manifest."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    sizes: dict[str, int] = defaultdict(int)
    for item in job.items:
        klass = provider.size_class(item.size, item.image_size)
        groups[(item.model, klass)][0] += 1
        groups[(item.model, klass)][1] += item.n
        # What the service will make: the resolution class it bills, and the shape.
        if item.aspect_ratio is not None:
            shape = f"{klass} {item.aspect_ratio}"
        elif provider.WXH.match(item.size) and item.image_size is None:
            shape = item.size
        else:
            shape = klass
        sizes[shape] += item.n
    images = sum(item.n for item in job.items)
    lines = [
        f"{job.path}: ok: job {job.job!r}, {len(job.items)} items, {len(job.items)} requests, {images} images"
    ]
    lines.append("  sizes: " + ", ".join(f"{shape} x{count}" for shape, count in sorted(sizes.items())))
    total = 0.0
    for (model, klass), (requests, count) in sorted(groups.items()):
        cost = prices.cost(model, klass, count)
        total += cost
        money = f"~{prices.currency} {cost:,.2f}"
        lines.append(f"  {model:<18} {klass:>3}  {requests:>6} requests {count:>6} images  {money}")
    lines.append(f"  estimated cost ~{prices.currency} {total:,.2f} (estimates from {prices.source})")
    return lines
