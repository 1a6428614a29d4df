"""``batchgen redo`` of a job folder in a bucket (moto's S3 on 127.0.0.1, the simulator): the
review loop on a catalog that lives in a bucket. Exact request counts come from the simulator."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pybase64
import pytest
import yaml

from batchgen import config
from batchgen.cli.main import main
from batchgen.job import jobs, remote
from batchgen.manifest import validate
from batchgen.outcomes import Event
from batchgen.plan.resume import Mode
from batchgen.sim.simulator import Simulator

from . import test_storage
from .conftest import FAST_LIMITS
from .test_storage import FAST_STORE, S3, Job, chain, hold_lock

# moto's S3 and its environment, as test_storage starts them.
s3_server = test_storage.s3_server
s3 = test_storage.s3

WEB = {"web": {"width": 24, "format": "png"}}


def with_variants(job: Job, items: list[dict[str, Any]], variants: dict[str, Any] | None = WEB) -> None:
    data: dict[str, Any] = {"job": "cat", "limits": {**FAST_LIMITS, "concurrency": 4}, "items": items}
    if variants:
        data["variants"] = variants
    job.path.write_text(yaml.safe_dump(data, sort_keys=False))


def redo(job: Job, *args: str, work: str = "another-pod") -> int:
    """``batchgen redo`` of the bucket's job, from a work dir no run has used."""
    pod = job.work.parent / work
    return main(
        ["redo", f"{job.url}/cat", "--base-url", job.sim.base_url, "--work-dir", str(pod), "-q", *args]
    )


def versions(job: Job) -> dict[str, int]:
    lines = [orjson.loads(line) for line in job.object("journal.jsonl").splitlines()]
    return {line["id"]: line.get("version", 1) for line in lines if line.get("type") == "item"}


def test_a_redo_from_a_fresh_work_dir_keeps_the_old_version_in_the_buckets_history(
    tmp_path: Path, sim: Simulator, s3: S3
) -> None:
    job = Job(tmp_path, sim, s3)
    with_variants(job, [{"id": f"i{k}", "prompt": f"p {k}"} for k in range(3)])
    assert job.run() == 0
    old = {name: job.object(name) for name in job.held() if not name.startswith(".")}

    assert redo(job, "i1") == 0

    assert dict(sim.stats.by_prompt) == {"p 0": 1, "p 1": 2, "p 2": 1}  # one request: the redone item
    held = job.held()
    assert job.object("images/i1.png") != old["images/i1.png"]  # another take
    assert job.object("history/i1.1.png") == old["images/i1.png"]  # the old one, kept
    assert job.object("history/i1.1.json") == old["images/i1.json"]  # with its sidecar
    assert (
        orjson.loads(job.object("images/i1.json"))["files"][0]["sha256"]
        != (orjson.loads(old["images/i1.json"])["files"][0]["sha256"])
    )
    assert sorted(k for k in held if k.startswith("history/")) == ["history/i1.1.json", "history/i1.1.png"]
    # The old picture's thumbnail and variant replaced by the new one's; the others left alone.
    for name in ("thumbs/i1.webp", "variants/web/i1.png", "derived/i1.json"):
        assert job.object(name) != old[name], name
    for name in ("images/i0.png", "images/i2.png", "thumbs/i0.webp", "variants/web/i2.png"):
        assert job.object(name) == old[name], name
    assert versions(job) == {"i0": 1, "i1": 2, "i2": 1}
    report = orjson.loads(job.object("report.json"))
    assert {i["id"]: i.get("version", 1) for i in report["items"]} == {"i0": 1, "i1": 2, "i2": 1}
    assert ".lock" not in held
    # The gallery names the bucket's folder in its redo command, and shows the kept version.
    page = job.object("report.html").decode()
    assert f'"folder":"{job.url}/cat"' in page
    assert "history/i1.1.png" in page
    # Copied inside the store: no old image or sidecar passed through this machine.
    assert not list((tmp_path / "another-pod").rglob("i1.1.*"))
    assert not list((tmp_path / "another-pod").rglob("images/*.png"))  # and the spool let go of the new one

    # Again, once the manifest asks for no variant: version 2 is kept beside version 1, and no
    # variant of an old picture is left beside the new one.
    with_variants(job, [{"id": f"i{k}", "prompt": f"p {k}"} for k in range(3)], variants=None)
    assert redo(job, "i1", work="a-third-pod") == 0
    held = job.held()
    assert job.object("history/i1.1.png") == old["images/i1.png"]
    assert "history/i1.2.png" in held
    assert "variants/web/i1.png" not in held
    assert "variants/web/i0.png" in held  # an item the redo left alone keeps what it had
    assert "thumbs/i1.webp" in held  # the new picture's
    assert sim.stats.requests == 5
    assert versions(job)["i1"] == 3
    # `batchgen report` on the bucket's folder rebuilds the same gallery: the bucket's name, its history.
    s3.client().delete_object(Bucket=job.bucket, Key="night/cat/report.html")
    assert main(["report", f"{job.url}/cat", "-q"]) == 0
    page = job.object("report.html").decode()
    assert f'"folder":"{job.url}/cat"' in page
    assert "history/i1.2.png" in page


