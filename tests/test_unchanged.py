"""The nightly no-op: a finished job re-run from its stamp, and every change that must end that."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import batchgen
from batchgen import manifest
from batchgen.cli.main import main
from batchgen.job import unchanged
from batchgen.output import paths
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS, png_bytes

pytestmark = pytest.mark.usefixtures("api_key")

ROWS = 4
VIEWS = ("front", "back")


class Catalog:
    """A CSV of products x views with a reference photo per product, run with the CLI."""

    def __init__(self, folder: Path, sim: Simulator) -> None:
        self.folder, self.sim = folder, sim
        self.path = folder / "catalog.yaml"
        self.out = folder / "out"
        self.job = self.out / "catalog"
        (folder / "refs").mkdir()
        for k in range(ROWS):
            (folder / "refs" / f"sku-{k}.png").write_bytes(png_bytes(hue=k + 1))
        self.write_rows([f"product {k}" for k in range(ROWS)])
        self.write_manifest("Photo of the {name}, {view} view")

    def write_rows(self, names: list[str]) -> None:
        lines = ["sku,name", *(f"sku-{k},{name}" for k, name in enumerate(names))]
        (self.folder / "products.csv").write_text("\n".join(lines) + "\n")

    def write_manifest(self, prompt: str) -> None:
        data = {
            "job": "catalog",
            "limits": {**FAST_LIMITS, "concurrency": 2},
            "generate": [
                {
                    "rows": "products.csv",
                    "matrix": {"view": list(VIEWS)},
                    "template": {"id": "{sku}-{view}", "prompt": prompt, "references": ["refs/{sku}.png"]},
                }
            ],
        }
        self.path.write_text(yaml.safe_dump(data, sort_keys=False))

    def run(self, *flags: str, manifest_path: str | None = None) -> int:
        given = manifest_path or str(self.path)
        return main(["run", given, "--base-url", self.sim.base_url, "--output", str(self.out), "-q", *flags])

    def sent(self) -> int:
        return sum(self.sim.stats.by_prompt.values())

    def report(self) -> dict[str, Any]:
        return dict(orjson.loads((self.job / "report.json").read_bytes()))


@pytest.fixture
def catalog(tmp_path: Path, sim: Simulator) -> Catalog:
    made = Catalog(tmp_path, sim)
    assert made.run() == 0
    assert made.sent() == ROWS * len(VIEWS)
    return made


@pytest.fixture
def expansions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every manifest expanded in full (the long way), in order."""
    seen: list[Path] = []
    load = manifest.load

    def counting(path: Path) -> manifest.Manifest:
        seen.append(path)
        return load(path)

    monkeypatch.setattr(manifest, "load", counting)
    return seen


def gallery_data(job: Path) -> Any:
    page = (job / "report.html").read_text()
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert found is not None
    return orjson.loads(found.group(1))


def without_times(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("started_at", "finished_at", "duration_s")}


def test_a_finished_job_is_rerun_from_its_stamp_without_expanding_the_manifest(
    catalog: Catalog, expansions: list[Path]
) -> None:
    assert (catalog.job / paths.STAMP).is_file()
    journal = (catalog.job / "journal.jsonl").read_bytes()

    assert catalog.run() == 0

    assert expansions == []
    assert catalog.sent() == ROWS * len(VIEWS)
    report = catalog.report()
    assert report["status"] == "completed"
    assert report["counts"]["skipped"] == report["counts"]["total"] == ROWS * len(VIEWS)
    assert (catalog.job / "journal.jsonl").read_bytes() == journal  # a no-op changes no record
    assert catalog.run() == 0  # and the next night, likewise
    assert expansions == []


def test_the_stamp_writes_the_report_and_gallery_the_long_way_would(
    catalog: Catalog, expansions: list[Path]
) -> None:
    assert catalog.run() == 0  # from the stamp
    assert expansions == []
    quick, quick_page = catalog.report(), gallery_data(catalog.job)
    (catalog.job / paths.STAMP).unlink()

    assert catalog.run() == 0  # the long way, which stamps the job again

    assert expansions == [catalog.path]
    assert without_times(catalog.report()) == without_times(quick)
    assert gallery_data(catalog.job) == quick_page
    assert quick_page["params"]
    assert {row[1] for row in quick_page["items"]} == {2}
    assert (catalog.job / paths.STAMP).is_file()


def edit_a_row(c: Catalog) -> int:
    c.write_rows([f"product {k}" if k != 2 else "product 2 in green" for k in range(ROWS)])
    return len(VIEWS)


def touch_the_csv(c: Catalog) -> int:
    os.utime(c.folder / "products.csv")
    return 0


def edit_the_template(c: Catalog) -> int:
    c.write_manifest("Photo of the {name}, {view} view, on white")
    return ROWS * len(VIEWS)


def swap_a_reference_keeping_its_size_and_time(c: Catalog) -> int:
    ref = c.folder / "refs" / "sku-1.png"
    before = ref.stat()
    other = png_bytes(hue=9)
    assert len(other) == before.st_size
    ref.write_bytes(other)
    os.utime(ref, ns=(before.st_atime_ns, before.st_mtime_ns))  # what `touch -r` could do
    return len(VIEWS)


def delete_an_image(c: Catalog) -> int:
    (c.job / "images" / "sku-0-back.png").unlink()
    return 1


def cut_an_image_short(c: Catalog) -> int:
    image = c.job / "images" / "sku-3-front.png"
    image.write_bytes(image.read_bytes()[:100])
    return 1


