"""Catalog expansion: rows x matrix through a template, validated as strictly as hand-written items."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchgen import manifest
from batchgen.errors import ManifestError
from batchgen.manifest.references import LocalReference

CSV = "sku,name,color\nA1,tote bag,red\nB2,mug,navy\n"


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs"
    (folder / "refs").mkdir(parents=True)
    from .conftest import png_bytes

    for sku in ("A1", "B2"):
        (folder / "refs" / f"{sku}.png").write_bytes(png_bytes())
    return folder


def load(write_manifest: Callable[..., Path], data: dict[str, Any]) -> manifest.Manifest:
    return manifest.load(write_manifest(data, name="m.yaml"))


def problems(write_manifest: Callable[..., Path], jobs: Path, data: dict[str, Any]) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load(write_manifest, data)
    return [str(p).replace(str(jobs) + "/", "") for p in caught.value.problems]


def block(**fields: Any) -> dict[str, Any]:
    return {
        "rows": "products.csv",
        "template": {"id": "{sku}-{view}", "prompt": "{name} in {color}, {view}"},
        "matrix": {"view": ["front", "back"]},
        **fields,
    }


def test_csv_times_matrix_in_a_deterministic_order(write_manifest: Callable[..., Path], jobs: Path) -> None:
    (jobs / "products.csv").write_text(CSV)
    loaded = load(write_manifest, {"generate": [block()]})
    assert [(i.id, i.prompt) for i in loaded.items] == [
        ("A1-front", "tote bag in red, front"),
        ("A1-back", "tote bag in red, back"),
        ("B2-front", "mug in navy, front"),
        ("B2-back", "mug in navy, back"),
    ]
    assert [i.index for i in loaded.items] == [0, 1, 2, 3]


def test_bom_quotes_blank_lines_and_crlf_are_read_as_a_spreadsheet_writes_them(
    write_manifest: Callable[..., Path], jobs: Path
) -> None:
    text = '\ufeffsku,name,color\r\nA1,"tote bag, large","red ""cherry"""\r\n\r\nB2,"mug\nwith a line break",navy\r\n\r\n'
    (jobs / "products.csv").write_text(text, newline="")
    loaded = load(
        write_manifest,
        {"generate": [block(matrix=None, template={"id": "{sku}", "prompt": "{name} / {color}"})]},
    )
    assert [(i.id, i.prompt) for i in loaded.items] == [
        ("A1", 'tote bag, large / red "cherry"'),
        ("B2", "mug\nwith a line break / navy"),
    ]


def test_a_csv_error_names_the_physical_line_after_a_multiline_cell(
    write_manifest: Callable[..., Path], jobs: Path
) -> None:
    (jobs / "products.csv").write_text('sku,name,color\nA1,"two\nlines",red\nB2,mug,\n')
    found = problems(
        write_manifest,
        jobs,
        {"generate": [block(matrix=None, template={"id": "{sku}", "prompt": "{name} {color}"})]},
    )
    assert found == ["products.csv:4: generate[0] row 2: rows: column 'color' is empty"]


def test_placeholders_everywhere_matrix_mappings_literal_braces_and_numbers(
    write_manifest: Callable[..., Path], jobs: Path
) -> None:
    (jobs / "products.csv").write_text(CSV)
    data = {
        "generate": {
            "rows": "products.csv",
            "matrix": {"shape": [{"name": "square", "ratio": "1:1"}, {"name": "tall", "ratio": "4:5"}]},
            "template": {
                "id": "{sku}-{shape.name}",
                "prompt": "{{brand}} {name}",
                "aspect_ratio": "{shape.ratio}",
                "references": ["refs/{sku}.png", "https://cdn.test/{sku}.png"],
                "extra_fields": {"seed": 7, "style": {"tone": "{color}"}},
                "n": 2,
            },
        }
    }
    first = load(write_manifest, data).items[1]
    assert first.id == "A1-tall"
    assert first.prompt == "{brand} tote bag"
    assert first.n == 2
    assert dict(first.extra_fields) == {"seed": 7, "style": {"tone": "red"}, "aspect_ratio": "4:5"}
    local, url = first.references
    assert isinstance(local, LocalReference)
    assert local.written == "refs/A1.png"
    assert url.url == "https://cdn.test/A1.png"  # type: ignore[union-attr]


