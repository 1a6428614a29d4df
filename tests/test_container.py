"""The container image, as far as it can be checked where the base image cannot be pulled.

The Dockerfile is parsed and held to what it promises (a slim Python base, the wheel and not the
source tree, a non-root user, the entry point, the output volume, no secret). Its build stage's
files are copied as it copies them and built into a wheel the way it builds one; the wheel is
installed into a fresh virtualenv the way its runtime stage installs it, and that virtualenv's
`batchgen` validates and runs the demo. The deployment files in jobs/deploy name that image and
run it as its user with its volume.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "jobs" / "deploy"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
WHEEL_NAME = f"{re.sub(r'[-_.]+', '_', PROJECT['name']).lower()}-{VERSION}-py3-none-any.whl"

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


# --- the Dockerfile, read by dockerfile-parse ------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        if not self.args.startswith("["):
            return None
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None

    def flags_and_rest(self) -> tuple[list[str], str]:
        """The leading ``--flag=value`` words (RUN --mount, COPY --from ...) and what follows."""
        match = re.match(r"((?:--\S+\s+)*)(.*)", self.args, re.DOTALL)
        assert match
        return shlex.split(match.group(1)), match.group(2)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def workdir_at(self, instruction: Instruction) -> PurePosixPath:
        workdir = PurePosixPath("/")
        for i in self.instructions:
            if i is instruction:
                break
            if i.keyword == "WORKDIR":
                workdir = workdir / i.args.strip()
        return workdir


PARSED = DockerfileParser(str(DOCKERFILE)) if DOCKERFILE.is_file() else None


def parse() -> list[Instruction]:
    """The instructions, continued lines joined and comments dropped, as dockerfile-parse reads them."""
    return [
        Instruction(s["instruction"], s["value"], s["startline"] + 1)
        for s in (PARSED.structure if PARSED else [])
        if s["instruction"] != "COMMENT"
    ]


def stages(instructions: list[Instruction]) -> list[Stage]:
    found: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            found.append(Stage(words[0], name, []))
        else:
            assert found, f"line {instruction.line}: {instruction.keyword} before the first FROM"
            found[-1].instructions.append(instruction)
    return found


INSTRUCTIONS = parse()
STAGES = stages(INSTRUCTIONS)
FINAL = STAGES[-1] if STAGES else Stage("", None, [])
STAGE_NAMES = {s.name for s in STAGES if s.name}


def mounts(run: Instruction) -> list[dict[str, str]]:
    """The RUN --mount options, as dicts (type bind when not said)."""
    flags, _ = run.flags_and_rest()
    found = []
    for flag in flags:
        if flag.startswith("--mount="):
            found.append({"type": "bind"} | dict(part.split("=", 1) for part in flag[8:].split(",")))
    return found


def context_sources(stage: Stage) -> list[tuple[Instruction, str]]:
    """What the stage takes from the build context: COPY/ADD sources without --from, and RUN
    bind mounts without from=."""
    found = []
    for instruction in stage.instructions:
        if instruction.keyword in ("COPY", "ADD"):
            flags, rest = instruction.flags_and_rest()
            if any(flag.startswith("--from=") for flag in flags):
                continue
            words = Instruction(instruction.keyword, rest, instruction.line).exec_form() or shlex.split(rest)
            found += [(instruction, source) for source in words[:-1]]
        elif instruction.keyword == "RUN":
            found += [
                (instruction, m.get("source", m.get("src", ".")))
                for m in mounts(instruction)
                if m["type"] == "bind" and "from" not in m
            ]
    return found


def image_uid() -> int:
    """The uid the image runs as: its final USER, by number or by the name a RUN gave it."""
    users = FINAL.all("USER")
    assert users, "the final stage sets no USER: the image would run as root"
    user = users[-1].args.split(":")[0].strip()
    if user.isdigit():
        return int(user)
    if user == "root":
        return 0
    for run in FINAL.all("RUN"):
        created = re.search(rf"useradd\b[^&;|]*?(?:--uid|-u)[ =](\d+)[^&;|]*\b{re.escape(user)}\b", run.args)
        if created:
            return int(created.group(1))
    raise AssertionError(f"USER {user}: no RUN creates it with a uid")


# --- .dockerignore, as Docker reads it -------------------------------------------------------


def _pattern(text: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        elif text[i] == "[" and (end := text.find("]", i + 1)) > 0:
            body = text[i + 1 : end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]", end + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out)


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    path = REPO / ".dockerignore"
    rules = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        cleaned = str(PurePosixPath(line.removeprefix("!").strip().lstrip("/")))
        rules.append((keep, _pattern(cleaned)))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``relative`` out of the build context: the last pattern that
    matches it or a folder above it decides; ``!`` patterns put it back."""
    parts = PurePosixPath(relative).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for keep, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = not keep
    return verdict


