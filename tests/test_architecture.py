"""The shape of the package: what each command loads, and how big its parts may grow."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .lint import cycles as import_check
from .lint import sizes


def _loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_only_the_commands_that_run_the_simulator_load_it() -> None:
    loaded = _loaded_after(
        "import contextlib, io\n"
        "from batchgen.cli.main import main\n"
        "from batchgen.job import jobs\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['run', '--help'])"
    )
    assert "batchgen.job.jobs" in loaded
    assert "batchgen.sim.simulator" not in loaded
    assert "aiohttp.web" not in loaded


# A function past ~60 lines is two things (docs/development.md); modules and classes past their
# size are reported by `make lint` (tests/lint/sizes.py), a prompt to look rather than a failure.
def test_no_function_outgrows_one_job() -> None:
    assert sizes.too_long("function") == []


def test_the_size_report_names_what_outgrew_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sizes.LIMITS, "module", 10)
    monkeypatch.setitem(sizes.LIMITS, "function", 1)
    assert "batchgen/cli/reference.py is " in "\n".join(sizes.too_long("module"))
    assert any(": main is " in line for line in sizes.too_long("function"))


def test_the_cycle_check_finds_every_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": set(), "f": {"f"}}
    assert import_check.cycles(graph) == [["a", "b", "c"], ["f"]]
    assert import_check.cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    assert import_check.main() == 0
