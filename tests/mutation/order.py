"""A pytest plugin for `make mutation` ([tool.mutmut] pytest_add_cli_args): each mutant's tests
run fastest first, by the durations mutmut recorded in its stats run, so that a caught mutant
stops (mutmut runs with ``-x``) at the first cheap test that catches it instead of after the
end-to-end ones. Without mutmut's stats (its first run), the order is pytest's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STATS = Path("mutmut-stats.json")  # mutmut runs the tests inside mutants/, where it keeps its stats


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    try:
        durations = json.loads(STATS.read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
