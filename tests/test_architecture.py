"""The shape of the package: what each command loads, how big its parts may grow, and that the
relay's facts stay in their one module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import batchgen
from batchgen import relay

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


def _relay_facts() -> tuple[list[re.Pattern[str]], set[str]]:
    """What gives a relay fact away in a string: patterns to search for, and values to equal."""
    words = [
        *relay.MODELS,
        relay.REFERENCE_KEY,
        *relay.NO_CREDIT,
        *(said.message for said in (*relay.ANSWERS.values(), relay.NO_CHANNEL)),
        *relay.RATE_LIMIT_WORDS.values(),
    ]
    # A message the relay fills in is known by its words before the first blank.
    found = [re.compile(re.escape(word.split("{")[0]), re.IGNORECASE) for word in words]
    reasons = (*relay.GEMINI_REFUSALS, *relay.GEMINI_NO_IMAGE)
    found.append(re.compile("|".join(rf"(?<![A-Za-z_]){reason}(?![A-Za-z_])" for reason in reasons)))
    return found, {*relay.SIZES, *relay.ASPECT_RATIOS, *relay.EXTREME_RATIOS}


def escaped_facts(source: str) -> list[str]:
    """The strings in ``source`` (docstrings and f-strings too) that spell out one of the relay's
    facts: a model, the reference key, a message it sends or a reason it passes on, a size or ratio."""
    patterns, values = _relay_facts()
    return [
        f"line {node.lineno}: {node.value[:60]!r}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value in values or any(p.search(node.value) for p in patterns))
    ]


@pytest.mark.parametrize(
    "source",
    [
        'MODEL = "nano-banana-pro"',
        'def f(x):\n    """Sends extra_fields.reference_images."""',
        'WORDS = "finishReason=IMAGE_SAFETY"',
        'f"{x} 额度不足"',
        'RATIO = "16:9"',
        'SIZE = "1024x1792"',
        '("no base64 image found in response", 1)',
        'LIMIT = "您已达到请求数限制：3分钟内最多请求5次"',  # noqa: RUF001
    ],
)
def test_the_fact_check_finds_a_relay_fact_in_any_string(source: str) -> None:
    assert len(escaped_facts(source)) == 1


def test_the_fact_check_leaves_other_strings_alone() -> None:
    assert escaped_facts('"""A safety filter said no; the key ran out of quota."""\nX = "2K 16:9"') == []


def test_the_relays_facts_are_written_in_batchgen_relay_only() -> None:
    package = Path(batchgen.__file__).parent
    escaped = {
        path.relative_to(package).as_posix(): found
        for path in sorted(package.rglob("*.py"))
        if path != package / "relay.py" and (found := escaped_facts(path.read_text(encoding="utf-8")))
    }
    assert escaped == {}, "a new model or relay should touch batchgen/relay.py only: read these from it"