@pytest.mark.parametrize("work", ["another-pod", "work"], ids=["from-a-fresh-pod", "from-the-same-work-dir"])
def test_a_take_that_comes_back_as_jpeg_leaves_no_old_png_in_the_bucket(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], s3: S3, work: str
) -> None:
    # Gemini may answer JPEG where it answered PNG before: the catalog then holds the JPEG
    # alone under images/, the PNG kept in history/ (as a job folder does).
    job = Job(tmp_path, threaded_simulator(image_format="alternate"), s3)
    with_variants(job, [{"id": f"i{k}", "prompt": f"p {k}"} for k in range(2)])
    assert job.run() == 0
    old = job.object("images/i1.png")

    assert redo(job, "i1", work=work) == 0

    images = sorted(k for k in job.held() if k.startswith("images/"))
    assert images == ["images/i0.json", "images/i0.png", "images/i1.jpg", "images/i1.json"]
    assert job.object("images/i1.jpg").startswith(b"\xff\xd8\xff")
    assert job.object("history/i1.1.png") == old
    sidecar = orjson.loads(job.object("images/i1.json"))
    assert [f["path"] for f in sidecar["files"]] == ["images/i1.jpg"]


@pytest.mark.parametrize("work", ["another-pod", "work"], ids=["from-a-fresh-pod", "from-the-same-work-dir"])
def test_an_item_edited_to_fewer_images_leaves_none_of_the_old_ones_in_the_bucket(
    tmp_path: Path, sim: Simulator, s3: S3, work: str
) -> None:
    job = Job(tmp_path, sim, s3)
    with_variants(job, [{"id": "set", "prompt": "a set", "n": 3}])
    assert job.run() == 0
    third = job.object("images/set-3.png")
    with_variants(job, [{"id": "set", "prompt": "a set", "n": 2}])
    assert job.run(work=tmp_path / work) == 0
    held = job.held()
    assert sorted(k for k in held if k.startswith("images/")) == [
        "images/set-1.png",
        "images/set-2.png",
        "images/set.json",
    ]
    assert job.object("history/set-3.1.png") == third
    assert not [k for k in held if "set-3" in k and not k.startswith("history/")]
    assert dict(sim.stats.by_prompt) == {"a set": 2}


