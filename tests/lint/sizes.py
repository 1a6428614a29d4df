"""`make lint`: a report of the modules and classes past their size, a prompt to look.

A module past ~400 lines or a class past ~150 may hold two concepts; it is split where it does,
never to fit a number, so this report prints and never fails. The ~60-line function cap is the
one a test enforces (``tests/test_architecture.py``, with ``too_long``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import batchgen

PACKAGE = Path(batchgen.__file__).parent
LIMITS = {"module": 400, "class": 150, "function": 60}


def measure() -> Iterator[tuple[str, str, int]]:
    """(kind, where, lines) of every module, class and function in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE.parent).as_posix()
        yield "module", where, len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                yield kind, f"{where}:{node.lineno}: {node.name}", lines


def too_long(*kinds: str) -> list[str]:
    return [
        f"{where} is {lines} lines (a {kind}: ~{LIMITS[kind]})"
        for kind, where, lines in measure()
        if kind in kinds and lines > LIMITS[kind]
    ]


def main() -> None:
    found = too_long("module", "class")
    print(f"sizes: {len(found) or 'no'} module or class past its size, to look at" + (":" if found else ""))
    for line in found:
        print(f"  {line}")


if __name__ == "__main__":
    main()
