"""The share of mutants the tests killed, per module, after `mutmut run` (`make mutation`).

Reads the modules from [tool.mutmut] only_mutate in pyproject.toml and mutmut's verdicts from
mutants/<module>.meta; prints module, killed, total and percent, then every mutant that lived
(`mutmut show NAME` shows its diff). Exits 1 if a module is under the threshold or has no
results, so that a module left out of a run cannot pass by saying nothing.

A timeout counts as killed (the mutant made the tests hang, and they were stopped), as in
mutmut's own score; a skipped mutant counts for nothing. "no tests" (no selected test even
reaches the mutated function) and "not checked" (the run was cut short) count as alive.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[2]
CAUGHT = {"killed", "timeout", "caught by type check"}


def modules(root: Path) -> list[str]:
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def verdicts(root: Path, module: str) -> dict[str, str] | None:
    """Each mutant's status in ``module``, or None when mutmut left no results for it."""
    meta = root / "mutants" / f"{module}.meta"
    try:
        data = json.loads(meta.read_text())
    except FileNotFoundError:
        return None
    return {name: status_by_exit_code[code] for name, code in data["exit_code_by_key"].items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=85.0, help="lowest passing percent (85)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project folder (where mutants/ is)")
    args = parser.parse_args(argv)

    rows: list[tuple[str, int, int, float | None]] = []
    alive: list[tuple[str, str]] = []
    failing: list[str] = []
    for module in modules(args.root):
        found = verdicts(args.root, module)
        if not found:
            rows.append((module, 0, 0, None))
            failing.append(f"{module}: no results (run `mutmut run` first)")
            continue
        counts = Counter(found.values())
        total = len(found) - counts["skipped"]
        killed = sum(counts[status] for status in CAUGHT)
        percent = 100.0 * killed / total if total else 100.0
        rows.append((module, killed, total, percent))
        alive += sorted(
            (name, status) for name, status in found.items() if status not in CAUGHT | {"skipped"}
        )
        if percent < args.threshold:
            failing.append(f"{module}: {percent:.1f}% killed, under {args.threshold:g}%")

    width = max(len(module) for module, *_ in rows)
    print(f"{'module':<{width}}  {'killed':>6}  {'total':>5}  {'percent':>7}")
    for module, killed, total, percent in rows:
        shown = "-" if percent is None else f"{percent:.1f}%"
        print(f"{module:<{width}}  {killed:>6}  {total:>5}  {shown:>7}")
    killed_all = sum(r[1] for r in rows)
    total_all = sum(r[2] for r in rows)
    if total_all:
        print(f"{'all':<{width}}  {killed_all:>6}  {total_all:>5}  {100.0 * killed_all / total_all:>6.1f}%")
    if alive:
        print(f"\n{len(alive)} mutant(s) not killed (`mutmut show NAME` shows one):")
        for name, status in alive:
            print(f"  {name}  [{status}]")
    if failing:
        print("\nFAILED:\n  " + "\n  ".join(failing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