def test_redo_flag_takes_the_flags_from_the_buckets_journal_and_its_hint_works(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = threaded_simulator(dropped_fields=("image_size",))  # 2K asked, Gemini's 1K sent
    job = Job(tmp_path, sim, s3)
    wide = {"id": "wide", "prompt": "a wide tote", "image_size": "2K", "aspect_ratio": "16:9"}
    job.write([wide, {"id": "plain", "prompt": "a plain tote"}])
    assert main(job.argv("--work-dir", str(job.work))) == 0
    out = capsys.readouterr().out
    hint = re.search(r"to make them again: (batchgen redo .*)$", out, flags=re.M)
    assert hint is not None
    argv = shlex.split(hint.group(1))[1:]
    assert argv[1] == f"{job.url}/cat"  # the bucket's folder, not the spool
    old = job.object("images/wide.png")

    # The command the summary printed, run from another machine.
    pod = str(tmp_path / "another-pod")
    assert main([*argv, "--base-url", sim.base_url, "--work-dir", pod, "-q"]) == 0

    assert dict(sim.stats.by_prompt) == {"a wide tote": 2, "a plain tote": 1}
    assert job.object("history/wide.1.png") == old
    assert versions(job) == {"wide": 2, "plain": 1}


def test_unknown_ids_are_a_usage_error_and_nothing_is_sent_or_touched(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3, n=2)
    assert job.run() == 0
    before = job.held()
    capsys.readouterr()
    assert redo(job, "i1", "nope") == 2
    err = capsys.readouterr().err
    assert "1 id(s) not in job 'cat'" in err
    assert "nope; nothing was sent" in err
    assert len(err.strip().splitlines()) == 1
    assert sim.stats.requests == 2
    assert job.held() == before


def test_shard_folders_and_the_merged_folder_each_take_a_redo(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3, n=6)
    assert job.run("--shard", "1/2", work=tmp_path / "pod-1") == 0
    mine = sorted(k.split("/")[-1][:-4] for k in job.held() if k.endswith(".png"))
    other = sorted({f"i{k}" for k in range(6)} - set(mine))[0]
    shard = f"{job.url}/cat/shard-1-of-2"
    base = ["--base-url", sim.base_url, "--work-dir", str(tmp_path / "pod"), "-q"]
    capsys.readouterr()
    assert main(["redo", shard, other, *base]) == 2
    assert "not in shard 1/2 of job 'cat'" in capsys.readouterr().err
    assert sim.stats.requests == len(mine)
    assert main(["redo", shard, mine[0], *base]) == 0
    assert sim.stats.requests == len(mine) + 1
    assert f"shard-1-of-2/history/{mine[0]}.1.png" in job.held()

    # The catalog's usual path: shards merged, the merged gallery reviewed, the redo run on it.
    assert job.run("--shard", "2/2", work=tmp_path / "pod-2") == 0
    assert main(["merge", f"{job.url}/cat", "--output", job.url, "-q"]) == 0
    page = job.object("report.html").decode()
    assert f'"folder":"{job.url}/cat"' in page  # its redo command names the merged folder
    assert f"history/{mine[0]}.1.png" in page  # and it shows the version the shard's redo kept
    assert main(["redo", f"{job.url}/cat", other, *base]) == 0
    assert sim.stats.requests == 8
    assert f"history/{other}.1.png" in job.held()
    assert versions(job)[other] == 2

    # Merged again, as the next night's merge does: what the merged folder made itself stays.
    made = {
        name: job.object(name)
        for name in (f"images/{other}.png", f"images/{other}.json", f"thumbs/{other}.webp")
    }
    assert main(["merge", f"{job.url}/cat", "--output", job.url, "-q"]) == 0
    assert {name: job.object(name) for name in made} == made
    assert versions(job)[other] == 2
    rows = {item["id"]: item for item in orjson.loads(job.object("report.json"))["items"]}
    assert rows[other].get("version") == 2
    assert f"history/{other}.1.png" in job.object("report.html").decode()
    assert main(["run", str(job.path), "--base-url", sim.base_url, "--output", job.url, *base]) == 0
    assert sim.stats.requests == 8  # the merged folder knows its image is paid for


def test_the_items_made_from_a_redone_image_are_redone_unless_no_dependents(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], s3: S3
) -> None:
    sim = threaded_simulator(record_bodies=True)
    job = Job(tmp_path, sim, s3)
    job.write(chain())
    assert job.run() == 0
    assert redo(job, "hero", "--no-dependents") == 0
    assert dict(sim.stats.by_prompt) == {"hero photo": 2, "back view": 1, "other photo": 1, "side view": 1}
    assert "history/hero.1.png" in job.held()
    assert "history/back.1.png" not in job.held()
    assert redo(job, "hero") == 0
    assert dict(sim.stats.by_prompt) == {"hero photo": 3, "back view": 2, "other photo": 1, "side view": 1}
    assert {"history/hero.2.png", "history/back.1.png"} <= set(job.held())
    assert versions(job) == {"hero": 3, "back": 2, "other": 1, "side": 1}
    # A dependent alone, from a pod that holds no image: sent with its parent's, from the bucket.
    assert redo(job, "back", work="a-third-pod") == 0
    assert sim.stats.by_prompt["back view"] == 3
    (uri,) = [b for b in sim.stats.bodies if b["prompt"] == "back view"][-1]["extra_fields"][
        "reference_images"
    ]
    assert pybase64.b64decode(uri.partition(",")[2]) == job.object("images/hero.png")