# --- the Dockerfile's promises ---------------------------------------------------------------


def test_the_dockerfile_is_two_stages_from_a_slim_python_the_project_supports() -> None:
    assert INSTRUCTIONS, "no Dockerfile at the repo root"
    assert len(STAGES) >= 2, "a build stage, then the runtime stage"
    assert STAGES[0].name, "the build stage has a name for the runtime stage to take the wheel from"
    minimum = tuple(int(n) for n in re.findall(r"\d+", PROJECT["requires-python"])[:2])
    for stage in STAGES:
        if stage.base in STAGE_NAMES:
            continue
        base = re.fullmatch(
            r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?(?:@sha256:[0-9a-f]{64})?",
            stage.base,
        )
        assert base, f"FROM {stage.base}: not a slim official Python image"
        assert (int(base.group(1)), int(base.group(2))) >= minimum, (
            f"FROM {stage.base}: older than requires-python"
        )


def test_the_image_runs_batchgen_as_a_non_root_user_with_its_output_volume() -> None:
    user = FINAL.all("USER")[-1].args if FINAL.all("USER") else ""
    uid = image_uid()
    assert uid != 0
    assert user.split(":")[0].isdigit(), f"USER {user}: numeric, so that runAsNonRoot can check it"
    assert any(re.search(rf"useradd\b[^&;|]*(?:--uid|-u)[ =]{uid}\b", r.args) for r in FINAL.all("RUN")), (
        "the user has an entry in /etc/passwd"
    )
    assert [i.exec_form() for i in FINAL.all("ENTRYPOINT")][-1:] == [["batchgen"]]
    assert [i.exec_form() for i in FINAL.all("CMD")][-1:] == [["--help"]], (
        "exec form: appended to the entry point"
    )
    assert FINAL.workdir_at(FINAL.instructions[-1]) == PurePosixPath("/work")
    volumes = [v for i in FINAL.all("VOLUME") for v in (i.exec_form() or i.args.split())]
    assert "/work/output" in volumes
    # Docker starts a volume from the image's folder, with its owner: the user must be able to write it.
    assert any(
        re.search(rf"chown\s+(?:-R\s+)?{uid}\b[^&;|]*\s/work/output\b", r.args) for r in FINAL.all("RUN")
    )
    assert PARSED is not None
    env, labels = PARSED.envs, PARSED.labels  # the final stage's
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert labels["org.opencontainers.image.title"] == "batchgen"
    assert labels["org.opencontainers.image.version"] == VERSION
    license = PROJECT["license"] if isinstance(PROJECT["license"], str) else PROJECT["license"]["text"]
    assert labels["org.opencontainers.image.licenses"] == license == "MIT"
    assert "org.opencontainers.image.source" not in labels, "no public home yet (pyproject.toml)"


