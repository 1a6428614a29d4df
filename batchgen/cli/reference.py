"""The command-line reference in docs/cli.md, made from the parser's own ``--help``.

``python -m batchgen.cli.reference docs/cli.md`` rewrites the part of the page between the two
markers; a test fails when the page and ``--help`` disagree, so the reference cannot drift.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from batchgen.cli.arguments import parser

BEGIN = "<!-- reference: made by `python -m batchgen.cli.reference docs/cli.md`; do not edit below -->"
END = "<!-- end of reference -->"
WIDTH = "100"  # columns argparse wraps at here, whatever the terminal of whoever regenerates it


def commands() -> list[str]:
    """The subcommands, in the order ``batchgen --help`` lists them."""
    for action in parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parser().parse_args([*argv, "--help"])
    return out.getvalue().rstrip() + "\n"


@contextlib.contextmanager
def _columns() -> Iterator[None]:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def reference() -> str:
    """Every command's ``--help``, as a markdown section each, between the markers."""
    with _columns():
        sections = [("batchgen", _help([]))] + [(f"batchgen {c}", _help([c])) for c in commands()]
    body = "".join(f"\n### `{title}`\n\n```\n{text}```\n" for title, text in sections)
    return f"{BEGIN}\n{body}\n{END}\n"


def page_with_reference(page: str) -> str:
    """``page`` with its reference replaced by the current one (appended if it has none)."""
    head, _, rest = page.partition(BEGIN)
    tail = rest.partition(END)[2].lstrip("\n") if rest else ""
    return head.rstrip("\n") + "\n\n" + reference() + (f"\n{tail}" if tail else "")


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/cli.md")
    path.write_text(page_with_reference(path.read_text()))


if __name__ == "__main__":
    main()
