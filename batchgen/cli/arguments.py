"""The command line's words: subcommands, flags, and the checks on their values.

``cli`` decides what each command does; this module only says what may be typed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

from batchgen import __version__, config
from batchgen.cli import logs
from batchgen.errors import UsageError
from batchgen.outcomes import FLAGS
from batchgen.output.bucket import Location, is_url
from batchgen.plan import shard
from batchgen.sim.settings import (
    ALL_FAULTS,
    DROPPABLE_FIELDS,
    IMAGE_FORMATS,
    RATE_FORMS,
    RESPONSE_SHAPES,
    TRANSIENT_FAULTS,
)

EXIT_HELP = """exit status:
  0    every item succeeded or was already done
  1    some items failed or never finished
  2    invalid manifest or usage: nothing was sent
  3    aborted: the API key was refused, the credit ran out, a budget was reached,
       the service kept failing, or another run holds the job folder
  130  interrupted by Ctrl-C (SIGINT); 143 by SIGTERM
"""


# What shells complete for an argument (shtab's names): files, or folders.
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
FOLDER = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/", "tcsh": "d"}


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in batchgen's voice: ``batchgen: error: ...`` after the usage,
    or one JSON line when the command line asks for ``--log-format json``."""

    json_errors = False  # set by ``parse`` from the words typed, before they are parsed

    def error(self, message: str, usage: bool = True) -> NoReturn:
        if Parser.json_errors:
            sys.stderr.write(logs.json_line("error", {"event": "usage_error", "message": message}) + "\n")
        else:
            if usage:
                self.print_usage(sys.stderr)
            sys.stderr.write(f"batchgen: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


class _NoDryRun(argparse.Action):
    """``--dry-run``, which many type first: there is none, and what does that job is named."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        message = (
            "there is no --dry-run: `batchgen validate MANIFEST` checks the manifests and estimates"
            " the cost, sending nothing"
        )
        assert isinstance(parser, Parser)  # every subcommand's parser is one (add_subparsers' default)
        parser.error(message, usage=False)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, read. A redo's ids may come after its options too (argparse alone would
    take ``redo DIR --simulate a b`` for unknown arguments ``a b``)."""
    words = list(sys.argv[1:] if argv is None else argv)
    Parser.json_errors = any(
        w == "--log-format=json" or (w == "--log-format" and nxt == "json")
        for w, nxt in zip(words, [*words[1:], ""], strict=True)
    )
    root = parser()
    args, extra = root.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "redo" and not any(e.startswith("-") for e in extra):
        args.ids = [*args.ids, *extra]
    elif extra:
        root.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def parser() -> argparse.ArgumentParser:
    """Every command with its flags, in the order ``--help`` lists them."""
    root = Parser(
        prog="batchgen",
        description="Turn YAML manifests into generated images, with a classified report of every failure.",
    )
    root.add_argument("--version", action="version", version=f"batchgen {__version__}")
    commands = root.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for add in (
        _run_command,
        _retry_command,
        _redo_command,
        _validate_command,
        _report_command,
        _merge_command,
        _simulator_command,
        _schema_command,
        _completion_command,
    ):
        add(commands)
    return root


# argparse has no public name for what ``add_subparsers`` returns.
_Commands: TypeAlias = "argparse._SubParsersAction[Parser]"


def _output(text: str) -> Path | str:
    """A folder, or a bucket's URL (text: a Path would fold its ``//``)."""
    try:
        return str(Location.parse(text)) if is_url(text) else Path(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run_command(commands: _Commands) -> None:
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
    ).complete = FILE  # type: ignore[attr-defined]
    run.add_argument(
        "--output",
        type=_output,
        metavar="DIR|URL",
        help="output folder (default ./output), or a bucket: s3://bucket/prefix, gs://..., az://container/...",
    ).complete = FOLDER  # type: ignore[attr-defined]
    run.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="with a bucket --output: the local spool (default $BATCHGEN_WORK_DIR, ~/.cache/batchgen/spool)",
    ).complete = FOLDER  # type: ignore[attr-defined]
    run.add_argument(
        "--lock-lease",
        type=_positive(float),
        default=config.LOCK_LEASE_S,
        metavar="SECONDS",
        help=f"with a bucket --output: how long a dead run's lock lives (default {config.LOCK_LEASE_S:g})",
    )
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
    run.set_defaults(command="run")