def test_a_redo_is_refused_while_another_run_holds_the_bucket_lock(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3, n=2)
    assert job.run() == 0
    before = {name: job.object(name) for name in job.held()}
    hold_lock(job, "another-pod", lease_s=600)
    capsys.readouterr()
    assert redo(job, "i0") == 3
    assert "in use by another batchgen run" in capsys.readouterr().err
    assert sim.stats.requests == 2
    assert {name: job.object(name) for name in job.held() if name != ".lock"} == before


def redo_api(job: Job, ids: frozenset[str], on_event: Callable[[Event], None]) -> jobs.JobOutput:
    """``redo`` through the library, with a store that gives up fast."""
    options = jobs.RunOptions(overrides=config.Overrides(base_url=job.sim.base_url), mode=Mode.REDO, redo=ids)
    bucket = remote.RemoteOutput(f"{job.url}", job.work, retries=FAST_STORE)
    return asyncio.run(
        remote.run_manifest(validate.load(job.path), options, bucket, os.environ, on_event=on_event)
    )


def test_the_store_failing_mid_redo_loses_no_version_and_the_next_run_pays_nothing(
    tmp_path: Path, sim: Simulator, s3: S3
) -> None:
    job = Job(tmp_path, sim, s3, n=6)
    assert job.run(work=tmp_path / "first-pod") == 0
    old = {k: job.object(f"images/i{k}.png") for k in range(6)}
    try:
        output = redo_api(
            job, frozenset(f"i{k}" for k in range(6)), test_storage.outage_at_the_first_item(s3)
        )
    finally:
        s3.restart()
    assert output.report.status.value == "partial"
    assert sim.stats.requests == 12
    held = job.held()
    for k in range(6):  # the old image or the new one, never neither; a new one only once the old is kept
        assert f"images/i{k}.png" in held
        if job.object(f"images/i{k}.png") != old[k]:
            assert job.object(f"history/i{k}.1.png") == old[k]
    assert sum(job.object(f"images/i{k}.png") == old[k] for k in range(6)) > 0  # the outage held some back

    # The next run from the same work dir uploads what waits, each old version kept first; sends nothing.
    assert job.run() == 0
    assert sim.stats.requests == 12
    for k in range(6):
        assert job.object(f"history/i{k}.1.png") == old[k]
        assert job.object(f"images/i{k}.png") != old[k]
    assert versions(job) == {f"i{k}": 2 for k in range(6)}


def test_old_images_the_new_versions_dropped_go_from_the_bucket_when_they_go_up_on_the_next_run(
    tmp_path: Path, sim: Simulator, s3: S3
) -> None:
    # Six items of two images each edited to one; the store fails as the first is made, so the
    # next run from the same work dir uploads the rest, and deletes what they no longer have.
    job = Job(tmp_path, sim, s3)
    job.write([{"id": f"i{k}", "prompt": f"p {k}", "n": 2} for k in range(6)])
    assert job.run() == 0
    old = {k: job.object(f"images/i{k}-2.png") for k in range(6)}
    job.write([{"id": f"i{k}", "prompt": f"p {k}"} for k in range(6)])
    try:
        output = test_storage.run_api(job, job.work, test_storage.outage_at_the_first_item(s3))
    finally:
        s3.restart()
    assert output.report.status.value == "partial"
    assert job.run() == 0
    held = job.held()
    assert sorted(k for k in held if k.startswith("images/") and k.endswith(".png")) == [
        f"images/i{k}.png" for k in range(6)
    ]
    assert all(job.object(f"history/i{k}-2.1.png") == old[k] for k in range(6))
    assert sim.stats.requests == 12


