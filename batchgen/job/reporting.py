"""What a run leaves for people: report.json, report.html, and the stamp that lets the next
run of an unchanged job skip planning; and the replay of such a job, from its stamp alone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from batchgen import manifest
from batchgen.job import memory, unchanged
from batchgen.job.unchanged import Unchanged
from batchgen.outcomes import Event, ItemFinished, ItemOutcome, JobStarted
from batchgen.output.store import JobStore
from batchgen.report import gallery, record
from batchgen.report.report import build_report

if TYPE_CHECKING:
    from batchgen.engine.runner import JobRun

log = logging.getLogger(__name__)


def write_report(
    job: manifest.Manifest,
    items: Sequence[manifest.ItemSpec],
    run: JobRun,
    store: JobStore,
    shard_label: str | None,
    sources: list[tuple[str, manifest.Signature]],
    stamp_key: str | None,
    shown: str | None = None,
) -> record.Report:
    """report.json, report.html, and (``stamp_key``: the run may leave one) the stamp that lets
    tomorrow's run skip all this. ``shown``: how the gallery names the job folder, if not by its path."""
    report = build_report(
        job=job.job,
        manifest=str(job.path),
        outcomes=run.outcomes,
        aborted=run.aborted,
        interrupted=run.interrupted,
        started_at=run.started_at,
        finished_at=run.finished_at,
        shard=shard_label,
        relay_limit=run.relay,
    )
    record.write(store, report)
    table, param_of = _params(items)
    parents = {spec.id: list(spec.parents) for spec in items if spec.parents}
    cards = _cards(run.outcomes, (table[k] for k in param_of), parents)
    gallery.write(store.root, report, cards, shown=shown, kept=store.history_names())
    finished = run.aborted is None and run.interrupted is None
    if finished and stamp_key is not None and unchanged.stampable(run.outcomes):
        unchanged.write(store, stamp_key, sources, run.outcomes, (table, param_of), job.warnings, parents)
    return report


async def replay(
    job: Unchanged,
    store: JobStore,
    shard_label: str | None,
    on_event: Callable[[Event], None],
    started: float,
) -> record.Report | None:
    """A re-run of a job its stamp says is finished and unchanged: the report and gallery written
    as the long way would write them, nothing sent. None if the stamp no longer holds."""
    with memory.bulk():
        stamp = job.stamp
        outcomes = await asyncio.to_thread(unchanged.outcomes, stamp, store)
        if outcomes is None:
            return None
        for warning in stamp.warnings:
            log.warning("%s", warning)
        on_event(JobStarted(job.job, len(outcomes)))
        for outcome in outcomes:
            on_event(ItemFinished(outcome))
        # Nothing is added to the journal: it records what runs change, and this one changes nothing
        # (so the stamp stays true for the next night as it is).
        report = build_report(
            job=job.job,
            manifest=str(job.path),
            outcomes=outcomes,
            aborted=None,
            started_at=started,
            finished_at=time.time(),
            shard=shard_label,
        )
        record.write(store, report)
        gallery.write(store.root, report, _cards(outcomes, unchanged.param_rows(stamp), stamp.parents))
        return report


def _params(items: Sequence[manifest.ItemSpec]) -> tuple[list[dict[str, Any]], list[int]]:
    """The parameters each item is asked with, as the gallery lists them: each distinct set once
    (``gallery.ParamTable`` decides), and the index of each item's."""
    table = gallery.ParamTable()
    # Items of one catalog view are asked the same way: their parameters are built once per ask.
    built: dict[Hashable, int] = {}
    param_of: list[int] = []
    for spec in items:
        ask = _ask(spec)
        k = built.get(ask) if ask is not None else None
        if k is None:
            body = {
                "model": spec.model,
                "size": spec.size,
                "n": spec.n,
                "response_format": spec.response_format,
                "extra_fields": spec.extra_fields,
            }
            k = table.row_of(gallery.request_params(body))
            if ask is not None:
                built[ask] = k
        param_of.append(k)
    return table.rows, param_of


def _ask(spec: manifest.ItemSpec) -> Hashable | None:
    """What an item asks for beyond its prompt, as a key; None where a value nests (a list)."""
    ask = (spec.model, spec.size, spec.n, spec.response_format, *spec.extra_fields.items())
    try:
        hash(ask)
    except TypeError:
        return None
    return ask


def _cards(
    outcomes: Sequence[ItemOutcome],
    params: Iterable[Mapping[str, Any]],
    parents: Mapping[str, Sequence[str]],
) -> Iterator[gallery.Card]:
    """The gallery's cards, from the run's outcomes, each item's parameters and the items each was
    made from (never re-read from disk)."""
    for outcome, asked in zip(outcomes, params, strict=True):
        failure = outcome.failure
        yield gallery.Card(
            id=outcome.id,
            status=outcome.status,
            attempts=outcome.attempts,
            files=outcome.files,
            prompt=outcome.prompt,
            params=asked,
            error_class=failure.error_class if failure else None,
            message=failure.message if failure else None,
            version=outcome.version,
            pixels=outcome.pixels,
            flags=tuple(flag.value for flag in outcome.flags),
            variants=outcome.derived.channels if outcome.derived else (),
            parents=tuple(parents.get(outcome.id, ())),
        )