def _retry_command(commands: _Commands) -> None:
    retry = commands.add_parser(
        "retry",
        help="resend the failed and unfinished items of an output folder",
        description="Resend the pending items of a job, from its output folder, with its retryable"
        " failures and those the key or the credit caused (auth, quota_exhausted); fetch again the"
        " images whose links failed (download_failed), without making them again; send the items"
        " not sent because an item they reference failed (dependency_failed) once it has succeeded."
        " Successes are never sent again.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    retry.add_argument("job_dir", type=_output, metavar="OUTPUT_JOB_DIR|URL").complete = FOLDER  # type: ignore[attr-defined]
    retry.add_argument("--all-failed", action="store_true", help="also resend refusals and invalid requests")
    _work_dir_flag(retry)
    _manifest_flag(retry)
    _sending_flags(retry)
    retry.set_defaults(command="retry")


def _redo_command(commands: _Commands) -> None:
    redo = commands.add_parser(
        "redo",
        help="make again the images a reviewer rejected",
        description="Make again exactly the named items of a job, each with a fresh Idempotency-Key."
        " The image each replaces is kept in history/<id>.<version>.<ext>, never deleted; the journal"
        " and report record the new version. The items made from their images (@ID references) are made"
        " again after them, unless --no-dependents. Nothing else is sent. The gallery (report.html) hands"
        " out the list as redo.txt, or this command ready to copy; --flag names the items a check"
        " of what arrived flagged. A job folder in a bucket (s3://bucket/prefix/job) is redone in"
        " place, from any machine: the old images are copied into its history/ inside the store.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    redo.add_argument(
        "job_dir",
        type=_output,
        metavar="OUTPUT_JOB_DIR|URL",
        help="the job's output folder, or its folder in a bucket: s3://bucket/prefix/job, gs://..., az://...",
    ).complete = FOLDER  # type: ignore[attr-defined]
    redo.add_argument("ids", nargs="*", metavar="ID", help="the items to make again")
    redo.add_argument(
        "--ids-file",
        type=Path,
        metavar="FILE",
        help="a file of ids, one per line (blank lines and # comments ignored), as the gallery exports it",
    ).complete = FILE  # type: ignore[attr-defined]
    redo.add_argument(
        "--flag",
        action="append",
        choices=tuple(FLAGS),
        metavar="NAME",
        help=f"also the items flagged NAME ({', '.join(FLAGS)}: an image smaller than its class or of"
        " another shape than asked); repeat for more",
    )
    redo.add_argument(
        "--no-dependents",
        action="store_true",
        help="do not make again the items made from these images (@ID references); they are then"
        " stale, and the next run makes them",
    )
    _work_dir_flag(redo)
    _manifest_flag(redo)
    _sending_flags(redo)
    redo.set_defaults(command="redo")


def _work_dir_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="with a bucket's job folder: the local spool"
        " (default $BATCHGEN_WORK_DIR, ~/.cache/batchgen/spool)",
    ).complete = FOLDER  # type: ignore[attr-defined]


def _validate_command(commands: _Commands) -> None:
    validate = commands.add_parser("validate", help="check manifests and estimate cost; sends nothing")
    validate.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST|DIR").complete = FILE  # type: ignore[attr-defined]
    validate.add_argument(
        "--prices", type=Path, metavar="FILE", help="price table for the estimate"
    ).complete = FILE  # type: ignore[attr-defined]
    validate.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="where the run writes (default ./output): the job folder's remembered rate limit is shown,"
        " and how many dependents are stale",
    ).complete = FOLDER  # type: ignore[attr-defined]
    validate.add_argument(
        "--shard", type=_shard, metavar="K/N", help="show the rate one of N shards would run at"
    )
    _logging_flags(validate)
    validate.set_defaults(command="validate")


def _report_command(commands: _Commands) -> None:
    report_cmd = commands.add_parser(
        "report",
        help="print a job's summary, make the thumbnails and variants a run left unmade, and rebuild"
        " its report.html from report.json",
    )
    report_cmd.add_argument("job_dir", type=_output, metavar="OUTPUT_JOB_DIR|URL").complete = FOLDER  # type: ignore[attr-defined]
    _logging_flags(report_cmd)
    report_cmd.set_defaults(command="report")


