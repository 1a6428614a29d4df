"""docs/variants.md and the README's "Channel variants" say what the code does: their manifests
validate, the errors they show are the validator's own, and the README links to the page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from batchgen.errors import ManifestError
from batchgen.manifest import validate as manifest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "variants.md"
README = ROOT / "README.md"


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced blocks of ``language`` ("" for those without one)."""
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    return [body for lang, body in fenced if lang == language]


def readme_section() -> str:
    return section(README.read_text(encoding="utf-8"), "## Channel variants")


def examples() -> list[tuple[str, str]]:
    found = [("docs/variants.md", b) for b in blocks(PAGE.read_text(encoding="utf-8"), "yaml")]
    return found + [("README", b) for b in blocks(readme_section(), "yaml")]


def test_the_readme_section_links_to_the_page_that_exists() -> None:
    links = re.findall(r"\]\(([^)]+)\)", readme_section())
    assert "docs/variants.md" in links
    assert all((ROOT / link).is_file() for link in links if not link.startswith("http"))


@pytest.mark.parametrize(("where", "text"), examples(), ids=[w for w, _ in examples()])
def test_each_example_manifest_validates_with_its_variants(where: str, text: str, tmp_path: Path) -> None:
    data = yaml.safe_load(text)
    data.setdefault("items", [{"prompt": "p"}])
    path = tmp_path / "example.yaml"
    path.write_text(yaml.safe_dump(data))
    job = manifest.load(path)
    assert set(job.variants) == set(data["variants"])
    named = {name for item in data["items"] for name in item.get("variants", ())}
    assert named <= set(job.variants)


def test_the_errors_the_page_shows_are_the_validators(tmp_path: Path) -> None:
    shown = [line for line in blocks(PAGE.read_text(encoding="utf-8"), "") if "batchgen: error:" in line]
    assert shown, "the page shows the errors a mistake gives"
    (block,) = shown
    data = yaml.safe_load(blocks(PAGE.read_text(encoding="utf-8"), "yaml")[0])
    data["variants"]["web"]["format"] = "gif"
    data["variants"]["thumb"] = {"width": 9, "format": "png"}
    data["items"] = [{"id": f"sku-100{k}", "prompt": f"p{k}"} for k in range(3)]
    data["items"].append({"id": "sku-1002-back", "prompt": "p", "variants": ["amazn"]})
    path = tmp_path / "jobs" / "spring.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ManifestError) as caught:
        manifest.load(path)
    said = {
        f"batchgen: error: {problem}".replace(str(path), "jobs/spring.yaml")
        for problem in caught.value.problems
    }
    for line in block.strip().splitlines():
        assert line in said, said
