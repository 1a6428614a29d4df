"""`make lint`: fail on any import cycle between batchgen's modules, and on any module imported
by its name in a string.

grimp (which import-linter runs on) builds the graph, imports under ``TYPE_CHECKING`` and inside
functions included. A module started by its name (``python -m batchgen.x`` from a subprocess, or
``importlib.import_module("batchgen.x")``) is an import that neither grimp nor the contracts see:
each is reported, and counted as an import in the search for cycles. Prints what it finds and
exits 1, or exits 0 saying there is none.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

import grimp

PACKAGE = "batchgen"
# Cycles accepted for now: none. An entry here would be (importer, imported).
KNOWN: set[tuple[str, str]] = set()


def module_name_strings(graph: grimp.ImportGraph, root: Path) -> Iterator[tuple[str, str]]:
    """(importer, imported) for each string literal in a module that names another module.

    Not a package's name: ``importlib.resources.files("batchgen.report")`` reads its data, and a
    package is imported with any of its modules anyway."""
    packages = {".".join(p.relative_to(root.parent).parent.parts) for p in root.rglob("__init__.py")}
    modules = graph.modules - packages
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        importer = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
                if name in modules and name != importer and name.startswith(f"{PACKAGE}."):
                    yield importer, name


def edges(graph: grimp.ImportGraph, root: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {m: set() for m in graph.modules if m.startswith(PACKAGE)}
    for module in found:
        found[module] |= {m for m in graph.find_modules_directly_imported_by(module) if m in found}
    for importer, imported in module_name_strings(graph, root):
        found[importer].add(imported)
    return found


def cycles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def main() -> int:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    root = Path(__import__(PACKAGE).__file__).parent
    by_name = sorted(set(module_name_strings(graph, root)) - KNOWN)
    for importer, imported in by_name:
        print(f"{importer} imports {imported} by its name in a string: import it", file=sys.stderr)
    found = [c for c in cycles(edges(graph, root)) if not any(set(c) == set(k) for k in KNOWN)]
    for component in found:
        print(f"import cycle: {' <-> '.join(component)}", file=sys.stderr)
    if found or by_name:
        return 1
    print("import cycles: none; modules imported by a name in a string: none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
