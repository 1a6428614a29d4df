"""The command line: parse, set up logging, call the library, turn the result into an exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from batchgen import config, manifest
from batchgen.cli import arguments, logs
from batchgen.cli.progress import ProgressBar, TqdmLogHandler
from batchgen.errors import JobLockedError, ManifestError, StoreError, UsageError
from batchgen.job import jobs, memory, rates, remote, remote_folders, reopen, stale
from batchgen.outcomes import Event, JobStatus
from batchgen.output import journal
from batchgen.plan import estimate
from batchgen.plan.resume import Mode
from batchgen.report import cards, gallery, merge, record
from batchgen.report.report import summary_lines
from batchgen.sim.settings import SimulatorConfig

if TYPE_CHECKING:
    from batchgen.service.client import ImageClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger("batchgen")


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments.parse(argv)
    if args.command in ("run", "retry", "redo"):
        memory.tune_allocator()
    _setup_logging(args)
    try:
        result: int = COMMANDS[args.command](args)
        return result
    except ManifestError as exc:
        logs.problems(log, exc.problems)
        return EXIT_USAGE
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except (JobLockedError, StoreError) as exc:
        log.error("%s", exc)
        return EXIT_ABORTED
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED


def simulator_config(args: argparse.Namespace, prefix: str, **extra: Any) -> SimulatorConfig:
    """The simulator the command line asks for: ``batchgen simulator``'s flags (``prefix`` "") or
    ``run --simulate``'s (``prefix`` "sim_"); a value out of range is a usage error."""
    given = {
        "latency_ms": getattr(args, f"{prefix}latency_ms"),
        "fault_rate": getattr(args, f"{prefix}fault_rate"),
        "seed": getattr(args, f"{prefix}seed"),
        "payload_kb": getattr(args, f"{prefix}payload_kb"),
        "response": getattr(args, f"{prefix}response"),
        "image_format": getattr(args, f"{prefix}image_format"),
        "max_body_mb": getattr(args, f"{prefix}max_body_mb"),
        "rate_limit": getattr(args, f"{prefix}rate_limit"),
        "rate_window_ms": getattr(args, f"{prefix}rate_window_ms"),
        "rate_form": getattr(args, f"{prefix}rate_form"),
        "rate_headers": getattr(args, f"{prefix}rate_headers"),
    }
    for name, flag in (("faults", "faults"), ("dropped_fields", "drop_fields")):
        words = getattr(args, f"{prefix}{flag}")
        if words is not None:
            given[name] = tuple(w.strip() for w in words.split(",") if w.strip())
    try:
        return SimulatorConfig(**{k: v for k, v in given.items() if v is not None}, **extra)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _setup_logging(args: argparse.Namespace) -> None:
    as_json = args.log_format == "json"
    if args.quiet:
        level = logging.ERROR
    else:
        level = [logging.INFO if as_json else logging.WARNING, logging.INFO, logging.DEBUG][
            min(args.verbose, 2)
        ]
    handler: logging.Handler = TqdmLogHandler() if _show_progress(args) else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.JsonFormatter() if as_json else logs.TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _show_progress(args: argparse.Namespace) -> bool:
    sending = args.command in ("run", "retry", "redo")
    return sending and not args.quiet and args.log_format == "text" and sys.stderr.isatty()


def _run(args: argparse.Namespace) -> int:
    mode = Mode.ALL_FAILED if args.all_failed else Mode.ONLY_FAILED if args.only_failed else Mode.RUN
    if args.force:
        mode = Mode.FORCE
    if isinstance(args.output, str):  # a bucket: each run reads what it holds, no local stamp vouches
        options = _options(args, None, mode)
        bucket = remote.RemoteOutput(args.output, args.work_dir, args.lock_lease)
        return _send(args, jobs.load_all(manifest_paths(args.manifests)), options, bucket)
    options = _options(args, args.output, mode)
    return _send(args, jobs.load_for_run(manifest_paths(args.manifests), options), options)


def manifest_paths(given: Sequence[Path]) -> list[Path]:
    """Files as given; a folder stands for its *.yaml and *.yml files, in name order, not recursing."""
    paths: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise UsageError(f"{path}: no manifests (*.yaml, *.yml) in this folder")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def _retry(args: argparse.Namespace) -> int:
    mode = Mode.ALL_FAILED if args.all_failed else Mode.ONLY_FAILED
    if isinstance(args.job_dir, str):  # a bucket's job: run again into it, failures only
        found, options, target = _bucket_job(args, _options(args, None, mode))
        return _send(args, [found], options, remote.RemoteOutput(target.output, args.work_dir))
    job, options = reopen.load_for_retry(args.job_dir, _options(args, None, mode), args.manifest)
    return _send(args, [job], options)


