"""How many dependents of a job are stale: made from an earlier image of an item they reference
(docs/chains.md). What ``validate`` says; ``run`` makes them again."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from batchgen.job import memory
from batchgen.manifest.references import ReferenceLoader
from batchgen.manifest.spec import Manifest
from batchgen.output import journal
from batchgen.output.store import JobStore
from batchgen.plan import pricing
from batchgen.plan.plan import plan_item
from batchgen.plan.resume import Mode
from batchgen.plan.triage import Triage, Work, parents_of


def stale_dependents(job: Manifest, folder: Path) -> int | None:
    """Dependents with an image that a ``run`` would make again; None if ``folder`` holds no journal."""
    if not (folder / journal.JOURNAL).is_file():
        return None
    dependents = [item for item in job.items if item.parents]
    if not dependents:
        return 0
    with memory.bulk():
        state = journal.read(folder)
    limits = job.limits
    loader = ReferenceLoader(
        limits.max_reference_bytes, max_side=limits.reference_max_side, send_bytes=limits.reference_send_bytes
    )
    triage = Triage(
        partial(plan_item, reference_field=job.api.reference_field, prices=pricing.PriceTable.default()),
        state.entries,
        JobStore(folder),
        loader,
        Mode.RUN,
        parents=parents_of(job.items),
    )
    count = 0
    for item in dependents:
        entry = state.entries.get(item.id)
        if entry is None or not entry.succeeded:
            continue
        todo, _ = triage.chunk([item])
        count += any(isinstance(work, Work) and work.intact for work in todo)
    return count
