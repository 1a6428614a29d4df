"""Items that reference other items (``@ID``): checked as a graph, and each chain named by its root.

An unknown id, a ``#K`` beyond that item's ``n``, an item referencing itself and a cycle are errors
naming file, item and field. What is left is a forest of chains; each item in one is given the
smallest root id of the items it is connected to (``Manifest.chain_roots``), so that ``--shard``
never cuts a chain (docs/chains.md).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence

from batchgen.manifest.catalog import Origin
from batchgen.manifest.problems import Problems
from batchgen.manifest.references import ItemReference
from batchgen.manifest.spec import ChainShape, ItemSpec

Checked = tuple[ItemSpec, Origin]


def check(checked: Sequence[Checked], problems: Problems) -> tuple[dict[str, str], ChainShape]:
    """The chain root of each item in a chain, and the chains' shape; every bad item reference
    reported (then nothing else is worked out)."""
    by_id = {spec.id: spec for spec, _ in checked}
    edges: dict[str, tuple[str, ...]] = {}
    for spec, where in checked:
        if spec.references and spec.parents:
            edges[spec.id] = _good_parents(spec, where, by_id, problems)
    if not edges:
        return {}, ChainShape(0, 0, 0)
    level = _walk(edges, {spec.id: where for spec, where in checked}, problems)
    if problems.errors:
        return {}, ChainShape(0, 0, 0)
    parents = {p for ps in edges.values() for p in ps}
    return chain_roots(edges), ChainShape(len(parents - edges.keys()), len(edges), max(level.values()))


def _good_parents(
    spec: ItemSpec, where: Origin, by_id: Mapping[str, ItemSpec], problems: Problems
) -> tuple[str, ...]:
    good: list[str] = []
    for k, ref in enumerate(spec.references):
        if not isinstance(ref, ItemReference):
            continue
        field = f"references[{k}]"
        parent = by_id.get(ref.item_id)
        if ref.item_id == spec.id:
            problems.error(f"{ref.written}: an item cannot reference its own image", field, where)
        elif parent is None:
            close = difflib.get_close_matches(ref.item_id, list(by_id), n=1)
            hint = f" (did you mean @{close[0]}?)" if close else ""
            message = f"{ref.written}: no item of this job has the id {ref.item_id!r}{hint}"
            problems.error(message, field, where)
        elif ref.k > parent.n:
            problems.error(
                f"{ref.written}: item {parent.id} makes {parent.n} image(s) (n: {parent.n});"
                " #K counts from 1",
                field,
                where,
            )
        else:
            good.append(ref.item_id)
    return tuple(dict.fromkeys(good))


def _walk(
    edges: Mapping[str, tuple[str, ...]], where: Mapping[str, Origin], problems: Problems
) -> dict[str, int]:
    """Each item's level in its chain (1: a root), in one depth-first pass that reports each
    cycle once, on its item first in the manifest, listed in order from it."""
    level: dict[str, int] = {}
    on_path: set[str] = set()
    for start in edges:
        if start in level:
            continue
        path: list[str] = [start]
        todo: list[Iterator[str]] = [iter(edges.get(start, ()))]
        on_path.add(start)
        while todo:
            parent = next(todo[-1], None)
            if parent is None:
                node = path.pop()
                on_path.discard(node)
                level[node] = 1 + max((level.get(p, 0) for p in edges.get(node, ())), default=0)
                todo.pop()
            elif parent in on_path:
                _cycle(path[path.index(parent) :], where, problems)
            elif parent not in level:
                on_path.add(parent)
                path.append(parent)
                todo.append(iter(edges.get(parent, ())))
    return level


def _cycle(cycle: list[str], where: Mapping[str, Origin], problems: Problems) -> None:
    first = min(cycle, key=lambda i: where[i].position)
    at = cycle.index(first)
    cycle_text = " -> ".join([*cycle[at:], *cycle[:at], first])
    problems.error(
        f"is in a cycle of references: {cycle_text} (each references the next)", "references", where[first]
    )


def chain_roots(edges: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Each item of a chain (acyclic ``edges``: dependent to parents), to the smallest root id of
    the items it is connected to."""
    up: dict[str, str] = {}

    def find(node: str) -> str:
        while up.setdefault(node, node) != node:
            up[node] = up[up[node]]
            node = up[node]
        return node

    for child, parents in edges.items():
        for parent in parents:
            a, b = find(child), find(parent)
            if a != b:
                up[max(a, b)] = min(a, b)
    best: dict[str, str] = {}
    for node in up:
        if node not in edges:  # a root: it references no item
            group = find(node)
            best[group] = min(best.get(group, node), node)
    return {node: best[find(node)] for node in up}


def descendants(items: Iterable[ItemSpec], ids: Iterable[str]) -> frozenset[str]:
    """The items that reference any of ``ids``, directly or through others (not ``ids`` themselves)."""
    children: dict[str, list[str]] = {}
    for item in items:
        for parent in item.parents:
            children.setdefault(parent, []).append(item.id)
    found: set[str] = set()
    todo = list(ids)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return frozenset(found - set(ids))