def test_the_runtime_stage_installs_the_built_wheel_not_the_source_tree() -> None:
    runs = [i for stage in STAGES for i in stage.all("RUN")]
    assert not [r.line for r in runs if re.search(r"pip\b.*\binstall\b.*\s(?:-e|--editable)\b", r.args)]
    installs = [r for r in FINAL.all("RUN") if re.search(r"\bpip\b.*\binstall\b", r.args)]
    wheels = [w for r in installs for w in re.findall(r"\S+\.whl\b", r.args)]
    assert len(wheels) == 1, "the runtime stage installs one wheel"
    wheel = PurePosixPath(wheels[0])
    assert PurePosixPath(WHEEL_NAME).match(wheel.name), f"{wheel.name} does not name {WHEEL_NAME}"
    # The wheel comes from the build stage, through a bind mount or a COPY --from.
    from_build = [
        PurePosixPath(m["target"])
        for r in installs
        for m in mounts(r)
        if m.get("from") in STAGE_NAMES and "target" in m
    ]
    for copy in FINAL.all("COPY"):
        flags, rest = copy.flags_and_rest()
        if any(flag.removeprefix("--from=") in STAGE_NAMES for flag in flags):
            from_build.append(PurePosixPath(shlex.split(rest)[-1]))
    assert any(wheel.is_relative_to(target) for target in from_build), f"{wheel}: not from the build stage"
    assert all(re.search(r"\s(?:-c|--constraint)[ =]\S*constraints\.txt\b", r.args) for r in installs)
    built = [r for r in STAGES[0].all("RUN") if re.search(r"\bpip\b.*\bwheel\b", r.args)]
    assert built, "the build stage builds the wheel with pip"
    assert all(re.search(r"\s(?:-c|--constraint)[ =]\S*constraints\.txt\b", r.args) for r in built)
    # Nothing of the source tree reaches the runtime stage: only the constraints, if anything.
    assert {source for _, source in context_sources(FINAL)} <= {"constraints.txt"}


