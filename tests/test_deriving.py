"""The derivation stage on its own: an item's record, what is made again, and how the pool stops."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from PIL import Image

from batchgen.job.deriving import Deriving
from batchgen.manifest.spec import ItemSpec
from batchgen.output import derive
from batchgen.output.derive import Task
from batchgen.output.variants import THUMB, Variant, forget

WEB = Variant("web", "webp", 64, None)


def spec(item_id: str, variants: tuple[str, ...] | None = None) -> ItemSpec:
    return ItemSpec(0, item_id, "a prompt", "nano-banana-2", "1K", 1, "b64_json", {}, (), variants)


def job_folder(tmp_path: Path, count: int, side: int = 96) -> list[str]:
    (tmp_path / "images").mkdir()
    made = []
    for k in range(count):
        out = io.BytesIO()
        Image.new("RGB", (side, side // 2), (10 * k % 255, 90, 200)).save(out, format="PNG")
        (tmp_path / f"images/i{k}.png").write_bytes(out.getvalue())
        made.append(f"images/i{k}.png")
    return made


def test_an_item_is_made_once_and_again_only_where_something_changed(tmp_path: Path) -> None:
    (image,) = job_folder(tmp_path, 1)
    task = Task(str(tmp_path), "i0", (image,), (THUMB, WEB), {"id": "i0", "prompt": "p"})
    first = derive.derive_item(task)
    assert (first.made, first.files, first.errors) == (
        2,
        {"thumb": ["thumbs/i0.webp"], "web": ["variants/web/i0.webp"]},
        {},
    )
    record = orjson.loads((tmp_path / "derived/i0.json").read_bytes())
    assert set(record["images"][image]) == {"thumb", "web"}

    assert derive.derive_item(task).made == 0  # all there and right: nothing rendered
    (tmp_path / "variants/web/i0.webp").write_bytes(b"damaged")
    assert derive.derive_item(task).made == 1
    assert derive.derive_item(replace(task, variants=(THUMB, Variant("web", "webp", 32, None)))).made == 1
    assert derive.derive_item(replace(task, meta={"id": "i0", "prompt": "q"})).made == 1  # its XMP changed
    (tmp_path / image).write_bytes((tmp_path / "thumbs/i0.webp").read_bytes())  # a new picture
    assert derive.derive_item(task).made == 2


def test_forget_removes_what_was_derived_from_an_item_and_nothing_else(tmp_path: Path) -> None:
    images = job_folder(tmp_path, 2)
    for k, image in enumerate(images):
        derive.derive_item(Task(str(tmp_path), f"i{k}", (image,), (THUMB, WEB), {}))
    forget(tmp_path, "i0", [images[0]])
    left = sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and "images" not in p.parts
    )
    assert left == ["derived/i1.json", "thumbs/i1.webp", "variants/web/i1.webp"]


def test_the_stage_chooses_each_items_variants_and_a_stopped_one_drops_what_has_not_started(
    tmp_path: Path,
) -> None:
    images = job_folder(tmp_path, 12)
    stage = Deriving(tmp_path, "job", {"web": WEB}, workers=1)
    assert [v.name for v in stage.chosen(spec("a"))] == ["thumb", "web"]
    assert [v.name for v in stage.chosen(spec("a", ()))] == ["thumb"]
    for k, image in enumerate(images):
        stage.submit(spec(f"i{k}", () if k else None), [image, f"images/i{k}.json"])
    assert stage.close(stopping=True) == {}  # none had started: all dropped, none failed
    assert not (tmp_path / "thumbs").exists()

    for half in ("thumbs/.batchgen-0a.tmp", "variants/web/.batchgen-0b.tmp"):  # a killed worker's
        (tmp_path / half).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / half).write_bytes(b"half")
    again = Deriving(tmp_path, "job", {"web": WEB})  # the next run makes them
    again.start()
    for k, image in enumerate(images):
        again.submit(spec(f"i{k}", () if k else None), [image])
    made = again.close()
    assert len(made) == len(images)
    assert all(not d.errors for d in made.values())
    assert made["i0"].channels == (("web", ("variants/web/i0.webp",)),)
    assert made["i1"].channels == ()
    assert len(list((tmp_path / "thumbs").iterdir())) == len(images)
    assert not list(tmp_path.rglob("*.tmp"))


def test_what_waits_when_the_run_has_sent_its_last_request_is_made_at_the_commands_priority(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The workers run below the command while it sends; once close() is called the command only
    # waits, and a busy machine would starve low-priority workers: the waiting items move.
    images = job_folder(tmp_path, 12)
    stage = Deriving(tmp_path, "job", {"web": WEB}, workers=1)
    stage.start()
    for k, image in enumerate(images):
        stage.submit(spec(f"i{k}"), [image])
    with caplog.at_level(logging.INFO, logger="batchgen.job.deriving"):
        made = stage.close()
    moved = [r.getMessage() for r in caplog.records if "before finishing" in r.getMessage()]
    assert len(moved) == 1
    count = int(moved[0].split(" of ")[1].split()[0])
    assert 1 <= count <= len(images)
    assert sorted(made) == sorted(f"i{k}" for k in range(len(images)))
    assert all(not d.errors and d.channels for d in made.values())
    assert len(list((tmp_path / "variants/web").iterdir())) == len(images)


@pytest.mark.parametrize("level", [0, 7])
def test_a_worker_lowers_its_own_priority_by_the_level_it_is_started_with(level: int) -> None:
    code = "import os; from batchgen.output import derive; derive.worker_started(%d, os.getppid()); print(os.nice(0))"
    shown = subprocess.run(
        [sys.executable, "-c", code % level], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(shown.stdout) == min(os.nice(0) + level, 19)
