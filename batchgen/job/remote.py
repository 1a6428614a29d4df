"""A run whose ``--output`` is a bucket: the job runs in a local spool, mirrored into the bucket.

Before anything is sent: the lock object is taken (which proves the credentials can write
there), the bucket is listed and its journal read, and what an earlier run from this work dir
could not upload goes up first. Then the run is an ordinary run in the spool, with an
``Uploader`` carrying its files up as they are written; a file that cannot be uploaded stays
in the spool and the run ends ``partial``. docs/storage.md tells the user's side.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from batchgen import config
from batchgen.errors import StoreError
from batchgen.job import jobs
from batchgen.job.unchanged import Unchanged
from batchgen.outcomes import JobStatus
from batchgen.output import downloads, paths, relaylimit, spool
from batchgen.output.bucket import Bucket, Location, Retries
from batchgen.output.lease import BucketLock, owner_token
from batchgen.output.lock import JobLock
from batchgen.output.store import JobStore
from batchgen.plan import shard
from batchgen.report import record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteOutput:
    """``--output s3://...`` and how to reach it."""

    url: str
    work_dir: Path | None = None  # --work-dir; None: BATCHGEN_WORK_DIR, else the user's cache folder
    lease_s: float = config.LOCK_LEASE_S
    retries: Retries = field(default_factory=Retries)


@dataclass(frozen=True)
class Where:
    """A job's folder in the bucket and its spool on this machine."""

    bucket: Bucket
    root: Path  # the spool's output folder: jobs.job_folder(root, job, shard) is ``spool``
    spool: Path
    shared: Bucket  # the job's own folder, whose records its shards share (``bucket``, unsharded)
    job: Path  # and its spool: jobs.job_folder(root, job, None)


def locate(
    output: RemoteOutput, job: str, sharded: tuple[int, int] | None, environ: Mapping[str, str]
) -> Where:
    location = Location.parse(output.url)
    settings = config.storage(environ, output.work_dir)
    # One spool per bucket folder, named by it, so two outputs never share one.
    name = hashlib.sha256(str(location).encode()).hexdigest()[:16]
    parts = [job, shard.folder(*sharded)] if sharded else [job]
    root = settings.work_dir / name
    bucket = Bucket(location.child(*parts), settings, output.retries)
    shared = Bucket(location.child(job), settings, output.retries) if sharded else bucket
    return Where(bucket, root, jobs.job_folder(root, job, sharded), shared, jobs.job_folder(root, job, None))


async def run_manifest(
    job: jobs.Loaded,
    options: jobs.RunOptions,
    remote: RemoteOutput,
    environ: Mapping[str, str],
    *,
    stats: Callable[[spool.Stats], None] | None = None,
    **hooks: Any,
) -> jobs.JobOutput:
    """``jobs.run_manifest`` in a spool, mirrored into the bucket; the same result, but that a
    file left waiting in the spool makes a completed run partial."""
    header = job.header if isinstance(job, Unchanged) else job
    where = locate(remote, header.job, options.shard, environ)
    try:
        (where.spool / ".bucket").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the spool {where.spool}: {exc.strerror}") from exc
    # This machine's lock first: two runs from one work dir share the bucket lock's owner token.
    with JobLock(where.spool / ".bucket"):
        return await _locked(job, options, remote, where, environ, stats, hooks)


async def _locked(
    job: jobs.Loaded,
    options: jobs.RunOptions,
    remote: RemoteOutput,
    where: Where,
    environ: Mapping[str, str],
    stats: Callable[[spool.Stats], None] | None,
    hooks: Mapping[str, Any],
) -> jobs.JobOutput:
    async with BucketLock(where.bucket, owner_token(where.spool), remote.lease_s) as lock:
        mirror = await spool.restore(where.bucket, where.spool)
        limit = await _limit_down(where)
        local = replace(options.overrides, output_dir=where.root)
        ours = spool.Uploader(where.bucket, where.spool, mirror, still_ours=lambda: not lock.lost)
        async with ours as uploader:
            output = await jobs.run_manifest(
                job,
                replace(options, overrides=local, folder_name=str(where.bucket)),
                environ,
                open_store=lambda root: spool.SpooledStore(root, mirror),
                bring=partial(downloads.bring, where.bucket, where.spool, mirror, uploader.stats),
                **hooks,
            )
            # run_manifest returns once its thumbnails and variants are made: all of them are in
            # the spool before the last upload.
            waiting = await uploader.finish()
        await _limit_up(where, limit)
        if stats is not None:
            stats(uploader.stats)
    report = output.report
    if waiting:
        log.error(
            "%d file(s) could not be uploaded to %s and wait in %s: run again to upload them"
            " (nothing is sent again for them)",
            waiting,
            where.bucket,
            where.spool,
        )
        if report.status is JobStatus.COMPLETED:
            report = replace(report, status=JobStatus.PARTIAL)
            record.write(JobStore(where.spool), report)
    else:
        spool.evict(where.spool, mirror)
    return jobs.JobOutput(report, where.spool, output.signal, shown=str(where.bucket))


async def _limit_down(where: Where) -> relaylimit.Remembered | None:
    """The relay's limit as the bucket keeps it for the job (every shard's, every machine's),
    made the spool's unless this work dir learned one since; the bucket's, for ``_limit_up``."""
    found = await where.shared.get(paths.RELAY_LIMIT)
    theirs = relaylimit.read(found[0], f"{where.shared}/{paths.RELAY_LIMIT}") if found else None
    if theirs is not None and relaylimit.later(theirs, relaylimit.recall(where.job)):
        relaylimit.keep(where.job, theirs)
    return theirs


async def _limit_up(where: Where, theirs: relaylimit.Remembered | None) -> None:
    """The limit learned here (this run, or one whose upload failed) into the job's folder."""
    if not relaylimit.later(relaylimit.recall(where.job), theirs):
        return
    try:
        await where.shared.put(paths.RELAY_LIMIT, where.job / paths.RELAY_LIMIT)
    except StoreError as exc:
        log.warning("%s; the next run from this work dir uploads it", exc)
