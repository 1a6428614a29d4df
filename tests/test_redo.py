"""batchgen redo, end to end against the simulator: exactly the named items, fresh keys, history kept."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from PIL import Image, ImageStat

from batchgen.cli.main import main
from batchgen.output.journal import read as read_journal
from batchgen.sim.simulator import Simulator

from .conftest import assert_png_whole
from .test_rerun import Job, items
from .test_signals import when_requests_reach

pytestmark = pytest.mark.usefixtures("api_key")


def redo(job: Job, *args: str) -> int:
    return main(["redo", str(job.out / "cat"), "--base-url", job.sim.base_url, "-q", *args])


def test_redo_sends_exactly_the_named_items_with_fresh_keys_and_keeps_the_old_images(
    tmp_path: Path, sim: Simulator
) -> None:
    job = Job(tmp_path, sim, items(5))
    assert job.run() == 0
    folder = job.out / "cat"
    first = {p: (folder / f"images/i{p}.png").read_bytes() for p in range(5)}
    keys = sim.takes()

    assert redo(job, "i1", "i3") == 0

    assert job.requests() == {"p 0": 1, "p 1": 2, "p 2": 1, "p 3": 2, "p 4": 1}
    after = sim.takes()
    for k in (1, 3):
        assert len(after[f"p {k}"]) == 2
        assert after[f"p {k}"][0] == keys[f"p {k}"][0]
        assert (folder / f"history/i{k}.1.png").read_bytes() == first[k]  # the old image, kept
        assert orjson.loads((folder / f"history/i{k}.1.json").read_bytes())["files"][0]["path"] == (
            f"images/i{k}.png"
        )
        assert (folder / f"images/i{k}.png").read_bytes() != first[k]  # a new picture (another take)
        assert_png_whole(folder / f"images/i{k}.png")
    assert sorted(os.listdir(folder / "history")) == ["i1.1.json", "i1.1.png", "i3.1.json", "i3.1.png"]
    # The redo made the new pictures' thumbnails before it returned.
    assert sorted(os.listdir(folder / "thumbs")) == [f"i{k}.webp" for k in range(5)]
    for k in (0, 2, 4):
        assert (folder / f"images/i{k}.png").read_bytes() == first[k]
    entries = read_journal(folder).entries
    assert {k: e.version for k, e in entries.items()} == {"i0": 1, "i1": 2, "i2": 1, "i3": 2, "i4": 1}
    sidecar = orjson.loads((folder / "images/i1.json").read_bytes())
    assert sidecar["files"][0]["sha256"] == entries["i1"].files[0].sha256
    report = job.report()
    assert job.statuses() == {
        "i0": "skipped",
        "i1": "succeeded",
        "i2": "skipped",
        "i3": "succeeded",
        "i4": "skipped",
    }
    assert {i["id"]: i.get("version", 1) for i in report["items"]} == {
        "i0": 1,
        "i1": 2,
        "i2": 1,
        "i3": 2,
        "i4": 1,
    }
    assert report["requests_sent"] == 2

    # A later run leaves the new versions alone; a second redo makes version 3 and keeps version 2.
    assert job.run() == 0
    assert sum(job.requests().values()) == 7
    assert redo(job, "i1") == 0
    assert (folder / "history/i1.2.png").is_file()
    assert (folder / "history/i1.1.png").read_bytes() == first[1]
    assert read_journal(folder).entries["i1"].version == 3
    assert len(set(sim.takes()["p 1"])) == 3


def mean_colour(data: bytes) -> tuple[float, ...]:
    with Image.open(io.BytesIO(data)) as opened:
        return tuple(ImageStat.Stat(opened.convert("RGB").resize((64, 64))).mean)


def test_a_redo_never_leaves_the_old_pictures_thumbnail(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(3))
    assert job.run() == 0
    folder = job.out / "cat"
    old = (folder / "thumbs/i1.webp").read_bytes()
    kept = (folder / "thumbs/i0.webp").stat().st_mtime_ns

    assert redo(job, "i1") == 0

    # The moment the redo returns, the thumbnail is the new picture's; the others were left alone.
    assert (folder / "thumbs/i0.webp").stat().st_mtime_ns == kept
    new = (folder / "thumbs/i1.webp").read_bytes()
    picture = mean_colour((folder / "images/i1.png").read_bytes())
    assert max(abs(a - b) for a, b in zip(mean_colour(new), picture, strict=True)) < 8
    assert max(abs(a - b) for a, b in zip(mean_colour(old), picture, strict=True)) > 20  # another take


def test_unknown_ids_are_named_and_nothing_is_sent(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, items(3))
    assert job.run() == 0
    sent = sum(job.requests().values())
    assert redo(job, "i1", "nope", "i9") == 2
    err = capsys.readouterr().err
    assert "2 id(s) not in job 'cat'" in err
    assert "i9, nope" in err
    assert "nothing was sent" in err
    assert sum(job.requests().values()) == sent
    assert redo(job) == 2
    assert "name the items to make again" in capsys.readouterr().err
    assert not (job.out / "cat/history").exists()


def test_an_ids_file_as_the_gallery_exports_it(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(4))
    assert job.run() == 0
    ids = tmp_path / "redo.txt"
    ids.write_text("# marked in report.html\ni0\n\ni2  \n")
    assert redo(job, "--ids-file", str(ids)) == 0
    assert job.requests() == {"p 0": 2, "p 1": 1, "p 2": 2, "p 3": 1}
    assert redo(job, "--ids-file", str(tmp_path / "missing.txt")) == 2


def test_a_failed_redo_keeps_the_image_and_the_journal_says_so(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(2), max_attempts=1)
    assert job.run() == 0
    folder = job.out / "cat"
    before = (folder / "images/i0.png").read_bytes()
    sim.config = replace(sim.config, fault_rate=1.0, faults=("safety",))
    assert redo(job, "i0") == 1
    (failure,) = job.report()["failures"]
    assert failure["id"] == "i0"
    assert failure["class"] == "safety_filter"
    assert "earlier image is kept" in failure["message"]
    assert (folder / "images/i0.png").read_bytes() == before
    entry = read_journal(folder).entries["i0"]
    assert (entry.status, entry.version) == ("succeeded", 1)  # what is on disk, still
    sim.config = replace(sim.config, fault_rate=0.0)
    assert job.run() == 0
    assert job.statuses()["i0"] == "skipped"


def test_force_keeps_what_it_replaces_and_asks_with_a_new_key(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, items(2))
    assert job.run() == 0
    assert job.run("--force") == 0
    assert sorted(os.listdir(job.out / "cat/history")) == ["i0.1.json", "i0.1.png", "i1.1.json", "i1.1.png"]
    assert all(len(set(keys)) == 2 for keys in sim.takes().values())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_mid_redo_leaves_the_old_image_or_the_new_one(
    seed: int, tmp_path: Path, threaded_simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = threaded_simulator(latency_ms=random.Random(seed).randint(1, 20), payload_kb=512)
    job = Job(tmp_path, sim, items(12), concurrency=4)
    assert job.run() == 0
    folder = job.out / "cat"
    old = {k: (folder / f"images/i{k}.png").read_bytes() for k in range(12)}
    reached = when_requests_reach(sim, 12 + random.Random(seed).randint(1, 10))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGEN_")}
    ids = [f"i{k}" for k in range(12)]
    command = [sys.executable, "-m", "batchgen", "redo", str(folder), *ids, "--base-url", sim.base_url, "-q"]
    with subprocess.Popen(command, env={**env, "BATCHGEN_API_KEY": "k"}, stderr=subprocess.PIPE) as proc:
        assert reached.wait(timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    entries = read_journal(folder).entries
    for k in range(12):
        image = folder / f"images/i{k}.png"
        assert_png_whole(image)  # never neither, never half of one
        data = image.read_bytes()
        if entries[f"i{k}"].version == 2:
            assert (folder / f"history/i{k}.1.png").read_bytes() == old[k]
        elif data != old[k]:
            # Replaced, but killed before its journal line: the old one is in history already.
            assert (folder / f"history/i{k}.1.png").read_bytes() == old[k]
    sim.on_request = None
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    assert redo(job, *ids) == 0
    assert not list(folder.rglob(".batchgen-*"))
    for k in range(12):
        assert (folder / f"history/i{k}.1.png").read_bytes() == old[k]
        assert_png_whole(folder / f"images/i{k}.png")