def test_inline_rows_hand_items_and_several_blocks_mix(
    write_manifest: Callable[..., Path], jobs: Path
) -> None:
    data = {
        "defaults": {"size": "2K"},
        "items": [{"id": "hero", "prompt": "hero banner"}],
        "generate": [
            {
                "rows": [{"sku": "X", "n": 1}, {"sku": "Y", "n": 2}],
                "template": {"id": "{sku}", "prompt": "product {sku} #{n}"},
            },
            {
                "rows": [{"w": "a"}],
                "matrix": {"k": [1, 2]},
                "template": {"id": "{w}{k}", "prompt": "{w} {k}", "size": "1K"},
            },
        ],
    }
    items = load(write_manifest, data).items
    assert [(i.index, i.id, i.prompt, i.size) for i in items] == [
        (0, "hero", "hero banner", "2K"),
        (1, "X", "product X #1", "2K"),
        (2, "Y", "product Y #2", "2K"),
        (3, "a1", "a 1", "1K"),
        (4, "a2", "a 2", "1K"),
    ]


def test_ids_without_a_template_id_are_stable_hashes(write_manifest: Callable[..., Path], jobs: Path) -> None:
    data = {"generate": {"rows": [{"c": "red"}, {"c": "blue"}], "template": {"prompt": "a {c} bag"}}}
    first = [i.id for i in load(write_manifest, data).items]
    assert first == [i.id for i in load(write_manifest, data).items]
    assert first[0].startswith("a-red-bag-")
    assert len(set(first)) == 2


