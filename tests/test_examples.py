"""Every example under jobs/ works: manifests validate and run, and every batchgen
command line in the deployment files parses and names manifests that exist."""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from batchgen.cli.arguments import parser as _parser
from batchgen.cli.main import main, manifest_paths
from batchgen.job import jobs
from batchgen.sim.simulator import Simulator

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "jobs" / "deploy"


def test_every_manifest_in_jobs_validates() -> None:
    manifests = jobs.load_all(manifest_paths([REPO / "jobs"]))
    assert sorted(m.job for m in manifests) == ["catalog", "demo"]


def readme_demo_output() -> list[str]:
    """The lines the README says `make demo` ends with."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("and ends with:\n\n```\n", 1)[1].split("```", 1)[0]
    return block.splitlines()


def makefile_demo_command() -> list[str]:
    """`make demo`'s batchgen command line, after `$(BIN)/batchgen`."""
    recipe = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1]
    (line,) = [line for line in recipe.splitlines() if "$(BIN)/batchgen run" in line][:1]
    return shlex.split(line.split("$(BIN)/batchgen", 1)[1])


def without_durations(line: str) -> str:
    return re.sub(r"in \d+\.\ds:", "in #s:", line)


@pytest.mark.timeout(240)  # the whole demo: 228 images, each with its thumbnail and variants
def test_the_readme_demo_prints_what_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(REPO / "jobs", tmp_path / "jobs", ignore=shutil.ignore_patterns("deploy"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCHGEN_BASE_URL", raising=False)
    command = makefile_demo_command()
    assert command[:2] == ["run", "jobs/"]

    # The same faults as `make demo` (each request's fate depends on the seed, its key and its
    # attempt, not on timing), without its latency.
    assert main([*command, "--sim-latency-ms", "0"]) == 0

    out, err = capsys.readouterr()
    assert err == ""  # the demo warns of nothing in its own files
    printed = [without_durations(line) for line in out.splitlines()]
    shown = [without_durations(line) for line in readme_demo_output()]
    assert len(shown) >= 8
    assert printed == shown
    report = orjson.loads((tmp_path / "output/catalog/report.json").read_bytes())
    assert report["counts"]["succeeded"] == 216
    hero = orjson.loads((tmp_path / "output/catalog/images/mug-1002-front-square.json").read_bytes())
    assert hero["request"]["extra_fields"]["reference_images"][0].startswith(
        "file:catalog/refs/mug-1002.png sha256:"
    )
    # Hero first: every other view of the product was sent its hero's image, as it is on disk.
    view = orjson.loads((tmp_path / "output/catalog/images/mug-1002-detail-portrait.json").read_bytes())
    assert view["request"]["extra_fields"]["aspect_ratio"] == "4:5"
    (hero_file,) = hero["files"]
    assert view["request"]["extra_fields"]["reference_images"] == [
        f"item:@mug-1002-front-square sha256:{hero_file['sha256']}"
    ]


def test_the_reference_key_check_makes_one_cheap_request_with_its_probe(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    (check,) = jobs.load_all([REPO / "jobs/check/reference-key.yaml"])
    (item,) = check.items
    assert (item.size, len(item.references)) == ("512", 1)  # the cheapest class, one reference
    sim = threaded_simulator(record_bodies=True)
    argv = ["run", str(check.path), "--base-url", sim.base_url, "--output", str(tmp_path), "-q"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BATCHGEN_API_KEY", "k")
        env.delenv("BATCHGEN_BASE_URL", raising=False)
        assert main(argv) == 0
    assert sim.stats.requests == 1
    assert sim.stats.references == {item.prompt: 1}  # read where the relay reads references


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers":
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _containers(value)


def _shell_words(script: str) -> list[str]:
    script = script.replace("$((JOB_COMPLETION_INDEX + 1))", "1").replace("${{ matrix.shard }}", "1")
    script = re.split(r"\s(?:>>|2>&1|\|)", script)[0]
    words = shlex.split(script)
    return words[1:] if words[0] == "exec" else words


def commands() -> Iterator[tuple[str, list[str]]]:
    """(file, argv after the batchgen program) for every batchgen invocation in jobs/deploy."""
    for path in sorted(DEPLOY.glob("kubernetes-*.yaml")):
        for container in _containers(yaml.safe_load(path.read_text())):
            argv = list(container.get("command", [])) + list(container.get("args", []))
            yield path.name, _shell_words(argv[2]) if argv[:2] == ["sh", "-c"] else argv
    workflow = yaml.safe_load((DEPLOY / "github-actions.yml").read_text())
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "batchgen" in step.get("run", ""):
                yield "github-actions.yml", _shell_words(step["run"])
    for line in (DEPLOY / "batchgen-nightly.service").read_text().splitlines():
        if line.startswith("ExecStart="):
            yield "batchgen-nightly.service", shlex.split(line.removeprefix("ExecStart="))
    for line in (DEPLOY / "crontab").read_text().splitlines():
        if line and not line.startswith("#"):
            invocation = re.search(r"\S*batchgen (?:run|merge|retry|validate)\b.*", line)
            assert invocation, line
            yield "crontab", _shell_words(invocation.group(0))


ALL = list(commands())


def test_every_deployment_file_is_covered() -> None:
    assert {name for name, _ in ALL} == {p.name for p in DEPLOY.iterdir()} - {"batchgen-nightly.timer"}
    assert (DEPLOY / "batchgen-nightly.timer").read_text().count("OnCalendar=") == 1


@pytest.mark.parametrize(("name", "argv"), ALL, ids=[f"{n}:{' '.join(a[:3])}" for n, a in ALL])
def test_deployment_commands_parse_and_name_real_manifests(name: str, argv: list[str]) -> None:
    program, *rest = argv
    assert Path(program).name == "batchgen", name
    args = _parser().parse_args(rest)  # exits (fails the test) on any unknown flag or bad value
    if args.command == "run":
        local = [REPO / str(p).removeprefix("/work/") for p in args.manifests]
        assert jobs.load_all(manifest_paths(local)), name


# --- docs/real-service.md: its commands parse, and what it quotes is what batchgen prints -----


def real_service_commands() -> Iterator[list[str]]:
    page = (REPO / "docs" / "real-service.md").read_text()
    for block in re.findall(r"```sh\n(.*?)```", page, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("batchgen "):
                yield shlex.split(line, comments=True)[1:]


def test_the_real_service_page_commands_parse() -> None:
    found = list(real_service_commands())
    assert len(found) >= 5
    for argv in found:
        args = _parser().parse_args(argv)
        for manifest in getattr(args, "manifests", []):
            assert (REPO / manifest).exists(), manifest


def test_the_real_service_page_quotes_what_batchgen_says() -> None:
    from batchgen.errors import RelayLimit
    from batchgen.outcomes import RateLimitLearned
    from batchgen.service.limits import stated_limit

    page = (REPO / "docs" / "real-service.md").read_text()
    readme = (REPO / "README.md").read_text()
    limit = RelayLimit(120, 60.0)
    said = f"batchgen: {RateLimitLearned(limit, limit).message()}"
    assert said in page
    assert said in readme
    assert "[docs/real-service.md](docs/real-service.md)" in readme
    for message in re.findall(r"`(您已达到[^`]*)`", page + readme):
        assert stated_limit(message) == limit
    assert f"the relay allows {limit.describe()} (learned" in page