def _bucket_job(
    args: argparse.Namespace, options: jobs.RunOptions
) -> tuple[manifest.Manifest, jobs.RunOptions, remote_folders.Target]:
    """The job in the bucket folder ``args.job_dir``: its manifest, and options for its shard."""
    target = asyncio.run(remote_folders.retry_target(args.job_dir, args.manifest, os.environ))
    found = jobs.load_all([target.manifest])[0]
    if found.job != target.job:
        raise UsageError(
            f"{target.manifest} now names job {found.job!r}, not {target.job!r}; run it with `run`"
        )
    return found, replace(options, shard=target.shard), target


def _redo(args: argparse.Namespace) -> int:
    bucket = None
    if isinstance(args.job_dir, str):  # a bucket's job: its journal read there, the run into it
        job, options, target = _bucket_job(args, _options(args, None, Mode.REDO))
        state = target.state if args.flag else None
        bucket = remote.RemoteOutput(target.output, args.work_dir)
    else:
        job, options = reopen.load_for_retry(args.job_dir, _options(args, None, Mode.REDO), args.manifest)
        state = journal.read(args.job_dir) if args.flag else None
    flagged = reopen.flagged(state, job, args.flag) if state is not None else []
    if args.flag and not (flagged or args.ids or args.ids_file):
        log.warning("%s: no item is flagged %s; nothing to make again", args.job_dir, " or ".join(args.flag))
        return EXIT_OK
    ids = reopen.redo_ids(job, options, [*args.ids, *flagged], args.ids_file)
    ids = reopen.with_dependents(job, options, ids, dependents=not args.no_dependents)
    return _send(args, [job], replace(options, redo=ids), bucket)


def _options(args: argparse.Namespace, output: Path | None, mode: Mode) -> jobs.RunOptions:
    given = {
        "concurrency": args.concurrency,
        "max_attempts": args.max_attempts,
        "requests_per_minute": args.rpm,
    }
    limits = {k: v for k, v in given.items() if v is not None}
    return jobs.RunOptions(
        overrides=config.Overrides(args.base_url, output, limits, args.simulate),
        mode=mode,
        max_failures=args.max_failures,
        max_cost=args.max_cost,
        shard=getattr(args, "shard", None),
        prices=args.prices,
    )


def _send(
    args: argparse.Namespace,
    manifests: Sequence[jobs.Loaded],
    options: jobs.RunOptions,
    bucket: remote.RemoteOutput | None = None,
) -> int:
    as_json = args.log_format == "json"
    connect = _simulated(simulator_config(args, "sim_")) if args.simulate else None
    done: list[tuple[jobs.JobOutput, int]] = []
    for job in manifests:
        progress = ProgressBar() if _show_progress(args) else None
        listeners = [f for f in (progress, logs.event_logger(job.job) if as_json else None) if f]
        hooks: dict[str, Any] = {"on_event": _fan_out(listeners), "connect": connect, "handle_signals": True}
        try:
            if bucket is not None:
                output = asyncio.run(remote.run_manifest(job, options, bucket, os.environ, **hooks))
            else:
                output = asyncio.run(jobs.run_manifest(job, options, os.environ, **hooks))
        finally:
            if progress:
                progress.close()
        code = 128 + output.signal if output.signal is not None else exit_code(output.report)
        if as_json:
            logs.job_finished(output.report, output.where, code)
        done.append((output, code))
        if output.signal is not None:
            break  # 130 for SIGINT, 143 for SIGTERM; the later manifests do not start
    if not args.quiet and not as_json:
        if len(done) > 1:
            statuses = ", ".join(f"{o.report.job} {o.report.status.value}" for o, _ in done)
            print(f"{len(done)} jobs: {statuses}")
        for output, _ in done:
            print("\n".join(summary_lines(output.report, output.where)))
    return max((code for _, code in done), key=_severity)