def test_an_image_a_killed_redo_left_unjournaled_in_the_spool_never_goes_over_the_buckets(
    tmp_path: Path, sim: Simulator, s3: S3
) -> None:
    from .conftest import png_bytes

    job = Job(tmp_path, sim, s3, n=2)
    assert job.run() == 0
    old = job.object("images/i1.png")
    # Killed after the new image was written in the spool, before its journal line: nothing
    # vouches for it, and the bucket's own image is the only copy of the one it would replace.
    spool = remote.locate(remote.RemoteOutput(job.url, job.work), "cat", None, os.environ).spool
    (spool / "images/i1.png").write_bytes(png_bytes(16, 16, hue=3))
    assert job.run() == 0
    assert job.object("images/i1.png") == old
    assert sim.stats.requests == 2


def test_the_old_version_is_kept_and_its_thumbnail_gone_before_the_new_files_go_up(
    tmp_path: Path, s3: S3
) -> None:
    """The order of the uploader's requests, recorded by a bucket that notes each one's start and end."""
    from batchgen.outcomes import ItemStatus
    from batchgen.output import spool
    from batchgen.output.bucket import Bucket, Location
    from batchgen.output.journal import Entry, JournalFile

    class Recording(Bucket):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.calls: list[tuple[str, str, str]] = []

        async def put(self, path: str, data: bytes | Path) -> None:
            self.calls.append(("put", path, "start"))
            await super().put(path, data)
            self.calls.append(("put", path, "end"))

        async def copy(self, source: str, target: str) -> None:
            await super().copy(source, target)
            self.calls.append(("copy", source, "end"))

        async def delete(self, path: str) -> None:
            await super().delete(path)
            self.calls.append(("delete", path, "end"))

    name = s3.make_bucket()
    old = {"images/i1.png": b"old picture", "images/i1.json": b"{}", "thumbs/i1.webp": b"old thumb"}
    for key, data in old.items():
        s3.client().put_object(Bucket=name, Key=f"cat/{key}", Body=data)
    new = {
        "images/i1.png": b"the new picture",
        "images/i1.json": b'{"v": 2}',
        "thumbs/i1.webp": b"new thumb!",
    }
    for key, data in new.items():
        (tmp_path / key).parent.mkdir(exist_ok=True)
        (tmp_path / key).write_bytes(data)
    entry = Entry(
        "i1", ItemStatus.SUCCEEDED, "f", "p", 1, (JournalFile("images/i1.png", "h", 15),), version=2
    )
    (tmp_path / "journal.jsonl").write_bytes(orjson.dumps(entry.to_json(0.0)) + b"\n")
    mirror = spool.Mirror({key: len(data) for key, data in old.items()}, [])
    mirror.replaced.add(["images/i1.png", "images/i1.json"], 1)  # as the redo's history.keep says
    bucket = Recording(Location.parse(f"s3://{name}/cat"), config.storage(os.environ))

    async def upload() -> tuple[bytes, int]:
        async with spool.Uploader(bucket, tmp_path, mirror) as uploader:
            drained = s3.get(name, "cat/images/i1.png")  # once what waited went up, before the run
            return drained, await uploader.finish()

    assert asyncio.run(upload()) == (new["images/i1.png"], 0)
    calls = bucket.calls
    kept = max(calls.index(("copy", f, "end")) for f in ("images/i1.png", "images/i1.json"))
    assert kept < min(calls.index(("put", f, "start")) for f in ("images/i1.png", "images/i1.json"))
    assert calls.index(("delete", "thumbs/i1.webp", "end")) < calls.index(("put", "thumbs/i1.webp", "start"))
    assert s3.get(name, "cat/history/i1.1.png") == b"old picture"
    assert s3.get(name, "cat/history/i1.1.json") == b"{}"
    assert {key: s3.get(name, f"cat/{key}") for key in new} == new
