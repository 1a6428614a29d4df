"""Channel variants and thumbnails, end to end against the simulator: what each fit and format
makes, what is made again (and never paid again), and what a failure leaves alone."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from PIL import Image

from batchgen.cli.main import main
from batchgen.manifest.variants import writable
from batchgen.output.journal import read as read_journal
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS

pytestmark = pytest.mark.usefixtures("api_key")

RED = "#ff0000"
# The simulator answers 16:9 at 1K with 1376 x 768, as Gemini does.
WIDE = {"aspect_ratio": "16:9"}
CHANNELS: dict[str, dict[str, Any]] = {
    "padded": {"size": "400x400", "fit": "pad", "background": RED, "format": "jpeg", "quality": 90},
    "cropped": {"size": "300x300", "fit": "crop", "format": "png"},
    "inside": {"size": "400x400", "fit": "contain", "format": "webp"},
    "narrow": {"height": 192, "format": "jpeg", "metadata": False},
    "big": {"width": 2000, "format": "webp", "quality": 60},
}
if writable("avif"):
    CHANNELS["half"] = {"width": 688, "format": "avif"}


class Job:
    def __init__(
        self, folder: Path, sim: Simulator, items: list[dict[str, Any]], variants: dict[str, Any]
    ) -> None:
        self.sim = sim
        self.path = folder / "jobs" / "cat.yaml"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.out = folder / "out"
        self.folder = self.out / "cat"
        self.write(items, variants)

    def write(self, items: list[dict[str, Any]], variants: dict[str, Any]) -> None:
        data = {
            "job": "cat",
            "limits": {**FAST_LIMITS, "concurrency": 2},
            "variants": variants,
            "items": items,
        }
        self.path.write_text(yaml.safe_dump(data, sort_keys=False))

    def run(self, *flags: str) -> int:
        """Quiet unless ``flags`` say otherwise."""
        flags = flags or ("-q",)
        return main(
            ["run", str(self.path), "--base-url", self.sim.base_url, "--output", str(self.out), *flags]
        )

    def report(self) -> dict[str, Any]:
        return dict(orjson.loads((self.folder / "report.json").read_bytes()))

    def sent(self) -> int:
        return sum(self.sim.stats.by_prompt.values())

    def opened(self, relative: str) -> Image.Image:
        image = Image.open(io.BytesIO((self.folder / relative).read_bytes()))
        image.load()
        return image


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_fit_and_format_makes_its_exact_size_with_its_metadata_and_leaves_the_original_alone(
    tmp_path: Path, sim: Simulator
) -> None:
    job = Job(tmp_path, sim, [{"id": "tote", "prompt": "a red tote <bag> & co", **WIDE}], CHANNELS)
    assert job.run() == 0

    journaled = read_journal(job.folder).entries["tote"].files[0]
    assert sha(job.folder / "images/tote.png") == journaled.sha256  # byte for byte what was sent
    assert job.opened("images/tote.png").size == (1376, 768)
    padded = job.opened("variants/padded/tote.jpg")
    assert (padded.format, padded.size) == ("JPEG", (400, 400))
    # 1376 x 768 into 400 x 400: 400 x 223, centred, red above and below, the picture between.
    for y in (2, 397):
        assert all(abs(a - b) < 12 for a, b in zip(padded.getpixel((200, y)), (255, 0, 0), strict=True))
    assert padded.getpixel((200, 200)) != padded.getpixel((200, 2))
    cropped = job.opened("variants/cropped/tote.png")
    assert (cropped.format, cropped.size) == ("PNG", (300, 300))
    inside = job.opened("variants/inside/tote.webp")
    assert (inside.format, inside.size) == ("WEBP", (400, 223))
    narrow = job.opened("variants/narrow/tote.jpg")
    assert narrow.size == (344, 192)
    assert job.opened("variants/big/tote.webp").size == (2000, 1116)
    if "half" in CHANNELS:
        assert job.opened("variants/half/tote.avif").size == (688, 384)
    assert job.opened("thumbs/tote.webp").size == (384, 214)  # there the moment run returned

    for name, relative in [("padded", "tote.jpg"), ("cropped", "tote.png"), ("inside", "tote.webp")]:
        packet = job.opened(f"variants/{name}/{relative}").info.get("xmp") or job.opened(
            f"variants/{name}/{relative}"
        ).info.get("XML:com.adobe.xmp", "")
        text = packet.decode() if isinstance(packet, bytes) else packet
        for said in (
            "<batchgen:id>tote</batchgen:id>",
            "a red tote &lt;bag&gt; &amp; co",
            "nano-banana",
            "<batchgen:job>cat<",
        ):
            assert said in text, (name, said)
    assert "xmp" not in narrow.info  # metadata: false

    (item,) = job.report()["items"]
    assert item["variants"] == {
        name: [f"variants/{name}/tote.{ {'jpeg': 'jpg'}.get(spec['format'], spec['format']) }"]
        for name, spec in sorted(CHANNELS.items())
    }
    assert item["upscaled"] == ["big"]  # 1376 -> 2000: enlarged 1.45x


def test_a_changed_spec_or_a_deleted_file_is_made_again_and_nothing_is_sent(
    tmp_path: Path, sim: Simulator
) -> None:
    items = [{"id": f"i{k}", "prompt": f"p {k}", "variants": ["web"] if k else []} for k in range(3)]
    web = {"width": 200, "format": "webp"}
    job = Job(tmp_path, sim, items, {"web": web})
    assert job.run() == 0
    assert job.sent() == 3
    assert not (job.folder / "variants/web/i0.webp").exists()  # variants: [] wants none
    kept = (job.folder / "variants/web/i2.webp").stat().st_mtime_ns

    (job.folder / "variants/web/i1.webp").unlink()
    assert job.run() == 0  # an unchanged manifest: its stamp sees the file gone
    assert job.sent() == 3
    assert job.opened("variants/web/i1.webp").size == (200, 200)
    assert (job.folder / "variants/web/i2.webp").stat().st_mtime_ns == kept  # right as it was: not made again

    (job.folder / "variants/web/i2.webp").write_bytes(b"damaged")
    job.write(items, {"web": {**web, "width": 120}})
    assert job.run() == 0
    assert job.sent() == 3  # never paid again to re-derive
    assert {k: job.opened(f"variants/web/i{k}.webp").size for k in (1, 2)} == {1: (120, 120), 2: (120, 120)}
    assert {i["id"]: i["status"] for i in job.report()["items"]} == {
        "i0": "skipped",
        "i1": "skipped",
        "i2": "skipped",
    }


def test_a_damaged_original_fails_only_its_variants_and_the_next_run_tries_again(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(
        tmp_path,
        sim,
        [{"id": f"i{k}", "prompt": f"p {k}"} for k in range(3)],
        {"web": {"width": 100, "format": "jpeg"}},
    )
    assert job.run() == 0
    original = job.folder / "images/i1.png"
    good = original.read_bytes()
    original.write_bytes(b"\0" * len(good))  # the same size: the run does not send it again
    for made in ("variants/web/i1.jpg", "thumbs/i1.webp", "derived/i1.json"):
        (job.folder / made).unlink()
    journal = (job.folder / "journal.jsonl").read_bytes()

    assert job.run("--log-format", "text") == 0
    assert job.sent() == 3
    item = {i["id"]: i for i in job.report()["items"]}
    assert set(item["i1"]["variant_errors"]) == {"thumb", "web"}
    assert "images/i1.png: not a readable image" in item["i1"]["variant_errors"]["web"]
    assert "i1: variant web not made" in capsys.readouterr().err
    assert item["i0"]["variants"] == {"web": ["variants/web/i0.jpg"]}
    assert "variant_errors" not in item["i0"]
    assert (job.folder / "journal.jsonl").read_bytes().startswith(journal)  # nothing lost or rewritten
    assert read_journal(job.folder).entries["i1"].files[0].sha256 == hashlib.sha256(good).hexdigest()
    assert not (job.folder / "unchanged.json").exists()  # not finished: the next run looks again

    original.write_bytes(good)
    assert job.run() == 0
    assert job.sent() == 3
    assert job.opened("variants/web/i1.jpg").size == (100, 100)
    assert "variant_errors" not in {i["id"]: i for i in job.report()["items"]}["i1"]


def test_report_remakes_what_a_killed_run_left_unmade(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, [{"id": "a", "prompt": "p", "n": 2}], {"web": {"width": 64, "format": "png"}})
    assert job.run() == 0
    for folder in ("thumbs", "variants", "derived"):
        for made in (job.folder / folder).rglob("*.*"):
            made.unlink()
    (job.folder / "report.json").write_bytes(
        orjson.dumps({**job.report(), "items": [{**i, "variants": {}} for i in job.report()["items"]]})
    )

    assert main(["report", str(job.folder), "-q"]) == 0

    assert sorted(p.name for p in (job.folder / "thumbs").iterdir()) == ["a-1.webp", "a-2.webp"]
    assert job.opened("variants/web/a-2.png").size == (64, 64)
    assert job.report()["items"][0]["variants"] == {"web": ["variants/web/a-1.png", "variants/web/a-2.png"]}
    assert job.sent() == 1


def test_a_variant_mistake_is_one_line_naming_file_item_and_field_and_nothing_is_sent(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(
        tmp_path,
        sim,
        [{"id": "a", "prompt": "p", "variants": ["web", "amazn"]}],
        {
            "web": {"width": 100, "format": "gif"},
            "thumb": {"width": 9, "format": "png"},
            "sq": {"size": "10x", "format": "png"},
        },
    )
    assert job.run() == 2
    err = capsys.readouterr().err
    assert f"{job.path}: variants.web.format: must be one of jpeg, webp, png, avif, not 'gif'" in err
    assert f"{job.path}: variants.thumb: is reserved" in err
    assert f"{job.path}: variants.sq.size: must be WxH" in err
    assert f"{job.path}: items[0] (id a): variants: names 'amazn', not a variant of this job" in err
    assert job.sent() == 0


def test_no_process_outlives_the_command_and_its_thumbnails_are_there_when_it_returns(tmp_path: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    subreaper = 36  # prctl(2) PR_SET_CHILD_SUBREAPER: orphaned descendants become our children
    if not sys.platform.startswith("linux") or libc.prctl(subreaper, 1) != 0:
        pytest.skip("needs Linux's child subreaper to see every process the command started")
    path = tmp_path / "cat.yaml"
    items = [{"id": f"i{k}", "prompt": f"p{k}"} for k in range(4)]
    path.write_text(yaml.safe_dump({"variants": {"web": {"width": 100, "format": "webp"}}, "items": items}))
    out = tmp_path / "out"
    try:
        command = [
            sys.executable,
            "-m",
            "batchgen",
            "run",
            str(path),
            "--simulate",
            "--output",
            str(out),
            "-q",
        ]
        with subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True, cwd=tmp_path) as proc:
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        # The moment it returned: every thumbnail and variant there.
        assert sorted(p.name for p in (out / "cat/thumbs").iterdir()) == [f"i{k}.webp" for k in range(4)]
        assert sorted(p.name for p in (out / "cat/variants/web").iterdir()) == [
            f"i{k}.webp" for k in range(4)
        ]
        # Whatever the command started is in its process group and, the command gone, our child:
        # one that kept running would be waited for here until the test's timeout. None is signalled.
        while True:
            try:
                _, status = os.waitpid(-proc.pid, 0)
            except ChildProcessError:
                break
            assert os.WIFEXITED(status), f"a process of the command ended by signal {os.WTERMSIG(status)}"
    finally:
        libc.prctl(subreaper, 0)


def test_merging_shards_brings_their_thumbnails_and_variants(tmp_path: Path, sim: Simulator) -> None:
    job = Job(
        tmp_path,
        sim,
        [{"id": f"i{k}", "prompt": f"p {k}"} for k in range(4)],
        {"web": {"width": 50, "format": "png"}},
    )
    for k in (1, 2):
        assert job.run("--shard", f"{k}/2", "-q") == 0
    shards = [str(job.folder / f"shard-{k}-of-2") for k in (1, 2)]
    assert main(["merge", *shards, "--output", str(tmp_path / "merged"), "-q"]) == 0
    merged = tmp_path / "merged/cat"
    report = orjson.loads((merged / "report.json").read_bytes())
    assert {i["id"]: i["variants"] for i in report["items"]} == {
        f"i{k}": {"web": [f"variants/web/i{k}.png"]} for k in range(4)
    }
    for k in range(4):
        with Image.open(merged / f"variants/web/i{k}.png") as made:
            assert made.size == (50, 50)
        assert (merged / f"thumbs/i{k}.webp").is_file()
        assert (merged / f"derived/i{k}.json").is_file()
