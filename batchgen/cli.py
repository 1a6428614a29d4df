"""The command line: parse, set up logging, call the library, turn the result into an exit code."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, config, estimate, jobs, logs, merge, shard
from .errors import JobLockedError, ManifestError, StoreError, UsageError
from .manifest import Manifest
from .outcomes import Event, JobStatus
from .progress import ProgressBar, TqdmLogHandler
from .report import summary_lines
from .resume import Mode
from .simulator import ALL_FAULTS, TRANSIENT_FAULTS, SimulatorConfig, serve_forever

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger("batchgen")

EXIT_HELP = """exit status:
  0    every item succeeded or was already done
  1    some items failed or never finished
  2    invalid manifest or usage: nothing was sent
  3    aborted: the API key was refused, a budget was reached, the service kept
       failing, or another run holds the job folder
  130  interrupted by Ctrl-C (SIGINT); 143 by SIGTERM
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        result: int = args.handler(args)
        return result
    except ManifestError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"batchgen: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (JobLockedError, StoreError) as exc:
        print(f"batchgen: error: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    except KeyboardInterrupt:
        print("batchgen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Turn YAML manifests into generated images, with a classified report of every failure.",
    )
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="generate the images of one or more manifests",
        description="Generate what the manifests still need: items already done with the same"
        " request are skipped. All manifests are validated before any is sent.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "manifests",
        nargs="+",
        type=Path,
        metavar="MANIFEST|DIR",
        help="manifest files, or folders whose *.yaml/*.yml manifests run in name order (not recursive)",
    )
    run.add_argument("--output", type=Path, metavar="DIR", help="output folder (default ./output)")
    run.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="run the K-th of N disjoint slices (stable hash of the id)",
    )
    which = run.add_mutually_exclusive_group()
    which.add_argument(
        "--only-failed", action="store_true", help="send only pending items and retryable failures"
    )
    which.add_argument(
        "--all-failed",
        action="store_true",
        help="like --only-failed, and resend refusals and invalid requests",
    )
    which.add_argument("--force", action="store_true", help="regenerate every item, done or not")
    _sending_flags(run)
    run.set_defaults(handler=_run)

    retry = commands.add_parser(
        "retry",
        help="resend the failed and unfinished items of an output folder",
        description="Resend the pending items and retryable failures of a job, from its output"
        " folder; successes are never sent again.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    retry.add_argument("job_dir", type=Path, metavar="OUTPUT_JOB_DIR")
    retry.add_argument("--all-failed", action="store_true", help="also resend refusals and invalid requests")
    _sending_flags(retry)
    retry.set_defaults(handler=_retry)

    validate = commands.add_parser("validate", help="check manifests and estimate cost; sends nothing")
    validate.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST|DIR")
    validate.add_argument("--prices", type=Path, metavar="FILE", help="price table for the estimate")
    _logging_flags(validate)
    validate.set_defaults(handler=_validate)

    merge_cmd = commands.add_parser(
        "merge",
        help="merge the shard folders of a job into one job folder",
        description="Merge shard folders (shard-K-of-N, or job folders holding them) into OUTPUT/<job>:"
        " images, sidecars, journal and one report.json.",
    )
    merge_cmd.add_argument("folders", nargs="+", type=Path, metavar="OUTPUT_JOB_DIR")
    merge_cmd.add_argument(
        "--output", type=Path, default=Path("output"), metavar="DIR", help="default ./output"
    )
    _logging_flags(merge_cmd)
    merge_cmd.set_defaults(handler=_merge)

    simulator = commands.add_parser("simulator", help="run the built-in simulator alone, on 127.0.0.1")
    simulator.add_argument(
        "--port", type=int, default=8787, metavar="N", help="port to listen on (default 8787; 0 = any)"
    )
    _simulator_flags(simulator, prefix="")
    _logging_flags(simulator)
    simulator.set_defaults(handler=_simulator)
    return parser


def _sending_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--simulate", action="store_true", help="send to the built-in simulator; no key needed"
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API base URL (env {config.BASE_URL_ENV}; default {config.DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--concurrency", type=_limit("concurrency"), metavar="N", help="requests in flight at once"
    )
    parser.add_argument(
        "--rpm", type=_limit("requests_per_minute"), metavar="N", help="requests per minute for the whole job"
    )
    parser.add_argument(
        "--max-attempts", type=_limit("max_attempts"), metavar="N", help="attempts per item, retries included"
    )
    parser.add_argument("--max-failures", type=_positive(int), metavar="N", help="stop after N failed items")
    parser.add_argument(
        "--max-cost", type=_positive(float), metavar="X", help="stop before the estimated spend passes X"
    )
    parser.add_argument(
        "--prices", type=Path, metavar="FILE", help="price table for estimates and --max-cost"
    )
    _logging_flags(parser)
    _simulator_flags(parser.add_argument_group("simulator (with --simulate)"), prefix="sim-")


def _logging_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    group.add_argument("--verbose", "-v", action="count", default=0, help="more log lines (-vv: debug)")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per line and per event, for log collectors",
    )


def _simulator_flags(parser: Any, prefix: str) -> None:
    add = parser.add_argument
    add(f"--{prefix}latency-ms", type=float, metavar="MS", help="delay before each answer")
    add(f"--{prefix}fault-rate", type=float, metavar="F", help="share of requests that fail, 0 to 1")
    add(
        f"--{prefix}faults",
        metavar="KINDS",
        help=f"fault kinds to draw from, comma-separated (default {','.join(TRANSIENT_FAULTS)};"
        f" all: {','.join(ALL_FAULTS)})",
    )
    add(f"--{prefix}seed", type=int, metavar="S", help="fault seed, for reproducible runs")
    add(f"--{prefix}payload-kb", type=int, metavar="KB", help="pad each image to about this size")


def _shard(text: str) -> tuple[int, int]:
    try:
        return shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    return parse


def _limit(name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            number = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
        value, error = config.check_limit(name, int(number) if number.is_integer() else number)
        if error:
            raise argparse.ArgumentTypeError(error)
        return value

    return parse


def _simulator_config(args: argparse.Namespace, prefix: str, **extra: Any) -> SimulatorConfig:
    given = {
        "latency_ms": getattr(args, f"{prefix}latency_ms"),
        "fault_rate": getattr(args, f"{prefix}fault_rate"),
        "seed": getattr(args, f"{prefix}seed"),
        "payload_kb": getattr(args, f"{prefix}payload_kb"),
    }
    faults = getattr(args, f"{prefix}faults")
    if faults is not None:
        given["faults"] = tuple(f.strip() for f in faults.split(",") if f.strip())
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
    handler.setFormatter(
        logs.JsonFormatter() if as_json else logging.Formatter("batchgen: %(levelname)s: %(message)s")
    )
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _show_progress(args: argparse.Namespace) -> bool:
    sending = args.handler in (_run, _retry)
    return sending and not args.quiet and args.log_format == "text" and sys.stderr.isatty()


def _run(args: argparse.Namespace) -> int:
    mode = Mode.ALL_FAILED if args.all_failed else Mode.ONLY_FAILED if args.only_failed else Mode.RUN
    if args.force:
        mode = Mode.FORCE
    return _send(args, jobs.load_all(manifest_paths(args.manifests)), _options(args, args.output, mode))


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
    job, options = jobs.load_for_retry(args.job_dir, _options(args, None, mode))
    return _send(args, [job], options)


def _options(args: argparse.Namespace, output: Path | None, mode: Mode) -> jobs.RunOptions:
    given = {
        "concurrency": args.concurrency,
        "max_attempts": args.max_attempts,
        "requests_per_minute": args.rpm,
    }
    limits = {k: v for k, v in given.items() if v is not None}
    return jobs.RunOptions(
        overrides=config.Overrides(args.base_url, output, limits, args.simulate),
        simulator=_simulator_config(args, "sim_"),
        mode=mode,
        max_failures=args.max_failures,
        max_cost=args.max_cost,
        shard=getattr(args, "shard", None),
        prices=args.prices,
    )


def _send(args: argparse.Namespace, manifests: list[Manifest], options: jobs.RunOptions) -> int:
    as_json = args.log_format == "json"
    done: list[tuple[jobs.JobOutput, int]] = []
    for job in manifests:
        progress = ProgressBar() if _show_progress(args) else None
        listeners = [f for f in (progress, logs.event_logger(job.job) if as_json else None) if f]
        try:
            output = asyncio.run(
                jobs.run_manifest(job, options, os.environ, on_event=_fan_out(listeners), handle_signals=True)
            )
        finally:
            if progress:
                progress.close()
        code = 128 + output.signal if output.signal is not None else exit_code(output.report)
        if as_json:
            logs.job_finished(output.report, str(output.folder), code)
        done.append((output, code))
        if output.signal is not None:
            break  # 130 for SIGINT, 143 for SIGTERM; the later manifests do not start
    if not args.quiet and not as_json:
        print(
            "\n".join(line for output, _ in done for line in summary_lines(output.report, str(output.folder)))
        )
        if len(done) > 1:
            statuses = ", ".join(f"{o.report['job']} {o.report['status']}" for o, _ in done)
            print(f"{len(done)} jobs: {statuses}")
    return max((code for _, code in done), key=_severity)


def _fan_out(listeners: list[Callable[[Event], None]]) -> Callable[[Event], None]:
    def on_event(event: Event) -> None:
        for listener in listeners:
            listener(event)

    return on_event


def exit_code(report: dict[str, Any]) -> int:
    if report["status"] == JobStatus.ABORTED.value:
        return EXIT_ABORTED
    return EXIT_OK if report["status"] == JobStatus.COMPLETED.value else EXIT_FAILED


def _severity(code: int) -> int:
    """How bad an exit code is: interrupted > aborted > failed > ok."""
    return {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_ABORTED: 2}.get(code, 3)


def _validate(args: argparse.Namespace) -> int:
    manifests = jobs.load_all(manifest_paths(args.manifests))
    for job in manifests:
        for warning in job.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if not args.quiet:
            prices = jobs.price_table(job, jobs.RunOptions(prices=args.prices))
            print("\n".join(estimate.describe(job, prices)))
    return EXIT_OK


def _merge(args: argparse.Namespace) -> int:
    report, folder = merge.merge(args.folders, args.output)
    if report.get("missing_shards"):
        log.warning("shards %s are missing from the merge", ", ".join(report["missing_shards"]))
    if not args.quiet:
        print("\n".join(summary_lines(report, str(folder))))
    return exit_code(report)


def _simulator(args: argparse.Namespace) -> int:
    cfg = _simulator_config(args, "", port=args.port)

    def ready(message: str) -> None:
        print(message, flush=True)

    asyncio.run(serve_forever(cfg, ready))
    return EXIT_OK
