"""Installing and operating batchgen as a tool: the source distribution, completion, the schema
command, and the pinned dependencies that `make` installs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from importlib import resources
from pathlib import Path

import pytest

import batchgen
from batchgen.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_distribution_is_not_named_like_someone_elses_project() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert project["name"] == "batchgen-images"  # `batchgen` on the package index is another project
    assert project["scripts"] == {"batchgen": "batchgen.cli.main:main"}
    assert "License :: OSI Approved :: MIT License" in project["classifiers"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    version = project["version"]
    assert batchgen.__version__ == version  # what --version and the User-Agent say
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()


def test_every_dependency_is_pinned_and_make_installs_with_the_pins() -> None:
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    project = pyproject()["project"]
    assert isinstance(project, dict)
    wanted = [
        *project["dependencies"],
        *(d for extra in project["optional-dependencies"].values() for d in extra),
    ]
    names = {
        d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower().replace("_", "-")
        for d in wanted
    }
    assert names <= pins, f"not pinned: {sorted(names - pins)}; run `make constraints`"
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line and "-e" in line]
    assert installs
    assert all("-c $(CONSTRAINTS)" in line for line in installs), installs


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    return out / build.stdout.strip().splitlines()[-1]


def test_the_source_distribution_carries_what_its_tests_need_and_nothing_else(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}

    for needed in (
        "tests/conftest.py",
        "tests/fakes.py",
        "tests/test_fields.py",
        "jobs/demo.yaml",
        "jobs/refs/tote-bag.png",
        "constraints.txt",
        "LICENSE",
        "CHANGELOG.md",
        "batchgen/manifest/manifest.schema.json",
        "batchgen/report/gallery.html",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("output/", ".venv/")) or "__pycache__" in n]


def test_tests_run_from_the_unpacked_source_distribution(sdist: Path, tmp_path: Path) -> None:
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_fields.py",
            "tests/test_examples.py",
            # The demo itself is the suite's slowest test, and the copy in this tree already runs
            # it: from the sdist, the manifests, README and Makefile it reads are what matters.
            "--deselect",
            "tests/test_examples.py::test_the_readme_demo_prints_what_the_readme_shows",
        ],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert " passed" in run.stdout
    assert " skipped" not in run.stdout  # a file the tests need, missing from the sdist


def completion(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def test_bash_completion_completes_commands_and_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "batchgen.bash"
    script.write_text(completion("bash", capsys))

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1};"
            f' COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; _shtab_batchgen; printf "%s\\n" "${{COMPREPLY[@]}}"'
        )
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30, check=True)
        return sorted(done.stdout.split())

    assert complete("batchgen", "re") == ["redo", "report", "retry"]
    assert {"--ids-file", "--simulate", "--max-cost"} <= set(complete("batchgen", "redo", "--"))
    assert "--dry-run" not in complete("batchgen", "run", "--")  # only there to point at validate


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed on this machine")
def test_zsh_completion_is_a_script_zsh_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "_batchgen"
    script.write_text(completion("zsh", capsys))
    assert subprocess.run(["zsh", "-n", str(script)], timeout=30, check=False).returncode == 0


def test_zsh_completion_names_the_command_and_its_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    script = completion("zsh", capsys)
    assert script.startswith("#compdef batchgen")
    for command in ("run", "retry", "redo", "validate", "report", "merge", "schema", "completion"):
        assert f"\n    {command}:" in script, command
    assert "--dry-run" not in script


def test_the_schema_command_prints_the_schema_the_package_ships(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    shipped = resources.files("batchgen.manifest").joinpath("manifest.schema.json").read_text()
    assert capsys.readouterr().out == shipped
