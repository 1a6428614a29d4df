"""Running a manifest end to end: load, resolve settings, lock, send, journal, report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen import config
from batchgen.engine.guards import Guards
from batchgen.engine.retry import RetryPolicy
from batchgen.errors import ManifestError, Problem, StoreError, UsageError
from batchgen.job import memory, unchanged
from batchgen.job.unchanged import Unchanged
from batchgen.manifest import validate as manifest
from batchgen.manifest.references import ReferenceLoader
from batchgen.outcomes import Event, ItemFinished, ItemOutcome, ItemStatus, JobStarted
from batchgen.output import journal, thumbs
from batchgen.output.lock import JobLock
from batchgen.output.store import JobStore
from batchgen.plan import estimate, pricing, shard
from batchgen.plan.plan import plan_item
from batchgen.plan.resume import Mode
from batchgen.report import gallery
from batchgen.report.report import build_report
from batchgen.sim.settings import SimulatorConfig

if TYPE_CHECKING:
    # The modules that bring in aiohttp (the runner, the client, the simulator) are imported
    # where a run may send: a nightly re-run with nothing to do starts without them.
    from batchgen.engine.runner import Runner, Sleep
    from batchgen.service.client import ImageClient

log = logging.getLogger(__name__)

IO_THREADS = 16
IO_THREAD_NICE = 10
# A job finished in one of these modes, with nothing changed since, sends nothing: its stamp says so.
TRUSTS_STAMP = frozenset({Mode.RUN, Mode.ONLY_FAILED, Mode.ALL_FAILED})
# Runs in these modes compare every item with its journal entry: what they end with can be stamped.
STAMPS = frozenset({Mode.RUN, Mode.FORCE})

Loaded = manifest.Manifest | Unchanged


@dataclass(frozen=True)
class RunOptions:
    overrides: config.Overrides = field(default_factory=config.Overrides)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    mode: Mode = Mode.RUN
    max_failures: int | None = None
    max_cost: float | None = None
    shard: tuple[int, int] | None = None  # (K, N): run the K-th of N slices
    prices: Path | None = None  # a price table replacing the manifest's and the shipped one
    redo: frozenset[str] = frozenset()  # Mode.REDO: the ids to make again


@dataclass(frozen=True)
class JobOutput:
    # Not in the repr: asyncio.run formats the main task, result and all, as it restores the
    # SIGINT handler, and a 100,000-item report takes a third of a second to format.
    report: dict[str, Any] = field(repr=False)
    folder: Path
    signal: int | None = None  # the signal that interrupted the run, if one did


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
    if options.mode not in TRUSTS_STAMP:
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


def job_folder(output_dir: Path, job: str, sharded: tuple[int, int] | None) -> Path:
    folder = output_dir / job
    return folder / shard.folder(*sharded) if sharded is not None else folder


def load_for_retry(
    job_dir: Path, options: RunOptions, given: Path | None = None
) -> tuple[manifest.Manifest, RunOptions]:
    """The manifest an output folder was made from (or ``given``), and options that write back
    into that folder."""
    state = journal.read(job_dir)
    if state.manifest is None:
        raise UsageError(f"{job_dir}: no {journal.JOURNAL} with a run in it; is this a batchgen job folder?")
    job = manifest.load(given or find_manifest(job_dir, state))
    job_folder, sharded = job_dir, None
    if state.shard and shard.FOLDER.match(job_dir.name):
        job_folder, sharded = job_dir.parent, shard.parse(state.shard)
    if job.job != job_folder.name:
        raise UsageError(f"{job.path} now names job {job.job!r}, not {job_folder.name!r}; run it with `run`")
    overrides = replace(options.overrides, output_dir=job_folder.parent)
    return job, replace(options, overrides=overrides, shard=sharded)


def redo_ids(
    job: manifest.Manifest, options: RunOptions, given: Sequence[str], ids_file: Path | None
) -> frozenset[str]:
    """The ids a redo names, checked against the job: an unknown one is an error, and nothing is sent."""
    wanted = list(given)
    if ids_file is not None:
        try:
            text = ids_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{ids_file}: cannot be read ({getattr(exc, 'strerror', None) or exc})"
            ) from None
        wanted += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    wanted = [w for w in wanted if w]
    if not wanted:
        raise UsageError(
            "name the items to make again: batchgen redo OUTPUT_JOB_DIR ID... or --ids-file FILE"
        )
    items = job.items
    if options.shard is not None:
        k, n = options.shard
        items = tuple(i for i in items if shard.shard_of(i.id, n) == k)
    known = {item.id for item in items}
    unknown = sorted(set(wanted) - known)
    if unknown:
        where = f"shard {options.shard[0]}/{options.shard[1]} of " if options.shard else ""
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise UsageError(
            f"{len(unknown)} id(s) not in {where}job {job.job!r} ({job.path}): {shown}; nothing was sent"
        )
    return frozenset(wanted)


def find_manifest(job_dir: Path, state: journal.JournalState) -> Path:
    """Where the manifest is now: relative to the job folder first (a moved or copied project
    finds its own copy), then where the run recorded it (a job folder moved on its own)."""
    assert state.manifest is not None
    relative = job_dir / state.manifest_relative if state.manifest_relative else None
    if relative is not None and relative.is_file():
        return relative
    recorded = Path(state.manifest)
    if recorded.is_file():
        if relative is not None:
            log.warning(
                "%s: no manifest at %s (where it was relative to this folder); using %s, where the run"
                " recorded it (give another with --manifest FILE)",
                *(job_dir, os.path.normpath(relative), recorded),
            )
        return recorded
    if relative is not None:
        where = f"neither at {os.path.normpath(relative)} (relative to this folder) nor at {recorded}"
    else:
        where = f"no longer at {recorded}"
    raise UsageError(f"{job_dir}: the manifest it was made from is {where}; give it with --manifest FILE")


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
    client: ImageClient | None = None,
    sleep: Sleep | None = None,
    handle_signals: bool = False,
) -> JobOutput:
    """Send what ``job`` still needs, write its images, journal and report; returns the report."""
    header = job.header if isinstance(job, Unchanged) else job
    settings = config.resolve(header.api, header.limits, options.overrides, environ)
    folder = job_folder(settings.output_dir, header.job, options.shard)
    shard_label = f"{options.shard[0]}/{options.shard[1]}" if options.shard else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror}") from exc
    started = time.time()
    with JobLock(folder):
        store = JobStore(folder)
        if isinstance(job, Unchanged):
            store.tidy()
            output = await _replay(job, store, shard_label, on_event, started)
            if output is not None:
                return output
            # An image went missing, or another run wrote the journal, since the load looked.
            log.info("%s: changed since the job's last run; expanding the manifest", folder)
            with memory.bulk():
                job = manifest.load(header.path)
        from batchgen.engine.runner import Runner  # see TYPE_CHECKING above

        store.prepare()
        for warning in job.warnings:
            log.warning("%s", warning)
        items = job.items
        if options.shard is not None:
            k, n = options.shard
            items = tuple(item for item in job.items if shard.shard_of(item.id, n) == k)
        sources = _sources(job, options)
        prices = price_table(job, options)
        with memory.bulk():
            state = journal.read(folder)
        _check_budget(job, items, state.entries, options, prices)
        unchanged.forget(store)  # what this run changes, no stamp of the last one vouches for
        book = journal.Journal(folder)
        book.open()
        caught = _Caught()
        # Threads that mostly wait on the disk (fsync): more of them than cores, so a burst of
        # finished images is written together rather than queued behind one another.
        io = ThreadPoolExecutor(
            max_workers=IO_THREADS, thread_name_prefix="batchgen-io", initializer=_background_priority
        )
        previews = thumbs.Background(folder)
        try:
            book.run_started(job.path, time.time(), shard_label)
            async with _client(settings, options, client) as active:
                limits = settings.limits
                runner = Runner(
                    job=job.job,
                    client=active,
                    store=store,
                    policy=RetryPolicy.from_limits(limits),
                    references=ReferenceLoader(
                        limits.max_reference_bytes,
                        max_side=limits.reference_max_side,
                        send_bytes=limits.reference_send_bytes,
                    ),
                    concurrency=limits.concurrency,
                    on_event=on_event,
                    sleep=sleep,
                    journal=book,
                    previous=state.entries,
                    mode=options.mode,
                    redo=options.redo,
                    requests_per_minute=limits.requests_per_minute,
                    io=io,
                    thumbnails=previews,
                    guards=Guards(
                        max_consecutive_failures=limits.max_consecutive_failures,
                        pause_s=limits.retry_cap_s,
                        max_failures=options.max_failures,
                        max_cost=options.max_cost,
                    ),
                )
                planner = partial(plan_item, reference_field=settings.reference_field, prices=prices)
                with _signals(runner, limits.grace_s, caught) if handle_signals else contextlib.nullcontext():
                    run = await runner.run(items, planner)
        finally:
            io.shutdown(wait=True)
            book.close()
            store.sync()
            left = previews.close()  # the run never waits for its previews
            if left:
                log.info("%d thumbnail(s) to make after the run; meanwhile the gallery shows the image", left)
        with memory.bulk():
            report = build_report(
                job=job.job,
                manifest=str(job.path),
                outcomes=run.outcomes,
                aborted=run.aborted,
                interrupted=run.interrupted,
                started_at=run.started_at,
                finished_at=run.finished_at,
                shard=shard_label,
            )
            store.write_json("report.json", report)
            table, param_of = _params(items)
            gallery.write(folder, report, _cards(run.outcomes, (table[k] for k in param_of)))
            finished = run.aborted is None and run.interrupted is None
            if finished and options.mode in STAMPS and unchanged.stampable(run.outcomes):
                wanted = unchanged.key(job, options.shard, options.prices)
                unchanged.write(store, wanted, sources, run.outcomes, table, param_of, job.warnings)
    return JobOutput(report, folder, caught.signum)


async def _replay(
    job: Unchanged,
    store: JobStore,
    shard_label: str | None,
    on_event: Callable[[Event], None],
    started: float,
) -> JobOutput | None:
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
        store.write_json("report.json", report)
        gallery.write(store.root, report, _cards(outcomes, unchanged.param_rows(stamp)))
        return JobOutput(report, store.root)


def _sources(job: manifest.Manifest, options: RunOptions) -> list[tuple[str, manifest.Signature]]:
    """The files this run's items are made from, signed before they are read."""
    sources = list(job.sources)
    if options.prices is not None:
        with contextlib.suppress(OSError):  # price_table says what is wrong with it
            sources.append((os.path.abspath(options.prices), manifest.signature(os.stat(options.prices))))
    return sources