@pytest.mark.parametrize(
    "change",
    [
        edit_a_row,
        touch_the_csv,
        edit_the_template,
        swap_a_reference_keeping_its_size_and_time,
        delete_an_image,
        cut_an_image_short,
    ],
)
def test_any_change_since_the_stamp_takes_the_long_way_and_sends_exactly_what_changed(
    catalog: Catalog, expansions: list[Path], change: Callable[[Catalog], int]
) -> None:
    resent = change(catalog)

    assert catalog.run() == 0

    assert expansions == [catalog.path]
    assert catalog.sent() == ROWS * len(VIEWS) + resent
    assert catalog.run() == 0  # stamped again by the long way: the next night is quick
    assert expansions == [catalog.path]
    assert catalog.sent() == ROWS * len(VIEWS) + resent


def test_another_command_writing_the_journal_ends_the_stamp(catalog: Catalog, expansions: list[Path]) -> None:
    folder = str(catalog.job)
    assert main(["redo", folder, "sku-1-front", "--base-url", catalog.sim.base_url, "-q"]) == 0
    assert catalog.sent() == ROWS * len(VIEWS) + 1
    expansions.clear()  # redo expands the manifest by design

    assert catalog.run() == 0

    assert expansions == [catalog.path]
    assert catalog.sent() == ROWS * len(VIEWS) + 1
    assert {i["id"]: i.get("version", 1) for i in catalog.report()["items"]}["sku-1-front"] == 2


def test_a_retry_after_an_edit_leaves_no_stamp_and_the_next_run_makes_the_edited_items(
    catalog: Catalog,
) -> None:
    """retry skips what succeeded without comparing requests; a stamp written then would vouch
    for an edit that was never made."""
    changed = edit_a_row(catalog)
    assert main(["retry", str(catalog.job), "--base-url", catalog.sim.base_url, "-q"]) == 0
    assert catalog.sent() == ROWS * len(VIEWS)
    assert not (catalog.job / paths.STAMP).exists()

    assert catalog.run() == 0

    assert catalog.sent() == ROWS * len(VIEWS) + changed


def test_a_file_edited_while_the_job_runs_is_not_vouched_for(tmp_path: Path, sim: Simulator) -> None:
    made = Catalog(tmp_path, sim)
    names = [f"product {k}" for k in range(ROWS)]

    def edit_once(seen: int) -> None:
        if seen == 2:  # the manifest was read; the run is under way
            made.write_rows([*names[:-1], "product 3 in green"])

    sim.on_request = edit_once
    assert made.run() == 0
    sim.on_request = None
    assert not (made.job / paths.STAMP).exists()

    assert made.run() == 0

    assert made.sent() == ROWS * len(VIEWS) + len(VIEWS)  # the edited row, made on the second run


def test_a_failed_item_leaves_no_stamp(tmp_path: Path, sim: Simulator) -> None:
    made = Catalog(tmp_path, sim)
    made.write_rows(["product 0", "[sim:safety] product 1", "product 2", "product 3"])
    assert made.run() == 1
    assert not (made.job / paths.STAMP).exists()


def test_the_stamp_holds_whichever_folder_the_runs_start_in(
    catalog: Catalog, expansions: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (catalog.job / paths.STAMP).unlink()
    monkeypatch.chdir(catalog.folder)
    assert catalog.run(manifest_path="catalog.yaml") == 0  # stamped, the manifest given relative
    assert expansions == [Path("catalog.yaml")]
    monkeypatch.chdir(catalog.out)

    assert catalog.run(manifest_path="../catalog.yaml") == 0

    assert expansions == [Path("catalog.yaml")]
    assert catalog.sent() == ROWS * len(VIEWS)


def test_a_stamp_is_for_one_manifest_shard_price_table_and_version(
    catalog: Catalog, expansions: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = catalog.folder / "copy.yaml"
    shutil.copy(catalog.path, copy)
    assert catalog.run(manifest_path=str(copy)) == 0  # same job name, another manifest file
    assert expansions == [copy]
    prices = catalog.folder / "prices.json"
    shutil.copy(Path(batchgen.__file__).with_name("prices.json"), prices)
    assert catalog.run("--prices", str(prices)) == 0
    assert expansions == [copy, catalog.path]
    monkeypatch.setattr(unchanged, "__version__", "99.0")
    assert catalog.run() == 0
    assert len(expansions) == 3
    assert catalog.sent() == ROWS * len(VIEWS)  # nothing was sent by any of them


def test_force_is_never_answered_from_the_stamp(catalog: Catalog) -> None:
    assert catalog.run("--force") == 0
    assert catalog.sent() == 2 * ROWS * len(VIEWS)


def test_a_stamp_reads_back_as_written_and_refuses_another_format() -> None:
    stamp = unchanged.Stamp(
        key="k",
        sources=(("/jobs/a.yaml", (10, 1, 2, 3)),),
        journal=(120, 5),
        ids=("a", "b"),
        prompts=("one", "two"),
        attempts=(1, 2),
        versions=(1, 3),
        files=((("images/a.png", 100),), (("images/b-1.png", 7), ("images/b-2.jpg", 8))),
        params=({"model": "nano-banana-2"},),
        param_of=(0, 0),
        warnings=("w",),
        pixels=((928, 1152), None),
        flags=(("size_mismatch",), ()),
        derived=(None, None),
        parents={"b": ("a",)},
    )
    written = orjson.loads(orjson.dumps(stamp.to_json()))
    assert written["sources"] == [["/jobs/a.yaml", 10, 1, 2, 3]]  # the format on disk, unchanged
    assert written["files"][1] == [["images/b-1.png", 7], ["images/b-2.jpg", 8]]
    assert unchanged.Stamp.from_json(written) == stamp
    with pytest.raises(ValueError, match="format"):
        unchanged.Stamp.from_json({**written, "format": unchanged.FORMAT + 1})
    with pytest.raises(KeyError):
        unchanged.Stamp.from_json({k: v for k, v in written.items() if k != "files"})
