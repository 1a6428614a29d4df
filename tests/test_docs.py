"""The README and the docs/ pages hold together: every page is reachable from the README, every
relative link lands on a file and heading that exist, every manifest shown meets the schema (and
the README's validates), and every batchgen command shown parses."""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from batchgen.cli import reference
from batchgen.cli.arguments import parser
from batchgen.manifest import load, schema
from batchgen.manifest.loader import read_yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
DOCUMENTS = [README, *PAGES]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _prose(text: str) -> str:
    """The text outside fenced blocks, where links are links."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation gone, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", _prose(path.read_text()), re.MULTILINE)}


def links() -> Iterator[tuple[Path, str]]:
    for document in DOCUMENTS:
        for target in LINK.findall(_prose(document.read_text())):
            if not re.match(r"[a-z]+:", target):
                yield document, target


def blocks(kind: str) -> Iterator[tuple[Path, str]]:
    for document in DOCUMENTS:
        for language, body in FENCE.findall(document.read_text()):
            if language == kind:
                yield document, body


def test_the_anchor_of_a_heading_is_githubs() -> None:
    assert slug("The gallery: report.html") == "the-gallery-reporthtml"
    assert slug("Failures, and what is retried") == "failures-and-what-is-retried"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {target.split("#")[0] for document, target in links() if document == README}
    assert {f"docs/{page.name}" for page in PAGES} <= linked


@pytest.mark.parametrize(("document", "target"), list(links()), ids=lambda v: getattr(v, "name", v))
def test_every_relative_link_lands_on_a_file_and_heading(document: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    landing = (document.parent / path).resolve() if path else document
    assert landing.exists(), f"{document.name}: {target}"
    if anchor:
        assert anchor in anchors(landing), f"{document.name}: {target}"


def test_every_manifest_shown_meets_the_schema(tmp_path: Path) -> None:
    validator = Draft202012Validator(schema.document())
    shown = [(d, body) for d, body in blocks("yaml") if re.search(r"^version: 1$", body, re.MULTILINE)]
    assert len(shown) >= 2
    for document, body in shown:
        (tmp_path / "shown.yaml").write_text(body)
        data = read_yaml(tmp_path / "shown.yaml")
        assert not list(validator.iter_errors(data)), document.name


def test_the_readmes_manifest_validates_beside_the_demo(tmp_path: Path) -> None:
    # The tour's manifest: the first one the README shows (its later sections show their own).
    body = next(b for d, b in blocks("yaml") if d == README)
    shutil.copytree(REPO / "jobs" / "refs", tmp_path / "refs")
    (tmp_path / "tour.yaml").write_text(body)
    (item,) = load(tmp_path / "tour.yaml").items
    assert item.id == "tote-red-front"


def commands() -> Iterator[tuple[str, list[str]]]:
    """(document, argv after the program) for every batchgen command line in a shell block."""
    for document, body in blocks("sh"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(re.split(r"\s(?:#|>|\|)", line)[0])
            while words and not words[0].endswith("/batchgen") and words[0] != "batchgen":
                words.pop(0)
            if words[1:] and not words[1].startswith("-"):
                yield document.name, words[1:]


COMMANDS = list(commands())


def test_the_documents_show_commands() -> None:
    assert {words[0] for _, words in COMMANDS} >= {"run", "validate", "retry", "redo", "report", "simulator"}


@pytest.mark.parametrize(("name", "argv"), COMMANDS, ids=[f"{n}:{' '.join(a[:3])}" for n, a in COMMANDS])
def test_every_command_shown_parses(name: str, argv: list[str]) -> None:
    args = parser().parse_args(argv)  # exits (fails the test) on any unknown flag or bad value
    assert args.command == argv[0], name


def test_the_command_line_reference_is_what_help_prints() -> None:
    page = (REPO / "docs" / "cli.md").read_text()
    assert page == reference.page_with_reference(page), (
        "docs/cli.md drifted from --help: run `python -m batchgen.cli.reference docs/cli.md`"
    )
    for command in [
        "run",
        "retry",
        "redo",
        "validate",
        "report",
        "merge",
        "simulator",
        "schema",
        "completion",
    ]:
        assert f"### `batchgen {command}`\n\n```\nusage: batchgen {command} " in page


def test_the_reference_is_rewritten_in_place_and_keeps_the_prose_around_it() -> None:
    stale = f"# Command line\n\nprose\n\n{reference.BEGIN}\nold --help\n{reference.END}\n\nafter\n"
    fresh = reference.page_with_reference(stale)
    assert fresh.startswith("# Command line\n\nprose\n\n")
    assert fresh.endswith(f"{reference.END}\n\nafter\n")
    assert "old --help" not in fresh
    assert reference.page_with_reference(fresh) == fresh