def _params(items: Sequence[manifest.ItemSpec]) -> tuple[list[dict[str, Any]], list[int]]:
    """The parameters each item is asked with, as the gallery lists them: each distinct set once,
    and the index of each item's."""
    table: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], int] = {}
    param_of: list[int] = []
    for spec in items:
        key = (spec.model, spec.size, spec.n, spec.response_format, id(spec.extra_fields))
        k = seen.get(key)
        if k is None:
            body = {
                "model": spec.model,
                "size": spec.size,
                "n": spec.n,
                "response_format": spec.response_format,
                "extra_fields": spec.extra_fields,
            }
            k = seen[key] = len(table)
            table.append(gallery.request_params(body))
        param_of.append(k)
    return table, param_of


def _cards(outcomes: Sequence[ItemOutcome], params: Iterable[Mapping[str, Any]]) -> Iterator[gallery.Card]:
    """The gallery's cards, from the run's outcomes and each item's parameters (never re-read from disk)."""
    value = {status: status.value for status in ItemStatus}  # Enum.value is slow, 100,000 times
    for outcome, asked in zip(outcomes, params, strict=True):
        failure = outcome.failure
        yield gallery.Card(
            id=outcome.id,
            status=value[outcome.status],
            attempts=outcome.attempts,
            files=outcome.files,
            prompt=outcome.prompt,
            params=asked,
            error_class=failure.error_class.value if failure else None,
            message=failure.message if failure else None,
            version=outcome.version,
        )


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
    done: Mapping[str, journal.Entry],
    options: RunOptions,
    prices: pricing.PriceTable,
) -> None:
    """Refuse to start a job whose estimate for what it will send is over --max-cost."""
    if options.max_cost is None:
        return
    if options.mode is Mode.REDO:
        sent = (i for i in items if i.id in options.redo)
    else:
        sent = (i for i in items if _would_send(done.get(i.id), options.mode))
    cost = estimate.total_cost(sent, prices)
    if cost > options.max_cost + 1e-9:
        raise UsageError(
            f"{job.path}: the items to send are estimated at ~{prices.currency} {cost:,.2f},"
            f" over --max-cost {options.max_cost:g}; nothing was sent"
        )