def test_no_secret_is_baked_into_the_image() -> None:
    assert PARSED is not None
    names = {name for context in PARSED.context_structure for name in [*context.envs, *context.args]}
    assert "PYTHONUNBUFFERED" in names  # every stage's ENV and ARG names, read
    assert not [n for n in names if SECRET_NAME.search(n)], "the key comes at run time: -e BATCHGEN_API_KEY"
    assert not re.search(r"\bsk-[A-Za-z0-9]", "\n".join(i.args for i in INSTRUCTIONS))


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_private() -> None:
    rules = ignore_rules()
    assert rules, "a .dockerignore: without one, .venv, .git and output/ go to the builder"
    sources = [(i, s) for stage in STAGES for i, s in context_sources(stage)]
    assert sources
    for instruction, source in sources:
        matches = sorted(REPO.glob(source)) if source != "." else [REPO]
        assert matches, f"line {instruction.line}: {source} is not in the repo"
        for match in matches:
            relative = match.relative_to(REPO).as_posix()
            assert relative == "." or not ignored(relative, rules), (
                f"{relative}: copied, but .dockerignore drops it"
            )
    for private in (".venv/bin/python", ".git/config", "output/demo/report.json", ".env", "jobs/demo.yaml",
                    "tests/test_container.py", "batchgen/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert ignored(private, rules), f"{private} would be sent to the builder"


# --- the wheel, built and installed as the Dockerfile does -----------------------------------


def _copy_build_context(into: Path) -> Path:
    """The build stage's files, copied from the repo as its COPY instructions copy them (less
    what .dockerignore drops), under ``into`` standing for its WORKDIR. Returns that WORKDIR."""
    build, rules = STAGES[0], ignore_rules()
    root: PurePosixPath | None = None
    for instruction in build.all("COPY") + build.all("ADD"):
        flags, rest = instruction.flags_and_rest()
        if any(flag.startswith("--from=") for flag in flags):
            continue
        workdir = build.workdir_at(instruction)
        root = root or workdir
        assert workdir == root, "the build stage copies into one WORKDIR"
        *sources, dest = instruction.exec_form() or shlex.split(rest)
        target = into / (workdir / dest).relative_to(root)
        for source in sources:
            found = sorted(REPO.glob(source))
            if not found and source == "constraints.txt":  # not written yet: any pins will do here
                stand_in = into / "constraints.txt"
                stand_in.write_text("# a stand-in for the repo's constraints.txt\n")
                found = [stand_in]
            assert found, f"line {instruction.line}: {source} is not in the repo"
            for path in found:
                if path.is_dir():
                    for file in sorted(p for p in path.rglob("*") if p.is_file()):
                        relative = file.relative_to(REPO).as_posix()
                        if not ignored(relative, rules):
                            (target / file.relative_to(path)).parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(file, target / file.relative_to(path))
                else:
                    to = target / path.name if dest.endswith("/") or len(sources) > 1 else target
                    to.parent.mkdir(parents=True, exist_ok=True)
                    if path != to:
                        shutil.copy2(path, to)
    assert root is not None, "the build stage copies nothing"
    return into


def _clean_env(**extra: str) -> dict[str, str]:
    """No key, no base URL, nothing pointing Python or pip elsewhere; the image's own ENV."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BATCHGEN_", "PYTHON", "PIP_", "VIRTUAL_ENV", "CONDA"))
    }
    image_env = PARSED.envs if PARSED else {}  # the final stage's
    env.update({k: v for k, v in image_env.items() if k.startswith("PYTHON")})
    return env | extra


def _run(argv: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False, **kwargs
    )


@dataclass
class Installed:
    wheel: Path
    venv: Path
    env: dict[str, str]
    work: Path
    context: Path

    def batchgen(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return _run([self.venv / "bin" / "batchgen", *args], cwd=self.work, env=self.env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if not STAGES:
        pytest.fail("no Dockerfile at the repo root")
    tmp = tmp_path_factory.mktemp("container")
    context = _copy_build_context(tmp / "context")
    constraints = context / "constraints.txt"
    assert constraints.is_file(), "the build stage copies constraints.txt"
    # As the build stage does: no build isolation, so the setuptools of the dev virtualenv (pinned
    # by constraints.txt) builds it, and nothing is fetched.
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip(f"{sys.executable} has no setuptools to build the wheel with: not the dev virtualenv")
    env = _clean_env()
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "-c", constraints, "-w", tmp / "wheels", context],
        env=env,
    )  # fmt: skip
    if built.returncode and "bdist_wheel" in built.stdout + built.stderr:
        pytest.fail(
            f"setuptools {importlib.metadata.version('setuptools')} here cannot build a wheel without the `wheel` package, "
            "which the dev virtualenv lacks: add `wheel` to the dev extra in pyproject.toml (or require "
            "setuptools>=70.1) and run `make constraints`, so that this and the image's build stage "
            "build the wheel with a pinned backend"
        )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "wheels").glob("*.whl")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], env=env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env)
    # The dependencies come from the dev virtualenv (no network here): after the venv's own
    # site-packages on sys.path, so that `batchgen` is the wheel's. Its .pth files are not read.
    dev = dict.fromkeys(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages"))
    Path(site.stdout.strip(), "_dev_dependencies.pth").write_text("".join(f"{p}\n" for p in dev))
    # As the runtime stage does: pip from outside the venv, the wheel from the build, the constraints.
    install = _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "-c", constraints, wheel],
        env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    work = tmp / "work"
    _copy_demo(work / "jobs")
    path = os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")])
    return Installed(wheel, venv, _clean_env(PATH=path), work, context)


def _copy_demo(jobs: Path) -> None:
    """jobs/demo.yaml and every file its items and defaults name as references."""
    source = REPO / "jobs" / "demo.yaml"
    jobs.mkdir(parents=True)
    shutil.copy2(source, jobs / "demo.yaml")

    def references(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "references" and isinstance(value, list):
                    yield from (v for v in value if isinstance(v, str))
                else:
                    yield from references(value)
        elif isinstance(node, list):
            for value in node:
                yield from references(value)

    for reference in set(references(yaml.safe_load(source.read_text()))):
        (jobs / reference).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.parent / reference, jobs / reference)


def test_the_wheel_holds_the_package_its_data_and_its_license(installed: Installed) -> None:
    assert installed.wheel.name == WHEEL_NAME
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"{WHEEL_NAME.split('-py3')[0]}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"{WHEEL_NAME.split('-py3')[0]}.dist-info/entry_points.txt").decode()
    package = installed.context / "batchgen"
    expected = {p.relative_to(installed.context).as_posix() for p in package.rglob("*.py")}
    expected |= {
        "batchgen/py.typed",
        "batchgen/prices.json",
        "batchgen/report/gallery.html",
        "batchgen/manifest/manifest.schema.json",
    }
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.startswith(("tests/", "jobs/", "docs/"))]
    assert re.search(rf"^Version: {re.escape(VERSION)}$", metadata, re.MULTILINE)
    assert re.search(r"^batchgen = batchgen\.cli\.main:main$", entry_points, re.MULTILINE)
    if (REPO / "LICENSE").is_file():  # MIT: the notice goes with every copy
        assert [n for n in names if re.search(r"\.dist-info/(?:licenses/)?LICENSE$", n)]


def test_the_fresh_virtualenv_runs_the_wheels_batchgen(installed: Installed) -> None:
    code = "import batchgen, importlib.metadata as m; print(batchgen.__file__); print(m.version(%r))"
    python = installed.venv / "bin" / "python"
    shown = _run([python, "-c", code % PROJECT["name"]], cwd=installed.work, env=installed.env)
    assert shown.returncode == 0, shown.stderr
    where, version = shown.stdout.split()
    assert Path(where).is_relative_to(installed.venv), f"batchgen imported from {where}, not the wheel"
    assert version == VERSION
    helped = installed.batchgen("--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: batchgen")
    told = installed.batchgen("--version")
    assert told.returncode == 0, told.stderr
    assert told.stdout.strip() == f"batchgen {VERSION}", "the command's version is the wheel's"


def test_the_wheels_batchgen_validates_and_runs_the_demo_with_its_package_data(installed: Installed) -> None:
    items = len(yaml.safe_load((installed.work / "jobs/demo.yaml").read_text())["items"])
    checked = installed.batchgen("validate", "jobs/demo.yaml")
    assert checked.returncode == 0, checked.stderr
    assert "ok: job 'demo'" in checked.stdout
    assert "estimated cost ~USD" in checked.stdout  # prices.json, read from the wheel
    out = installed.work / "out"
    ran = installed.batchgen("run", "jobs/demo.yaml", "--simulate", "--output", out)  # on 127.0.0.1
    assert ran.returncode == 0, ran.stdout + ran.stderr
    job = out / "demo"
    report = json.loads((job / "report.json").read_text())
    assert report["counts"]["succeeded"] == items
    gallery = (job / "report.html").read_text()
    (template,) = installed.venv.glob("lib/python*/site-packages/batchgen/report/gallery.html")
    lines = [line for line in template.read_text().splitlines() if len(line) > 40 and "{{" not in line]
    assert lines
    assert all(line in gallery for line in lines[:5]), "report.html is not made from gallery.html"
    images = sorted(p for p in (job / "images").iterdir() if p.suffix == ".png")
    assert len(images) >= items
    # The run made every thumbnail before it returned, in its own worker processes.
    assert sorted(p.stem for p in (job / "thumbs").glob("*.webp")) == [p.stem for p in images]


# --- the deployment files run that image -----------------------------------------------------


def _yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _commented_pod_overrides(path: Path) -> list[Any]:
    """The pod specs of `kubectl run --overrides='{...}'` commands in the file's comments."""
    return [json.loads(found) for found in re.findall(r"--overrides='(\{.*?\})'", path.read_text())]


def _values(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for k, value in node.items():
            if k == key:
                yield value
            yield from _values(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from _values(value, key)


IMAGE_REFERENCE = re.compile(r"[\w.-]+(?::\d+)?(?:/[\w.-]+)*/batchgen(?::[\w][\w.-]*|@sha256:[0-9a-f]{64})")


def images_named(path: Path) -> set[str]:
    text = path.read_text()
    found = set(IMAGE_REFERENCE.findall(text)) | set(re.findall(r"--image[= ](\S+)", text))
    if path.suffix in (".yaml", ".yml"):
        for node in _yaml_documents(path) + _commented_pod_overrides(path):
            found |= {v if isinstance(v, str) else v.get("image", "") for v in _values(node, "image")}
    return found


def _pod_specs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "containers" in node:
            yield node
        for value in node.values():
            yield from _pod_specs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _pod_specs(value)


def test_every_deployment_file_that_names_an_image_names_the_one_the_dockerfile_builds() -> None:
    named = {path.name: images_named(path) for path in sorted(DEPLOY.iterdir())}
    images = set().union(*named.values())
    assert len(images) == 1, named
    (image,) = images
    assert image.endswith(f"/batchgen:{VERSION}"), f"{image}: tagged with the version the image is built from"
    for name in ("kubernetes-cronjob.yaml", "kubernetes-indexed-job.yaml", "github-actions.yml"):
        assert named[name] == {image}, f"{name} runs in the image"
        assert "this repo's Dockerfile" in (DEPLOY / name).read_text(), (
            f"{name} says where the image comes from"
        )
    for path in DEPLOY.iterdir():
        text = path.read_text()
        assert not re.search(r"pip install (?:\.|batchgen)(?:\s|$)", text), (
            f"{path.name}: someone else's batchgen"
        )
        assert "any image" not in text


def test_the_kubernetes_pods_run_the_image_as_its_user_with_its_volumes_mounted() -> None:
    uid = image_uid()
    volumes = {v for i in FINAL.all("VOLUME") for v in (i.exec_form() or i.args.split())}
    pods = [
        pod
        for path in sorted(DEPLOY.glob("kubernetes-*.yaml"))
        for node in _yaml_documents(path) + _commented_pod_overrides(path)
        for pod in _pod_specs(node)
    ]
    assert len(pods) >= 3  # the nightly CronJob, the Indexed Job, and the merge run in its comment
    for pod in pods:
        for container in pod["containers"]:
            security = pod.get("securityContext", {}) | container.get("securityContext", {})
            assert security.get("runAsUser") == uid, container["name"]
            assert security.get("runAsNonRoot") is True, container["name"]
            mounted = {m["mountPath"] for m in container.get("volumeMounts", [])}
            # A VOLUME of the image mounted at no exact path gets a throwaway folder of its own.
            assert "/work" in mounted, (container["name"], mounted)
            assert volumes <= mounted, (container["name"], mounted)
            argv = " ".join(container.get("command", []) + container.get("args", []))
            for output in re.findall(r"--output\s+(\S+)", argv):
                if re.match(r"(s3|gs|az)://", output):
                    continue  # a bucket: the pod's volume holds only the spool
                assert output in volumes, f"{container['name']}: writes {output}, not into its volume"


def test_the_github_jobs_run_in_the_image_as_a_non_root_user() -> None:
    workflow = _yaml_documents(DEPLOY / "github-actions.yml")[0]
    for name, job in workflow["jobs"].items():
        container = job.get("container", {})
        assert isinstance(container, dict), f"{name}: not in the image"
        assert container.get("image"), f"{name}: not in the image"
        user = re.search(r"(?:--user|-u)[ =](\S+)", container.get("options", ""))
        # Not 10001: the runner's checkout belongs to its own uid; a container user other than
        # that one and root cannot write it. Any uid will do but root's.
        assert user, f"{name}: the image's own user cannot write the checkout"
        assert user.group(1).split(":")[0] not in ("0", "root"), f"{name}: {user.group(0)}"
        runs = [step["run"] for step in job["steps"] if "run" in step]
        assert runs
        assert all(run.startswith("batchgen ") for run in runs), runs