@pytest.mark.parametrize(
    ("csv_text", "data", "expected"),
    [
        (
            CSV,
            block(template={"id": "{sku}", "prompt": "{colour}"}, matrix=None),
            "m.yaml: generate[0].template.prompt: unknown placeholder: {colour}; known: color, name, sku",
        ),
        (
            CSV,
            block(template={"id": "{sku:>5}", "prompt": "x"}, matrix=None),
            "m.yaml: generate[0].template.id: format specs are not supported: {sku}",
        ),
        (
            CSV,
            block(template={"id": "{sku", "prompt": "x"}, matrix=None),
            "m.yaml: generate[0].template.id: expected '}' before end of string",
        ),
        (
            CSV,
            block(template={"id": "{sku}", "prompt": "{view.x}"}),
            "m.yaml: generate[0].template.prompt: unknown placeholder: {view.x}",
        ),
        (
            "sku,name,color\nA1,tote\n",
            block(),
            "products.csv:2: generate[0] row 1: rows: has no value for column 'color'",
        ),
        (
            "sku,name,color\nA1,tote,red\nB2,mug, \n",
            block(),
            "products.csv:3: generate[0] row 2: rows: column 'color' is empty",
        ),
        (
            "sku,name,color\nA1,tote,red,extra\n",
            block(),
            "products.csv:2: row 1: rows: has 4 fields but the header has 3",
        ),
        (
            "sku,name,sku\nA,b,c\n",
            block(),
            "m.yaml: generate[0].rows: products.csv: the header has empty or repeated column names",
        ),
        ("", block(), "m.yaml: generate[0].rows: products.csv: is empty; it needs a header line"),
        (
            "sku,name,color\nA 1,tote,red\n",
            block(),
            "products.csv:2: generate[0] row 1, view=front: id: 'A 1-front' must be 1-100 of",
        ),
        (
            "sku,name,color\nA1,tote,red\nA1,mug,navy\n",
            block(),
            "products.csv:3: generate[0] row 2, view=front (id A1-front): id: has the same id as items[0]",
        ),
        (CSV, block(rows="missing.csv"), "m.yaml: generate[0].rows: missing.csv: file not found"),
        (CSV, block(rows="../outside.csv"), "m.yaml: generate[0].rows: ../outside.csv:"),
        (CSV, block(rows=[]), "m.yaml: generate[0].rows: is required"),
        (CSV, block(rows=["x"]), "m.yaml: generate[0].rows[0]: must be a mapping"),
        (CSV, block(matrix={"view": []}), "m.yaml: generate[0].matrix.view: must be a non-empty list"),
        (CSV, block(matrix=["front"]), "m.yaml: generate[0].matrix: must be a mapping of names to lists"),
        (
            CSV,
            block(matrix={"view": ["a", {"b": 1}]}),
            "m.yaml: generate[0].matrix.view: must be all plain values or all mappings",
        ),
        (
            CSV,
            block(matrix={"sku": ["a"]}),
            "m.yaml: generate[0].matrix: matrix keys ['sku'] are also columns",
        ),
        (
            CSV,
            block(matrix={"the view": ["a"]}),
            "m.yaml: generate[0].matrix: matrix key 'the view' must be a name",
        ),
        (CSV, block(templates={}), "m.yaml: generate[0].templates: unknown field 'templates'"),
        (CSV, {"rows": "products.csv"}, "m.yaml: generate[0].template: is required"),
        (
            CSV,
            block(template={"id": "{sku}-{view}", "prompt": "{name}", "size": "{color}"}),
            "products.csv:2: generate[0] row 1, view=front (id A1-front): size: must be one of",
        ),
    ],
)
def test_expansion_errors_name_the_block_and_the_csv_line(
    write_manifest: Callable[..., Path], jobs: Path, csv_text: str, data: dict[str, Any], expected: str
) -> None:
    (jobs / "products.csv").write_text(csv_text)
    (jobs.parent / "outside.csv").write_text(CSV)
    found = problems(write_manifest, jobs, {"generate": [data]})
    assert any(p.startswith(expected) for p in found), found
    assert sum(p.startswith(expected) for p in found) == 1  # once, not once per matrix combination


def test_not_utf8_csv(write_manifest: Callable[..., Path], jobs: Path) -> None:
    (jobs / "products.csv").write_bytes(b"sku,name\n\xff\xfe,x\n")
    assert problems(write_manifest, jobs, {"generate": [block()]}) == [
        "m.yaml: generate[0].rows: products.csv: is not UTF-8 text (byte 9)"
    ]


def test_the_shipped_catalog_example_expands() -> None:
    repo = Path(__file__).resolve().parent.parent
    loaded = manifest.load(repo / "jobs" / "catalog.yaml")
    assert len(loaded.items) == 36 * 3 * 2
    assert loaded.items[0].id == "tote-1001-front-square"
    assert all(len(i.references) == 1 for i in loaded.items)
    assert "heavy cotton canvas, leather handles" in loaded.items[0].prompt


def test_a_row_missing_several_columns_names_the_same_one_every_run(
    write_manifest: Callable[..., Path], jobs: Path
) -> None:
    """The first in header order, whatever Python's string hash seed (a set's order varies with it)."""
    (jobs / "products.csv").write_text("a,b,c,d,e,sku\n , , , , ,A1\n")
    path = write_manifest(
        {"generate": [{"rows": "products.csv", "template": {"prompt": "{a}{b}{c}{d}{e}"}}]}, name="m.yaml"
    )
    show = (
        "import sys; from pathlib import Path; from batchgen.errors import ManifestError\n"
        "from batchgen import manifest\n"
        "try: manifest.load(Path(sys.argv[1]))\n"
        "except ManifestError as exc: print(*(p.message for p in exc.problems), sep='; ')\n"
    )
    said = {
        subprocess.run(
            [sys.executable, "-c", show, str(path)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in range(4)
    }
    assert said == {"column 'a' is empty"}