def _merge_command(commands: _Commands) -> None:
    merge_cmd = commands.add_parser(
        "merge",
        help="merge the shard folders of a job into one job folder",
        description="Merge shard folders (shard-K-of-N, or job folders holding them) into OUTPUT/<job>:"
        " images, sidecars, journal and one report.json.",
    )
    merge_cmd.add_argument("folders", nargs="+", type=_output, metavar="OUTPUT_JOB_DIR|URL").complete = FOLDER  # type: ignore[attr-defined]
    merge_cmd.add_argument(
        "--output",
        type=_output,
        default=Path("output"),
        metavar="DIR|URL",
        help="default ./output; a bucket (s3://bucket/prefix) when the shard folders are in one",
    ).complete = FOLDER  # type: ignore[attr-defined]
    _logging_flags(merge_cmd)
    merge_cmd.set_defaults(command="merge")


def _simulator_command(commands: _Commands) -> None:
    simulator = commands.add_parser("simulator", help="run the built-in simulator alone, on 127.0.0.1")
    simulator.add_argument(
        "--port", type=int, default=8787, metavar="N", help="port to listen on (default 8787; 0 = any)"
    )
    _simulator_flags(simulator, prefix="")
    _logging_flags(simulator)
    simulator.set_defaults(command="simulator")


def _schema_command(commands: _Commands) -> None:
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of a manifest, for editors",
        description="Print the JSON Schema of a manifest (draft 2020-12), made from the same tables the"
        " validator checks. Save it and point your editor at it, e.g. with a first line"
        " `# yaml-language-server: $schema=manifest.schema.json` in each manifest.",
    )
    _logging_flags(schema)
    schema.set_defaults(command="schema")


def _completion_command(commands: _Commands) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for batchgen's commands, flags and their files."
        ' bash: `eval "$(batchgen completion bash)"` in ~/.bashrc; zsh: `batchgen completion zsh >'
        ' "${fpath[1]}/_batchgen"`, then start a new shell.',
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    _logging_flags(completion)
    completion.set_defaults(command="completion")


def _manifest_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="the job's manifest, when it is no longer where the job folder says (moved or copied)",
    ).complete = FILE  # type: ignore[attr-defined]


def _sending_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--simulate", action="store_true", help="send to the built-in simulator; no key needed"
    )
    parser.add_argument("--dry-run", nargs=0, action=_NoDryRun, help=argparse.SUPPRESS)
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API base URL (env {config.BASE_URL_ENV}; default {config.DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--concurrency", type=_limit("concurrency"), metavar="N", help="requests in flight at once"
    )
    parser.add_argument(
        "--rpm",
        type=_limit("requests_per_minute"),
        metavar="N",
        help="requests per minute for this run, retries included (with --shard: this shard's own,"
        " where the manifest's requests_per_minute is split between the shards)",
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
    ).complete = FILE  # type: ignore[attr-defined]
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
    add(
        f"--{prefix}response",
        choices=RESPONSE_SHAPES,
        help="answer with b64_json, an inline data: URI in url, or a link (default: as response_format asks)",
    )
    add(
        f"--{prefix}image-format",
        choices=IMAGE_FORMATS,
        help="answer with PNG, JPEG (as Gemini may), or alternate: each prompt's first take PNG,"
        " its next JPEG (default png)",
    )
    add(
        f"--{prefix}max-body-mb",
        type=float,
        metavar="MB",
        help="answer 413 to a larger request body, as the proxy in front of a relay does",
    )
    add(
        f"--{prefix}drop-fields",
        metavar="FIELDS",
        help=f"answer as a relay that loses these fields ({','.join(DROPPABLE_FIELDS)}): Gemini then"
        " makes its default, 1K and square",
    )
    add(
        f"--{prefix}rate-limit",
        type=int,
        metavar="M",
        help="answer as new-api's rate limit does: 429 with the limit in words, no Retry-After,"
        " over M requests in the rate window",
    )
    add(f"--{prefix}rate-window-ms", type=float, metavar="MS", help="the rate limit's window (default 60000)")
    add(
        f"--{prefix}rate-form",
        choices=RATE_FORMS,
        help="success: count successful requests as they finish (default);"
        " total: every request, failures included",
    )
    add(
        f"--{prefix}rate-headers",
        action="store_const",
        const=True,
        help="send x-ratelimit-limit/remaining/reset-requests on every answer, as OpenAI-style gateways do",
    )


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
