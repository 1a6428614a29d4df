"""The shape of the package: what each command loads, and how big its parts may grow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import batchgen

from .lint import cycles as import_check

PACKAGE = Path(batchgen.__file__).parent


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


# A class past ~150 lines or a function past ~60 is two things (docs/development.md).
CLASS_LINES, FUNCTION_LINES, MODULE_LINES = 150, 60, 400


def _too_big() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE.parent).as_posix()
        if len(text.splitlines()) > MODULE_LINES:
            found.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                limit = CLASS_LINES if isinstance(node, ast.ClassDef) else FUNCTION_LINES
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > limit:
                    found.append(f"{where}:{node.lineno}: {node.name} is {size} lines")
    return found


def test_no_module_class_or_function_outgrows_one_job() -> None:
    assert _too_big() == []


def test_the_cycle_check_finds_every_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": set(), "f": {"f"}}
    assert import_check.cycles(graph) == [["a", "b", "c"], ["f"]]
    assert import_check.cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    assert import_check.main() == 0
