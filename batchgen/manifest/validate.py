"""A manifest file, validated into item specs: every mistake found, none sent (docs/manifest.md).

``load`` reads the sections (``read``), checks each field and item, defaults applied (``check``,
``defaults``), and raises one ManifestError with every problem. The package exports it with the
public types of ``spec`` (``from batchgen import manifest``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from batchgen.errors import ManifestError
from batchgen.manifest import chains, check, read
from batchgen.manifest.loader import read_yaml
from batchgen.manifest.problems import Problems
from batchgen.manifest.spec import Manifest, Sources


def load(path: Path) -> Manifest:
    """Read and validate the manifest at ``path``; ManifestError lists every problem."""
    problems, sources = Problems(str(path)), Sources()
    sources.sign(path)  # before reading it: an edit made while it is read is not taken for it
    data = read_yaml(path)
    # The steps run in the order their messages are listed: header, defaults, items, clashes, chains.
    header = read.header(data, path, problems, sources)
    levels = check.LevelChecker(header, problems, sources)
    defaults = levels.defaults(read.section(data, "defaults", problems))
    item_checker = check.ItemChecker(levels, defaults, header.api)
    checked = [
        found
        for entry in read.items(data, path.parent, problems, sources)
        if (found := item_checker.check(entry)) is not None
    ]
    check.clashes(checked, problems)
    roots, shape = chains.check(checked, problems)
    if problems.errors:
        raise ManifestError(problems.errors)
    specs = tuple(spec for spec, _ in checked)
    return dataclasses.replace(
        header,
        items=specs,
        warnings=problems.warnings(),
        sources=sources.signed(),
        chain_roots=roots,
        chains=shape,
    )


def load_header(path: Path) -> Manifest | None:
    """The manifest without its items (job, api, limits, prices): what a run needs before it knows
    whether the items must be expanded at all. None if the header has a problem (``load`` says which)."""
    problems = Problems(str(path))
    header = read.header(read_yaml(path), path, problems, Sources())
    return None if problems.errors else header
