"""The derivation stage: variants and thumbnails made in a process pool the command owns.

Each item that ends with images (made now, or by an earlier run) is handed over as it ends, so
its thumbnail is made while the run goes on; the pool is created at the first one, one worker
per core at a lower priority. ``close`` moves what no worker has started to workers at the
command's own priority (the run has sent its last request), waits for every derivation and
shuts the pools down: the command calls it before it releases the job's lock, so nothing
outlives the command and a job folder is finished when the command returns. Never on the event
loop: the workers do the CPU work, and ``close`` blocks (the run calls it in a thread).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import Derived, ItemOutcome, ItemStatus
from batchgen.output import derive
from batchgen.output.derive import Result, Task
from batchgen.output.variants import THUMB, Variant, VariantFile, tidy

log = logging.getLogger(__name__)

WORKER_NICE = 19  # while the run sends: below its I/O threads (10), so writing images comes first
ERRORS_LOGGED = 10  # one line each; the rest are counted, and all are in report.json
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def _context() -> multiprocessing.context.BaseContext:
    """Workers from a fork server, not a fork of this threaded process (unsafe, and Python
    warns); the server imports the renderer once for all of them."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([Task.__module__])
    return context


class Deriving:
    """The derivations of one command, in one job folder.

    ``submit`` only queues (the event loop calls it); a thread of the stage's own starts the pool
    (so the run never waits for it) and hands each item to it. ``start`` starts that thread;
    ``close`` waits for all of it.
    """

    def __init__(
        self, folder: Path, job_name: str, variants: Mapping[str, Variant], workers: int | None = None
    ) -> None:
        self.folder = folder
        self.job_name = job_name
        self.variants = variants
        self.workers = workers or os.cpu_count() or 1
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[Task, Future[Result]]] = []
        self._dropping = False

    def chosen(self, spec: ItemSpec) -> tuple[Variant, ...]:
        """The thumbnail, then the variants ``spec`` asks for (all of the job's by default)."""
        names = self.variants if spec.variants is None else spec.variants
        return (THUMB, *(self.variants[name] for name in names))

    def start(self) -> None:
        """Start handing the queued items to the pool; returns at once."""
        if self._feeder is None:
            self._feeder = threading.Thread(target=self._feed, name="batchgen-derive", daemon=True)
            self._feeder.start()

    def _feed(self) -> None:
        # Not itself at a lower priority: a thread the OS preempts while it holds the GIL keeps
        # the event loop waiting. The workers lower their own (``derive.worker_started``).
        tidy(self.folder)  # what a killed worker left half-written
        pool = self._pool = ProcessPoolExecutor(
            self.workers, _context(), initializer=derive.worker_started, initargs=(WORKER_NICE, os.getpid())
        )
        while (task := self._queue.get()) is not None:
            with self._lock:
                if not self._dropping:
                    self._pending.append((task, pool.submit(derive.derive_item, task)))

    def submit(self, spec: ItemSpec, files: Sequence[str]) -> None:
        """Derive ``spec``'s item from its images ``files`` (relative to the folder), in the pool."""
        task = self._task(spec, files)
        if task is not None:
            self._queue.put(task)

    def outdated(self, spec: ItemSpec, files: Sequence[str]) -> list[VariantFile] | None:
        """None unless ``spec``'s item, its images ``files``, has a variant to make again by its
        record (a spec changed since, or one never made); then the variant files it keeps
        (``derive.outdated``; reads the record: not on the loop)."""
        task = self._task(spec, files)
        return None if task is None else derive.outdated(task)

    def _task(self, spec: ItemSpec, files: Sequence[str]) -> Task | None:
        images = tuple(f for f in files if f.lower().endswith(_IMAGE_SUFFIXES))
        return (
            Task(str(self.folder), spec.id, images, self.chosen(spec), meta(spec, self.job_name))
            if images
            else None
        )

    def drop_waiting(self) -> None:
        """Drop the derivations no worker has started (the run was interrupted): the next run or
        ``batchgen report`` makes them."""
        with self._lock:
            self._dropping = True
            self._pending = [p for p in self._pending if not p[1].cancel()]

    def close(self, *, stopping: bool = False) -> dict[str, Derived]:
        """Wait for every derivation (``stopping``: for those under way, the rest dropped first),
        shut the pool down; what each item has (blocks)."""
        if stopping:
            self.drop_waiting()
        self.start()  # what was queued is made, or dropped, by the stage's own thread
        self._queue.put(None)
        assert self._feeder is not None
        self._feeder.join()
        results: dict[str, Derived] = {}
        tail = None if stopping else self._hurry()
        try:
            for task, future in self._pending:
                try:
                    result = future.result()
                except Exception as exc:  # a worker that died (killed, out of memory): its item fails only
                    why = f"the worker failed ({exc!r})"
                    result = Result(task.item_id, errors={v.name: why for v in task.variants})
                results[task.item_id] = derived(result)
        finally:
            self._pending.clear()
            for pool in (self._pool, tail):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        _log_errors(results)
        return results

    def _hurry(self) -> ProcessPoolExecutor | None:
        """What no worker has started yet, moved to a pool at the command's own priority: the
        run has sent its last request, so the command now only waits for these, and at the
        lowest priority a busy machine would keep it waiting for minutes."""
        waiting = [index for index, (_, future) in enumerate(self._pending) if future.cancel()]
        if not waiting:
            return None
        log.info("making the thumbnails and variants of %d more item(s) before finishing", len(waiting))
        pool = ProcessPoolExecutor(
            min(self.workers, len(waiting)),
            _context(),
            initializer=derive.worker_started,
            initargs=(0, os.getpid()),
        )
        for index in waiting:
            task = self._pending[index][0]
            self._pending[index] = (task, pool.submit(derive.derive_item, task))
        return pool


def meta(spec: ItemSpec, job_name: str) -> dict[str, str]:
    """What a variant's XMP says of where it came from."""
    found = {"id": spec.id, "prompt": spec.prompt, "model": spec.model, "size": spec.size, "job": job_name}
    for name in ("image_size", "aspect_ratio"):
        value = spec.extra_fields.get(name)
        if isinstance(value, str):
            found[name] = value
    return found


def derived(result: Result) -> Derived:
    names = sorted(result.files)
    return Derived(
        files=tuple((name, tuple(result.files[name])) for name in names),
        sizes=tuple(tuple(result.sizes[name]) for name in names),
        upscaled=result.upscaled,
        errors=tuple(sorted(result.errors.items())),
    )


def attach(outcomes: Iterable[ItemOutcome], results: Mapping[str, Derived]) -> list[ItemOutcome]:
    """The outcomes with what was derived of each item."""
    return [
        replace(o, derived=results[o.id])
        if o.id in results and o.status in (ItemStatus.SUCCEEDED, ItemStatus.SKIPPED)
        else o
        for o in outcomes
    ]


def _log_errors(results: Mapping[str, Derived]) -> None:
    failed = [(item_id, name, why) for item_id, d in results.items() for name, why in d.errors]
    for item_id, name, why in failed[:ERRORS_LOGGED]:
        log.warning("%s: variant %s not made: %s; the next run tries again", item_id, name, why)
    if len(failed) > ERRORS_LOGGED:
        log.warning("%d more variant(s) not made; report.json lists them", len(failed) - ERRORS_LOGGED)
