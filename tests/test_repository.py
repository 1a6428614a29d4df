"""What the repository promises about itself: the code points only at documents it carries."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_code_or_build_file_cites_a_document_outside_the_repository() -> None:
    files = [
        *ROOT.glob("batchgen/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
        ROOT / "pyproject.toml",
        ROOT / "Makefile",
    ]
    marker = "SPEC" + " §"  # the contract document that is not in the repository
    citing = [str(f.relative_to(ROOT)) for f in files if marker in f.read_text()]
    assert citing == [], "cite the README or a docs/ page instead"


def test_every_docs_page_the_code_cites_exists() -> None:
    files = [*ROOT.glob("batchgen/**/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/**/*.py")]
    cited = {page for f in files for page in re.findall(r"docs/[\w-]+\.md", f.read_text())}
    assert "docs/failures.md" in cited
    assert sorted(page for page in cited if not (ROOT / page).is_file()) == []