def _simulated(cfg: SimulatorConfig) -> jobs.Connect:
    """--simulate: each job talks to a simulator of its own, started as the job begins sending
    (a nightly re-run that its stamp settles starts none)."""

    @contextlib.asynccontextmanager
    async def connect(settings: config.RunSettings) -> AsyncIterator[ImageClient]:
        from batchgen.sim.simulator import Simulator  # aiohttp's server: only --simulate needs it

        async with Simulator(cfg) as sim:
            log.info("simulating the service at %s", sim.base_url)
            async with jobs.http_client(replace(settings, base_url=sim.base_url)) as client:
                yield client

    return connect


def _fan_out(listeners: list[Callable[[Event], None]]) -> Callable[[Event], None]:
    def on_event(event: Event) -> None:
        for listener in listeners:
            listener(event)

    return on_event


def exit_code(report: record.Report) -> int:
    if report.status is JobStatus.ABORTED:
        return EXIT_ABORTED
    return EXIT_OK if report.status is JobStatus.COMPLETED else EXIT_FAILED


def _severity(code: int) -> int:
    """How bad an exit code is: interrupted > aborted > failed > ok."""
    return {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_ABORTED: 2}.get(code, 3)


def _validate(args: argparse.Namespace) -> int:
    manifests = jobs.load_all(manifest_paths(args.manifests))
    overrides = config.Overrides(output_dir=args.output)
    for job in manifests:
        logs.problems(log, job.warnings, logging.WARNING)
        # What the run would say of the settings (a plain-http base URL), with no key needed.
        settings = config.resolve(job.api, job.limits, overrides, os.environ, need_key=False)
        rate = rates.of(job.job, settings.limits, args.shard, overrides, settings.output_dir)
        if not args.quiet:
            found = estimate.summary(job, jobs.price_table(job, jobs.RunOptions(prices=args.prices)))
            output = args.output or config.DEFAULT_OUTPUT
            found = found.with_stale(stale.stale_dependents(job, output / job.job))
            if args.log_format == "json":
                print(orjson.dumps({**found.fields(), **rate.fields()}).decode())
            else:
                print("\n".join([*found.lines(), *(f"  {line}" for line in rate.lines())]))
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    if isinstance(args.job_dir, str):  # a bucket's folder: its records, not its images, come down
        found = asyncio.run(remote_folders.report(args.job_dir, os.environ))
        _summary(args, found, args.job_dir)
        return exit_code(found)
    report = reopen.derive_again(args.job_dir, record.read(args.job_dir))
    gallery.write(args.job_dir, report, cards.from_folder(args.job_dir, report))
    _summary(args, report, args.job_dir)
    return exit_code(report)


def _summary(args: argparse.Namespace, report: record.Report, folder: Path | str) -> None:
    """A job's summary on stdout; in JSON mode, its ``job_summary`` event instead."""
    if args.log_format == "json":
        logs.job_finished(report, str(folder), exit_code(report), event="job_summary")
    elif not args.quiet:
        print("\n".join(summary_lines(report, str(folder))))


def _merge(args: argparse.Namespace) -> int:
    urls = [f for f in [*args.folders, args.output] if isinstance(f, str)]
    if urls and len(urls) != len(args.folders) + 1:
        raise UsageError("merge: bucket folders need a bucket --output, local folders a local one")
    if urls:
        report, where = asyncio.run(remote_folders.merge_shards(args.folders, args.output, os.environ))
    else:
        report, folder, _ = merge.merge(args.folders, args.output)
        where = str(folder)
    if report.missing_shards:
        log.warning("shards %s are missing from the merge", ", ".join(report.missing_shards))
    _summary(args, report, where)
    return exit_code(report)


def _simulator(args: argparse.Namespace) -> int:
    from batchgen.sim.simulator import (
        serve_forever,  # aiohttp's server: only this command and --simulate need it
    )

    cfg = simulator_config(args, "", port=args.port)

    def ready(message: str) -> None:
        if args.log_format == "json":
            message = orjson.dumps({"event": "simulator_ready", "message": message}).decode()
        print(message, flush=True)

    asyncio.run(serve_forever(cfg, ready))
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    from batchgen.manifest import schema

    sys.stdout.write(schema.text())
    return EXIT_OK


def _completion(args: argparse.Namespace) -> int:
    import shtab

    sys.stdout.write(shtab.complete(arguments.parser(), shell=args.shell))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "retry": _retry,
    "redo": _redo,
    "validate": _validate,
    "report": _report,
    "merge": _merge,
    "simulator": _simulator,
    "schema": _schema,
    "completion": _completion,
}
