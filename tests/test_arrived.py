"""The check of what arrived: Gemini's pixel sizes, the size check, and the flag it leaves.

The relay's facts are tested against the table in docs/real-service.md, written out here by
hand; the rest end to end against the simulator, told to lose ``image_size`` or
``aspect_ratio`` the way relays do.
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from batchgen import relay
from batchgen.cli.main import main
from batchgen.images import pixel_size
from batchgen.manifest import sizes
from batchgen.outcomes import Flag, ItemStatus
from batchgen.output import journal, sidecar
from batchgen.output.journal import Entry, JournalFile
from batchgen.output.sidecar import Sidecar
from batchgen.output.store import StoredFile
from batchgen.report.record import Report, ReportItem
from batchgen.report.report import Spend, assemble, merge_reports
from batchgen.sim import answers
from batchgen.sim.settings import SimulatorConfig
from batchgen.sim.simulator import Simulator

from .conftest import png_bytes
from .test_rerun import Job

pytestmark = pytest.mark.usefixtures("api_key")

# Gemini's answers at 1K (docs/real-service.md); 2K and 4K are twice and four times these.
GEMINI_1K = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}


# --- the relay's facts ---------------------------------------------------------------------------


@pytest.mark.parametrize("klass", ["512", "1K", "2K", "4K"])
@pytest.mark.parametrize("ratio", sorted(GEMINI_1K))
def test_the_simulator_answers_geminis_pixel_sizes(klass: str, ratio: str) -> None:
    w, h = GEMINI_1K[ratio]
    expected = (int(w * SCALE[klass]), int(h * SCALE[klass]))
    assert sizes.pixels(klass, ratio) == expected
    assert sizes.dimensions("1K", klass, ratio) == expected  # image_size with aspect_ratio
    body = {"prompt": "p", "size": "1K", "extra_fields": {"image_size": klass, "aspect_ratio": ratio}}
    asked = answers.read(body)
    assert (asked.width, asked.height) == expected
    assert not sizes.requested("1K", klass, ratio).mismatch(*expected)


@pytest.mark.parametrize(
    ("size", "image_size", "ratio", "shape"),
    [
        ("1K", None, None, ("1K", None, (1024, 1024), "1K")),
        ("2K", None, None, ("2K", None, (2048, 2048), "2K")),
        ("1K", "4K", None, ("4K", None, (4096, 4096), "4K")),  # image_size beats size
        ("4K", None, "16:9", ("4K", (16, 9), (5504, 3072), "4K 16:9")),
        ("1K", "2K", "21:9", ("2K", (21, 9), (3168, 1344), "2K 21:9")),
        ("1024x1792", None, None, ("1K", (1024, 1792), (768, 1376), "1K 1024x1792")),  # Gemini's 9:16
        ("2000x1000", None, None, ("1K", (2000, 1000), (1376, 768), "1K 2000x1000")),  # unknown WxH: 1K
        ("1024x1792", None, "1:1", ("1K", (1, 1), (1024, 1024), "1K 1:1")),  # aspect_ratio beats the size
        ("1K", "512", "wide", ("512", None, (512, 512), "512")),  # a ratio that is none names no aspect
        ("1K", None, "1:4", ("1K", (1, 4), None, "1K 1:4")),  # not in Gemini's table
    ],
)
def test_the_shape_a_request_asks_for(
    size: str, image_size: str | None, ratio: str | None, shape: tuple[Any, ...]
) -> None:
    asked = sizes.requested(size, image_size, ratio)
    assert (asked.size_class, asked.aspect, asked.answered, str(asked)) == shape


@pytest.mark.parametrize(
    ("asked", "pixels", "mismatch"),
    [
        (("2K", None, None), (2048, 2048), False),
        (("2K", None, None), (1536, 1536), False),  # 0.75 x 2048: the smallest that passes
        (("2K", None, None), (1535, 1535), True),
        (("1K", "2K", "16:9"), (1376, 768), True),  # asked 2K, got Gemini's 1K: image_size dropped
        (("1K", "4K", "16:9"), (2752, 1536), True),  # asked 4K, got 2K
        (("1K", "2K", "21:9"), (1584, 672), True),  # over 0.75 x 2048, but Gemini's 1K all the same
        (("1K", "2K", "21:9"), (2376, 1018), False),  # 0.75 x 3168, the 2K 21:9 long side
        (("1K", "2K", "21:9"), (2375, 1018), True),
        (("512", None, None), (1024, 1024), False),  # larger than asked is no loss
        (("1K", None, "16:9"), (1024, 1024), True),  # aspect_ratio dropped: square
        (("1K", None, "16:9"), (1376, 768), False),
        (("1K", None, "16:9"), (1344, 768), False),  # the 2.5 Flash model's 16:9
        (("1K", None, "1:1"), (1030, 1000), False),  # 3% off: still the shape asked
        (("1K", None, "1:1"), (1031, 1000), True),  # more than 3% off
        (("1K", None, "1:1"), (1000, 1031), True),
        (("1024x1792", None, None), (768, 1376), False),  # Gemini's 9:16 for a 1024x1792 size
        (("1024x1792", None, None), (1024, 1024), True),  # the size dropped
        (("1K", None, None), (1584, 672), False),  # no aspect asked: any shape will do
        (("1K", None, "1:4"), (512, 2048), False),
    ],
)
def test_the_size_check(
    asked: tuple[str, str | None, str | None], pixels: tuple[int, int], mismatch: bool
) -> None:
    assert sizes.requested(*asked).mismatch(*pixels) is mismatch


def test_pixel_sizes_are_read_from_the_header_alone() -> None:
    assert pixel_size(png_bytes(40, 20)) == (40, 20)
    jpeg = io.BytesIO()
    Image.new("RGB", (30, 50)).save(jpeg, "JPEG")
    assert pixel_size(jpeg.getvalue()) == (30, 50)
    head = png_bytes(40, 20)[:41]  # the signature, IHDR and where the pixel data would begin
    assert pixel_size(head) == (40, 20)
    assert pixel_size(b"not an image") is None


def test_the_simulator_refuses_a_field_it_cannot_drop() -> None:
    with pytest.raises(ValueError, match="cannot drop"):
        SimulatorConfig(dropped_fields=("prompt",))


# --- end to end ------------------------------------------------------------------------------------

ITEMS = [
    {"id": "wide-2k", "prompt": "a wide tote, 2K", "image_size": "2K", "aspect_ratio": "16:9"},
    {"id": "square-1k", "prompt": "a square tote, 1K", "image_size": "1K", "aspect_ratio": "1:1"},
    {"id": "portrait", "prompt": "a tall tote", "aspect_ratio": "4:5"},
    {"id": "small", "prompt": "a small tote", "size": "512"},
    {"id": "tall-wxh", "prompt": "a tall banner", "size": "1024x1792"},
]
EXPECTED = {
    "wide-2k": (2752, 1536),
    "square-1k": (1024, 1024),
    "portrait": (928, 1152),
    "small": (512, 512),
    "tall-wxh": (768, 1376),
}


def item_lines(job: Job) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in job.report()["items"]}


def test_pixel_sizes_are_recorded_in_the_sidecar_the_journal_and_the_report(
    tmp_path: Path, sim: Simulator
) -> None:
    job = Job(tmp_path, sim, ITEMS)
    assert job.run() == 0
    folder = job.out / "cat"
    entries = journal.read(folder).entries
    lines = item_lines(job)
    for item_id, pixels in EXPECTED.items():
        with Image.open(folder / f"images/{item_id}.png") as image:
            assert image.size == pixels, item_id
        car = sidecar.read(folder, item_id)
        assert car is not None
        assert [f.pixels for f in car.files] == [pixels]
        raw = orjson.loads((folder / f"images/{item_id}.json").read_bytes())
        assert (raw["files"][0]["width"], raw["files"][0]["height"]) == pixels
        assert [f.pixels for f in entries[item_id].files] == [pixels]
        assert (lines[item_id]["width"], lines[item_id]["height"], lines[item_id]["flags"]) == (*pixels, [])
    assert job.report()["flags"] == {"size_mismatch": 0}


def test_a_relay_dropping_image_size_is_flagged_kept_and_counted(
    tmp_path: Path,
    threaded_simulator: Callable[..., Simulator],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = threaded_simulator(dropped_fields=("image_size",))
    job = Job(tmp_path, sim, ITEMS)
    code = main(["run", str(job.path), "--base-url", sim.base_url, "--output", str(job.out)])
    assert code == 0  # billed images, kept: the run succeeded
    captured = capsys.readouterr()
    report = job.report()
    assert report["counts"]["succeeded"] == 5
    assert report["requests_sent"] == 5  # never retried: it was billed
    assert job.requests() == {item["prompt"]: 1 for item in ITEMS}
    lines = item_lines(job)
    # Asked 2K 16:9, got Gemini's 1K 16:9: the long side is under 0.75 x 2048.
    assert (lines["wide-2k"]["width"], lines["wide-2k"]["height"]) == (1376, 768)
    assert {k: line["flags"] for k, line in lines.items()} == {
        "wide-2k": ["size_mismatch"],
        "square-1k": [],
        "portrait": [],
        "small": [],  # 1K where 512 was asked: more than asked is no loss
        "tall-wxh": [],
    }
    assert {k: line["status"] for k, line in lines.items()} == dict.fromkeys(EXPECTED, "succeeded")
    assert report["flags"] == {"size_mismatch": 1}
    assert journal.read(job.out / "cat").entries["wide-2k"].flags == (Flag.SIZE_MISMATCH,)
    summary = captured.out.splitlines()
    assert "5 succeeded, 0 failed, 0 skipped, 0 pending, flagged: 1 size_mismatch" in summary[0]
    assert f"batchgen redo {job.out / 'cat'} --flag size_mismatch" in captured.out
    (warning,) = [line for line in captured.err.splitlines() if "size_mismatch" in line]
    assert "wide-2k: size_mismatch: asked for 2K 16:9, got 1376x768" in warning
    assert f"`batchgen redo {job.out / 'cat'} --flag size_mismatch` makes it again" in warning


def test_a_relay_dropping_the_aspect_ratio_is_flagged(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    sim = threaded_simulator(dropped_fields=("aspect_ratio",))
    job = Job(tmp_path, sim, ITEMS)
    assert job.run() == 0
    lines = item_lines(job)
    assert {k: (line["width"], line["height"], line["flags"]) for k, line in lines.items()} == {
        "wide-2k": (2048, 2048, ["size_mismatch"]),
        "square-1k": (1024, 1024, []),  # square was asked
        "portrait": (1024, 1024, ["size_mismatch"]),
        "small": (512, 512, []),  # no aspect asked
        "tall-wxh": (1024, 1024, ["size_mismatch"]),  # 1024x1792 names a shape too
    }
    assert job.report()["flags"] == {"size_mismatch": 3}


def test_flags_and_pixel_sizes_survive_the_runs_that_skip_the_item(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    sim = threaded_simulator(dropped_fields=("image_size",))
    job = Job(tmp_path, sim, ITEMS)
    assert job.run() == 0
    first = item_lines(job)
    log = job.out / "cat" / "journal.jsonl"
    for rerun in ("from the journal", "from the stamp of an unchanged job"):
        if rerun == "from the journal":
            job.write(ITEMS)  # the same manifest, written again: its stamp no longer holds
        lines = log.read_bytes().count(b"\n")
        assert job.run() == 0, rerun
        # The long way reads the journal and adds its run's line; the stamp's replay adds none.
        assert log.read_bytes().count(b"\n") == lines + (rerun == "from the journal"), rerun
        assert sim.stats.requests == 5, rerun  # nothing sent again
        again = item_lines(job)
        assert {k: line["status"] for k, line in again.items()} == dict.fromkeys(EXPECTED, "skipped")
        assert {k: (a["width"], a["height"], a["flags"]) for k, a in again.items()} == {
            k: (f["width"], f["height"], f["flags"]) for k, f in first.items()
        }, rerun
        assert job.report()["flags"] == {"size_mismatch": 1}, rerun
    assert (job.out / "cat" / "unchanged.json").is_file()


def test_redo_flag_remakes_exactly_the_flagged_items(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    lossy = threaded_simulator(dropped_fields=("image_size",))
    job = Job(tmp_path, lossy, ITEMS)
    assert job.run() == 0
    folder = job.out / "cat"
    before = (folder / "images/wide-2k.png").read_bytes()
    fixed = threaded_simulator()  # the relay, fixed
    redo = ["redo", str(folder), "--base-url", fixed.base_url, "-q", "--flag", "size_mismatch"]
    assert main(redo) == 0
    assert dict(fixed.stats.by_prompt) == {"a wide tote, 2K": 1}
    assert (folder / "history/wide-2k.1.png").read_bytes() == before  # the billed image, kept
    lines = item_lines(job)
    assert (lines["wide-2k"]["width"], lines["wide-2k"]["height"], lines["wide-2k"]["flags"]) == (
        2752,
        1536,
        [],
    )
    assert lines["wide-2k"]["version"] == 2
    assert job.report()["flags"] == {"size_mismatch": 0}
    assert journal.read(folder).entries["wide-2k"].flags == ()
    # Nothing is flagged now: a second redo --flag sends nothing.
    assert main(redo) == 0
    assert fixed.stats.requests == 1
    # With ids: those, and the flagged ones (none now).
    assert main([*redo, "small"]) == 0
    assert dict(fixed.stats.by_prompt) == {"a wide tote, 2K": 1, "a small tote": 1}


def test_redo_flag_with_ids_sends_both_each_once(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    lossy = threaded_simulator(dropped_fields=("aspect_ratio",))
    job = Job(tmp_path, lossy, ITEMS)
    assert job.run() == 0
    fixed = threaded_simulator()
    folder = str(job.out / "cat")
    code = main(
        ["redo", folder, "portrait", "small", "--flag", "size_mismatch", "--base-url", fixed.base_url, "-q"]
    )
    assert code == 0
    # The three flagged (portrait among them, sent once) and small.
    assert dict(fixed.stats.by_prompt) == {
        "a wide tote, 2K": 1,
        "a tall tote": 1,
        "a tall banner": 1,
        "a small tote": 1,
    }
    assert job.report()["flags"] == {"size_mismatch": 0}


def test_redo_with_an_unknown_flag_is_a_usage_error_and_sends_nothing(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, ITEMS[:1])
    assert job.run() == 0
    with pytest.raises(SystemExit) as exited:
        main(["redo", str(job.out / "cat"), "--flag", "blurry", "--base-url", sim.base_url])
    assert exited.value.code == 2
    assert "invalid choice: 'blurry'" in capsys.readouterr().err
    assert sim.stats.requests == 1


def test_run_simulate_can_drop_fields_and_refuses_unknown_ones(
    tmp_path: Path, write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_manifest({"job": "sim", "items": ITEMS[:2]})
    out = tmp_path / "out"
    args = ["run", str(path), "--simulate", "--output", str(out), "-q"]
    assert main([*args, "--sim-drop-fields", "image_size"]) == 0
    report = orjson.loads((out / "sim/report.json").read_bytes())
    assert report["flags"] == {"size_mismatch": 1}
    assert main([*args, "--sim-drop-fields", "image_size,seed"]) == 2
    assert "cannot drop ['seed']" in capsys.readouterr().err


# --- the records carry them, and what reads the records later keeps them --------------------------


def test_the_records_round_trip_pixel_sizes_and_flags() -> None:
    made = Entry(
        "a",
        ItemStatus.SUCCEEDED,
        "fp",
        "p",
        1,
        (JournalFile("images/a.png", "ab", 3, 1376, 768),),
        flags=(Flag.SIZE_MISMATCH,),
    )
    line = made.to_json(1.0)
    assert (line["files"][0]["width"], line["files"][0]["height"], line["flags"]) == (
        1376,
        768,
        ["size_mismatch"],
    )
    assert Entry.from_json(line) == made
    assert "flags" not in Entry("b", ItemStatus.SUCCEEDED, "fp", "p", 1).to_json(
        1.0
    )  # only when it says something
    car = Sidecar("a", files=(StoredFile("images/a.png", "ab", 3, "image/png", 1376, 768),))
    assert Sidecar.from_json(car.to_json()) == car
    items = (
        ReportItem("a", ItemStatus.SUCCEEDED, ("images/a.png",), 1, 1, (1376, 768), (Flag.SIZE_MISMATCH,)),
        ReportItem("b", ItemStatus.SKIPPED, ("images/b.png",), 1, 1, (2752, 1536)),
        ReportItem("c", ItemStatus.FAILED),
    )
    report = merge_reports([shard_report(items[:2], "1/2"), shard_report(items[2:], "2/2")])
    assert report.items == items  # merged: each item as its shard had it
    assert report.flags == {"size_mismatch": 1}
    data = report.to_json()
    assert data["flags"] == {"size_mismatch": 1}
    assert [(i.get("width"), i.get("height"), i.get("flags")) for i in data["items"]] == [
        (1376, 768, ["size_mismatch"]),
        (2752, 1536, []),
        (None, None, None),  # no image: nothing checked, nothing written
    ]
    assert Report.from_json(data) == report


def shard_report(items: tuple[ReportItem, ...], shard: str) -> Report:
    return assemble(
        job="j",
        manifest="m.yaml",
        items=items,
        failures=(),
        spend=Spend(),
        started_at=0,
        finished_at=1,
        aborted=None,
        shard=shard,
    )


def test_batchgen_report_rebuilds_a_gallery_with_the_flags(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], capsys: pytest.CaptureFixture[str]
) -> None:
    sim = threaded_simulator(dropped_fields=("image_size",))
    job = Job(tmp_path, sim, ITEMS)
    assert job.run() == 0
    folder = job.out / "cat"
    (folder / "report.html").unlink()
    assert main(["report", str(folder)]) == 0
    assert "flagged: 1 size_mismatch" in capsys.readouterr().out
    page = (folder / "report.html").read_text()
    block = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert block is not None
    data = orjson.loads(block.group(1))
    ids = [row[0] for row in data["items"]]
    assert data["flagged"] == {"size_mismatch": [ids.index("wide-2k")]}
    assert data["pixels"][data["pixel_of"][ids.index("wide-2k")]] == [1376, 768]
    assert '<option value="size_mismatch">size_mismatch (1)</option>' in page
    assert '<div class="fact"><span>flagged</span><b>1</b></div>' in page


# --- the page that documents it says what the code does ---------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "real-service.md"


def docs_section() -> str:
    text = DOCS.read_text()
    return text.split("## What arrived: the size check\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_table_is_the_one_the_code_reads() -> None:
    rows = re.findall(r"^\| (\d+:\d+) \| (\d+)x(\d+) \|$", docs_section(), re.M)
    assert {ratio: (int(w), int(h)) for ratio, w, h in rows} == relay.GEMINI_1K == GEMINI_1K


def timeless(text: str) -> list[str]:
    return re.sub(r"in \d+\.\ds:", "in #s:", text).splitlines()


def test_the_docs_example_prints_what_the_docs_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = DOCS.parent.parent
    shutil.copytree(repo / "jobs", tmp_path / "jobs", ignore=shutil.ignore_patterns("deploy"))
    monkeypatch.chdir(tmp_path)
    (_, command), (_, shown), (_, redo_commands) = re.findall(r"```(\w*)\n(.*?)```", docs_section(), re.S)
    args = command.split()
    assert args[0] == "batchgen"
    assert main(args[1:]) == 0
    captured = capsys.readouterr()
    printed = timeless(captured.err) + timeless(captured.out)
    expected = timeless(shown)
    warnings = [line for line in expected if line.startswith("batchgen: warning")]
    assert len(warnings) == 3
    assert sorted(printed[: len(warnings)]) == sorted(warnings)  # in the order the items finished
    assert printed[len(warnings) :] == expected[len(warnings) :]
    # The redo commands it shows: the first remakes the three flagged items, the second only the
    # id it names (nothing is flagged any more).
    for line in redo_commands.strip().splitlines():
        words = line.split("#", 1)[0].split()
        assert main([*words[1:], "--simulate", "-q"]) == 0
    report = orjson.loads((tmp_path / "output/demo/report.json").read_bytes())
    assert report["flags"] == {"size_mismatch": 0}
    assert {i["id"]: i.get("version", 1) for i in report["items"] if i.get("version", 1) > 1} == {
        "tote-red-lifestyle": 2,
        "tote-green-scene": 2,
        "tote-lineup": 2,
        "tote-red-front": 2,
    }


def test_the_readme_points_at_the_section() -> None:
    readme = (DOCS.parent.parent / "README.md").read_text()
    links = re.findall(r"\]\((docs/real-service\.md)#([a-z0-9-]+)\)", readme)
    assert ("docs/real-service.md", "what-arrived-the-size-check") in links
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in DOCS.read_text().splitlines()
        if line.startswith("## ")
    }
    assert {anchor for _, anchor in links} <= anchors


def test_json_logs_carry_the_flags(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], capsys: pytest.CaptureFixture[str]
) -> None:
    sim = threaded_simulator(dropped_fields=("image_size",))
    job = Job(tmp_path, sim, ITEMS[:2])
    args = [
        "run",
        str(job.path),
        "--base-url",
        sim.base_url,
        "--output",
        str(job.out),
        "--log-format",
        "json",
    ]
    assert main(args) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    (warning,) = [line for line in lines if line["level"] == "warning"]
    assert warning["message"].startswith("wide-2k: size_mismatch: asked for 2K 16:9, got 1376x768")
    finished = {line["id"]: line for line in lines if line.get("event") == "item_finished"}
    assert (finished["wide-2k"]["flags"], "flags" in finished["square-1k"]) == (["size_mismatch"], False)
    assert lines[-1]["event"] == "job_finished"
    assert lines[-1]["flags"] == {"size_mismatch": 1}


def test_the_simulator_command_takes_the_fields_to_drop() -> None:
    from batchgen.cli import arguments
    from batchgen.cli.main import simulator_config

    args = arguments.parse(["simulator", "--drop-fields", "aspect_ratio, image_size"])
    assert simulator_config(args, "").dropped_fields == ("aspect_ratio", "image_size")
    assert simulator_config(arguments.parse(["simulator"]), "").dropped_fields == ()


def test_a_failed_redo_leaves_the_item_flagged_for_the_next(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    job = Job(tmp_path, threaded_simulator(dropped_fields=("image_size",)), ITEMS, max_attempts=1)
    assert job.run() == 0
    folder = job.out / "cat"
    kept = (folder / "images/wide-2k.png").read_bytes()
    refusing = threaded_simulator(fault_rate=1.0, faults=("safety",))
    redo = ["redo", str(folder), "--flag", "size_mismatch", "-q", "--base-url"]
    assert main([*redo, refusing.base_url]) == 1
    assert refusing.stats.requests == 1
    assert (folder / "images/wide-2k.png").read_bytes() == kept  # the billed image stays
    assert journal.read(folder).entries["wide-2k"].flags == (Flag.SIZE_MISMATCH,)
    fixed = threaded_simulator()
    assert main([*redo, fixed.base_url]) == 0
    assert dict(fixed.stats.by_prompt) == {"a wide tote, 2K": 1}
    assert journal.read(folder).entries["wide-2k"].flags == ()


def test_redo_flag_passes_over_a_flagged_item_the_manifest_no_longer_has(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    job = Job(tmp_path, threaded_simulator(dropped_fields=("aspect_ratio",)), ITEMS)
    assert job.run() == 0  # wide-2k, portrait and tall-wxh flagged
    job.write([item for item in ITEMS if item["id"] != "portrait"])
    fixed = threaded_simulator()
    assert (
        main(["redo", str(job.out / "cat"), "--flag", "size_mismatch", "-q", "--base-url", fixed.base_url])
        == 0
    )
    assert dict(fixed.stats.by_prompt) == {"a wide tote, 2K": 1, "a tall banner": 1}


def test_pixel_sizes_are_read_in_the_io_threads_never_on_the_loop(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from batchgen.output import store

    readers: list[str] = []
    real = store.pixel_size

    def spy(data: bytes) -> tuple[int, int] | None:
        readers.append(threading.current_thread().name)
        return real(data)

    monkeypatch.setattr(store, "pixel_size", spy)
    job = Job(tmp_path, sim, ITEMS[:3])
    assert job.run() == 0  # the CLI runs its event loop in this, the main, thread
    assert len(readers) == 3
    assert threading.main_thread().name not in readers
    assert {line["width"] for line in item_lines(job).values()} == {2752, 1024, 928}