def _would_send(entry: journal.Entry | None, mode: Mode) -> bool:
    if entry is None or mode is Mode.FORCE:
        return True
    if entry.status == "succeeded":
        return False
    if entry.refetchable and mode in (Mode.RUN, Mode.ONLY_FAILED):
        return False  # made and billed already: its link is fetched again, for free
    return mode is not Mode.ONLY_FAILED or entry.resent_by_retry


@dataclass
class _Caught:
    signum: int | None = None


@contextlib.contextmanager
def _signals(runner: Runner, grace_s: float, caught: _Caught) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop sending, give in-flight requests ``grace_s``. Second: stop now."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def on_signal(signum: int) -> None:
        nonlocal timer
        if caught.signum is None:
            caught.signum = signum
            name = signal.Signals(signum).name
            log.warning(
                "%s: no new requests; waiting up to %gs for those in flight (again to stop now)",
                name,
                grace_s,
            )
            runner.interrupt(name)
            timer = loop.call_later(grace_s, runner.halt)
        else:
            runner.halt()

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if timer is not None:
            timer.cancel()


@contextlib.asynccontextmanager
async def _client(
    settings: config.RunSettings, options: RunOptions, given: ImageClient | None
) -> AsyncIterator[ImageClient]:
    from batchgen.service.client import HttpImageClient
    from batchgen.sim.simulator import Simulator

    if given is not None:
        yield given
        return
    async with contextlib.AsyncExitStack() as stack:
        base_url = settings.base_url
        if options.overrides.simulate:
            sim = await stack.enter_async_context(Simulator(options.simulator))
            base_url = sim.base_url
            log.info("simulating the service at %s", base_url)
        http = HttpImageClient(
            base_url,
            settings.api_key,
            timeout_s=settings.limits.timeout_s,
            max_request_bytes=settings.max_request_bytes,
        )
        yield await stack.enter_async_context(http)
