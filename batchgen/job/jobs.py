"""Running a manifest end to end: load, resolve settings, lock, send, journal, report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen import config, manifest
from batchgen.engine.guards import Guards
from batchgen.engine.retry import RetryPolicy
from batchgen.errors import ManifestError, Problem, StoreError, UsageError
from batchgen.job import deriving, memory, rates, reporting, unchanged
from batchgen.job.signals import Caught, signals
from batchgen.job.unchanged import Unchanged
from batchgen.manifest.references import ReferenceLoader
from batchgen.outcomes import Event, ItemFinished, ItemStatus
from batchgen.output import journal
from batchgen.output.lock import JobLock
from batchgen.output.store import JobStore
from batchgen.plan import pricing, shard
from batchgen.plan.plan import plan_item
from batchgen.plan.resume import Mode
from batchgen.plan.triage import Triage, decided, parents_of
from batchgen.report import record

if TYPE_CHECKING:
    # The modules that bring in aiohttp (the runner, the client) are imported where a run may
    # send: a nightly re-run with nothing to do starts without them.
    from batchgen.engine.runner import JobRun, Sleep
    from batchgen.service.client import ImageClient

# How a run reaches the service: given the settings, an open client for the run's length. The
# command line passes one that starts the simulator for --simulate; the default talks HTTP.
Connect = Callable[[config.RunSettings], contextlib.AbstractAsyncContextManager["ImageClient"]]

# Images an earlier run made (their journal records) brought back into the job folder.
Bring = Callable[[Sequence[journal.JournalFile]], Awaitable[None]]

log = logging.getLogger(__name__)

IO_THREADS = 16
IO_THREAD_NICE = 10

Loaded = manifest.Manifest | Unchanged


@dataclass(frozen=True)
class RunOptions:
    overrides: config.Overrides = field(default_factory=config.Overrides)
    mode: Mode = Mode.RUN
    max_failures: int | None = None
    max_cost: float | None = None
    shard: tuple[int, int] | None = None  # (K, N): run the K-th of N slices
    prices: Path | None = None  # a price table replacing the manifest's and the shipped one
    redo: frozenset[str] = frozenset()  # Mode.REDO: the ids to make again
    folder_name: str | None = None  # how messages name the job folder (a bucket's URL); None: its path


@dataclass(frozen=True)
class JobOutput:
    # Not in the repr: asyncio.run formats the main task, result and all, as it restores the
    # SIGINT handler, and a 100,000-item report takes a third of a second to format.
    report: record.Report = field(repr=False)
    folder: Path
    signal: int | None = None  # the signal that interrupted the run, if one did
    shown: str | None = None  # where the job is, for people, when not ``folder`` (a bucket's URL)

    @property
    def where(self) -> str:
        return self.shown or str(self.folder)


def load_all(paths: list[Path]) -> list[manifest.Manifest]:
    """Every manifest validated before any is run: one bad file means nothing is sent."""
    loaded: list[manifest.Manifest] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            with memory.bulk():
                loaded.append(manifest.load(path))
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    return loaded


def load_for_run(paths: list[Path], options: RunOptions) -> list[Loaded]:
    """As ``load_all``, but a job whose last run finished it, with nothing changed since, is known
    by its header and stamp alone: a nightly re-run of a 100,000-item catalog expands nothing."""
    if options.mode not in unchanged.TRUSTED_BY:
        return list(load_all(paths))
    loaded: list[Loaded] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            with memory.bulk():
                loaded.append(_unchanged(path, options) or manifest.load(path))
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    return loaded


def _unchanged(path: Path, options: RunOptions) -> Unchanged | None:
    header = manifest.load_header(path)
    if header is None:
        return None
    output = options.overrides.output_dir or config.DEFAULT_OUTPUT
    folder = job_folder(output, header.job, options.shard)
    stamp = unchanged.find(folder, unchanged.key(header, options.shard, options.prices))
    return Unchanged(header, stamp) if stamp else None


def job_folder(output_dir: Path, job_name: str, sharded: tuple[int, int] | None) -> Path:
    folder = output_dir / job_name
    return folder / shard.folder(*sharded) if sharded is not None else folder


def price_table(job: manifest.Manifest, options: RunOptions) -> pricing.PriceTable:
    """Command line over manifest over the shipped estimates."""
    path = options.prices or job.prices
    return pricing.PriceTable.load(path) if path else pricing.PriceTable.default()


async def run_manifest(
    job: Loaded,
    options: RunOptions,
    environ: Mapping[str, str],
    *,
    on_event: Callable[[Event], None] = lambda event: None,
    connect: Connect | None = None,
    sleep: Sleep | None = None,
    handle_signals: bool = False,
    open_store: Callable[[Path], JobStore] = JobStore,
    bring: Bring | None = None,
) -> JobOutput:
    """Send what ``job`` still needs, write its images, journal and report; returns the report.
    ``open_store``: the job folder's store (a spool's knows its bucket); ``bring``: see ``_planned``."""
    header = job.header if isinstance(job, Unchanged) else job
    if options.overrides.simulate and connect is None:
        raise UsageError("simulate: pass a connect that starts the simulator (the command line does)")
    settings = config.resolve(header.api, header.limits, options.overrides, environ)
    folder = job_folder(settings.output_dir, header.job, options.shard)
    shard_label = f"{options.shard[0]}/{options.shard[1]}" if options.shard else None
    _create(folder)
    started = time.time()
    with JobLock(folder):
        store = open_store(folder)
        if isinstance(job, Unchanged):
            store.tidy()
            report = await reporting.replay(job, store, shard_label, on_event, started)
            if report is not None:
                return JobOutput(report, folder)
            # An image went missing, or another run wrote the journal, since the load looked.
            log.info("%s: changed since the job's last run; expanding the manifest", folder)
            with memory.bulk():
                job = manifest.load(header.path)
        store.prepare()
        for warning in job.warnings:
            log.warning("%s", warning)
        sources = _sources(job, options)  # signed before they are read
        derivations = deriving.Deriving(folder, job.job, job.variants)
        planned = await _planned(job, settings, options, store, bring, derivations)
        unchanged.forget(store)  # what this run changes, no stamp of the last one vouches for
        caught = Caught()
        on_finished = _deriving_each(planned.items, derivations, on_event)
        hooks = _Hooks(on_finished, connect or http_client, sleep, caught if handle_signals else None)
        try:
            derivations.start()
            run = await _send(job, planned, settings, options, store, shard_label, hooks)
        except BaseException:
            derivations.close(stopping=True)  # blocks: the lock is never released while a worker still writes
            raise
        # Every item's thumbnail and variants are made before the lock is released.
        made = await asyncio.to_thread(partial(derivations.close, stopping=run.interrupted is not None))
        run.outcomes = deriving.attach(run.outcomes, made)
        stamps = options.mode in unchanged.WRITTEN_BY
        stamp_key = unchanged.key(job, options.shard, options.prices) if stamps else None
        with memory.bulk():
            report = reporting.write_report(
                job, planned.items, run, store, shard_label, sources, stamp_key, options.folder_name
            )
    return JobOutput(report, folder, caught.signum)


def _create(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror}") from exc


def _deriving_each(
    items: Sequence[manifest.ItemSpec], derivations: deriving.Deriving, on_event: Callable[[Event], None]
) -> Callable[[Event], None]:
    """``on_event``, and each item that ends with images (written now, or by an earlier run)
    handed to the derivation stage as it ends: after its image is written, never before."""
    specs = {spec.index: spec for spec in items}
    done = (ItemStatus.SUCCEEDED, ItemStatus.SKIPPED)

    def finished(event: Event) -> None:
        if isinstance(event, ItemFinished) and event.outcome.status in done and event.outcome.files:
            derivations.submit(specs[event.outcome.index], event.outcome.files)
        on_event(event)

    return finished


@dataclass(frozen=True)
class _Planned:
    items: Sequence[manifest.ItemSpec]  # this run's: its shard of the job
    triage: Triage
    references: ReferenceLoader


@dataclass(frozen=True)
class _Hooks:
    """What the caller plugs into a run."""

    on_event: Callable[[Event], None]
    connect: Connect
    sleep: Sleep | None
    signals: Caught | None  # None: signals are the caller's business


async def _planned(
    job: manifest.Manifest,
    settings: config.RunSettings,
    options: RunOptions,
    store: JobStore,
    bring: Bring | None,
    derivations: deriving.Deriving,
) -> _Planned:
    """``_plan`` off the loop (triage reads every local reference: hashed, and shrunk if too
    large); then, given ``bring``, the images of earlier runs that this run needs brought back
    into a job folder that no longer holds them (a spool, from its bucket): those the dependents
    it sends are made from, and those with a variant to make again."""
    planned = await asyncio.to_thread(_plan, job, settings, options, store)
    if bring is not None:
        parents = await asyncio.to_thread(planned.triage.earlier_parents, planned.items)
        await bring(parents + await asyncio.to_thread(_to_derive, planned, derivations))
    return planned


def _to_derive(planned: _Planned, derivations: deriving.Deriving) -> list[journal.JournalFile]:
    """The images, not in the job folder, of the items this run leaves as they are but whose
    variants it makes again (a variant's spec changed), and their variant files that stay as they
    are: the derivation stage needs the first, and makes the others again without them."""
    wanted: list[journal.JournalFile] = []
    triage = planned.triage
    for spec in planned.items:
        entry = triage.previous.get(spec.id)
        if entry is None or not entry.succeeded:
            continue
        # On this disk: a spool's store counts what its bucket holds.
        if JobStore.intact(triage.store, [(f.path, f.bytes) for f in entry.files]):
            continue
        kept = derivations.outdated(spec, [f.path for f in entry.files])
        if kept is not None:
            _, left = triage.chunk([spec])
            if left and left[0].status is ItemStatus.SKIPPED:
                wanted += [*entry.files, *(journal.JournalFile(m.path, m.sha256, m.bytes) for m in kept)]
    return wanted


def _plan(
    job: manifest.Manifest, settings: config.RunSettings, options: RunOptions, store: JobStore
) -> _Planned:
    """This run's items, decided against the job folder; refused here if over --max-cost."""
    items = shard.select(job.items, options.shard, job.chain_roots)
    prices = price_table(job, options)
    with memory.bulk():
        state = journal.read(store.root)
    limits = settings.limits
    references = ReferenceLoader(
        limits.max_reference_bytes,
        max_side=limits.reference_max_side,
        send_bytes=limits.reference_send_bytes,
    )
    planner = partial(plan_item, reference_field=settings.reference_field, prices=prices)
    triage = Triage(planner, state.entries, store, references, options.mode, options.redo, parents_of(items))
    _check_budget(job, items, triage, options, prices)
    return _Planned(items, triage, references)


async def _send(
    job: manifest.Manifest,
    planned: _Planned,
    settings: config.RunSettings,
    options: RunOptions,
    store: JobStore,
    shard_label: str | None,
    hooks: _Hooks,
) -> JobRun:
    """The items through the service, journaled as each one ends."""
    from batchgen.engine.runner import Runner  # see TYPE_CHECKING above

    book = journal.Journal(store.root)
    book.open()
    # Threads that mostly wait on the disk (fsync): more of them than cores, so a burst of
    # finished images is written together rather than queued behind one another.
    io = ThreadPoolExecutor(
        max_workers=IO_THREADS, thread_name_prefix="batchgen-io", initializer=_background_priority
    )
    limits = settings.limits
    rate = rates.of(job.job, limits, options.shard, options.overrides, settings.output_dir)
    try:
        book.run_started(job.path, time.time(), shard_label)
        async with hooks.connect(settings) as active:
            runner = Runner(
                job=job.job,
                client=active,
                store=store,
                policy=RetryPolicy.from_limits(limits),
                references=planned.references,
                concurrency=limits.concurrency,
                on_event=hooks.on_event,
                sleep=hooks.sleep,
                journal=book,
                mode=options.mode,
                requests_per_minute=rate.per_minute,
                relay_limit=rate.mirrored,
                shards=rate.shards,
                io=io,
                guards=Guards.from_limits(limits, options.max_failures, options.max_cost),
                folder_name=options.folder_name,
            )
            caught = hooks.signals
            with signals(runner, limits.grace_s, caught) if caught else contextlib.nullcontext():
                run = await runner.run(planned.items, decided(planned.triage, planned.items), planned.triage)
        rates.learned(run.learned, settings.output_dir / job.job)
        return run
    finally:
        io.shutdown(wait=True)
        book.close()
        store.sync()


def _sources(job: manifest.Manifest, options: RunOptions) -> list[tuple[str, manifest.Signature]]:
    """The files this run's items are made from, signed before they are read."""
    sources = list(job.sources)
    if options.prices is not None:
        with contextlib.suppress(OSError):  # price_table says what is wrong with it
            sources.append((os.path.abspath(options.prices), manifest.signature(os.stat(options.prices))))
    return sources


def _background_priority() -> None:
    """Run an I/O thread below the event loop's priority (Linux: nice is per thread).

    During a burst of finished images, a dozen threads hashing and writing would
    otherwise get the event loop only its fair share of the cores, and the loop lags.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IO_THREAD_NICE)


def _check_budget(
    job: manifest.Manifest,
    items: Sequence[manifest.ItemSpec],
    triage: Triage,
    options: RunOptions,
    prices: pricing.PriceTable,
) -> None:
    """Refuse to start a job whose estimate for what it will send is over --max-cost: the
    items the run's own triage sends (an edited prompt, a deleted image), priced as it prices them."""
    if options.max_cost is None:
        return
    cost = sum(request.estimated_cost for request in triage.to_send(items))
    if cost > options.max_cost + 1e-9:
        raise UsageError(
            f"{job.path}: the items to send are estimated at ~{prices.currency} {cost:,.2f},"
            f" over --max-cost {options.max_cost:g}; nothing was sent"
        )


@contextlib.asynccontextmanager
async def http_client(settings: config.RunSettings) -> AsyncIterator[ImageClient]:
    """The service at ``settings.base_url``, over HTTP."""
    from batchgen.service.client import HttpImageClient

    http = HttpImageClient(
        settings.base_url,
        settings.api_key,
        timeout_s=settings.limits.timeout_s,
        max_request_bytes=settings.max_request_bytes,
        proxies=settings.proxies,
    )
    async with http as client:
        yield client
