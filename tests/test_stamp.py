"""The stamp of an unchanged job, piece by piece and without the CLI: what it is valid for, what
ends it, and the outcomes it answers with. (tests/test_unchanged.py runs whole jobs with it.)"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import orjson
import pytest

from batchgen import manifest
from batchgen.job import unchanged
from batchgen.outcomes import Derived, Flag, ItemOutcome, ItemStatus
from batchgen.output import paths
from batchgen.output.store import JobStore

PARAMS = ({"model": "nano-banana-2", "size": "1K"}, {"model": "nano-banana-2", "size": "2K"})
THUMBS = Derived(files=(("thumb", ("derived/a.webp",)), ("web", ())), sizes=((30,), ()), upscaled=("web",))


def header(path: Path) -> manifest.Manifest:
    path.write_text("job: j\ngenerate: []\n")
    loaded = manifest.load_header(path)
    assert loaded is not None
    return loaded


def test_a_key_is_for_one_manifest_shard_price_table_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, other = header(tmp_path / "one.yaml"), header(tmp_path / "other.yaml")
    prices, cheaper = tmp_path / "prices.json", tmp_path / "cheaper.json"
    keys = {
        unchanged.key(one, None, None),
        unchanged.key(other, None, None),
        unchanged.key(one, (0, 2), None),
        unchanged.key(one, (1, 2), None),
        unchanged.key(one, None, prices),
        unchanged.key(one, None, cheaper),
    }
    assert len(keys) == 6
    monkeypatch.chdir(tmp_path)  # the same files named from elsewhere: the same key
    assert unchanged.key(header(Path("one.yaml")), None, Path("prices.json")) == unchanged.key(
        one, None, prices
    )
    monkeypatch.setattr(unchanged, "__version__", "0.0.0-another")
    assert unchanged.key(one, None, None) not in keys


class Job:
    """A job folder with one item of one image and one of two, a journal and a manifest."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = JobStore(tmp_path / "job")
        self.store.prepare()
        (self.store.root / "derived").mkdir()
        self.manifest = tmp_path / "job.yaml"
        self.manifest.write_text("job: job\n")
        self.store.write_bytes("images/a.png", b"a" * 100)
        self.store.write_bytes("images/b-1.png", b"b" * 7)
        self.store.write_bytes("images/b-2.jpg", b"c" * 8)
        self.store.write_bytes("derived/a.webp", b"t" * 30)
        self.store.write_bytes(paths.JOURNAL, b'{"id": "a"}\n')
        self.outcomes = [
            ItemOutcome(
                0,
                "a",
                "one",
                ItemStatus.SUCCEEDED,
                attempts=1,
                files=("images/a.png",),
                sizes=(100,),
                version=1,
                pixels=(928, 1152),
                flags=(Flag.SIZE_MISMATCH,),
                derived=THUMBS,
            ),
            ItemOutcome(
                1,
                "b",
                "two",
                ItemStatus.SKIPPED,
                attempts=2,
                files=("images/b-1.png", "images/b-2.jpg"),
                sizes=(7, 8),
                version=3,
            ),
        ]

    def sources(self) -> list[tuple[str, manifest.Signature]]:
        sig = unchanged.signature(self.manifest)
        assert sig is not None
        return [(str(self.manifest), sig)]

    def write(self, key: str = "k") -> bool:
        return unchanged.write(
            self.store, key, self.sources(), self.outcomes, (PARAMS, [1, 0]), ["a warning"], {"b": ["a"]}
        )

    def stamp(self, key: str = "k") -> unchanged.Stamp:
        found = unchanged.find(self.store.root, key)
        assert found is not None
        return found


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


def test_a_written_stamp_is_found_and_answers_as_the_run_ended(job: Job) -> None:
    assert job.write()
    stamp = job.stamp()
    assert stamp.key == "k"
    assert stamp.ids == ("a", "b")
    assert stamp.warnings == ("a warning",)
    assert stamp.parents == {"b": ("a",)}
    assert list(unchanged.param_rows(stamp)) == [PARAMS[1], PARAMS[0]]
    skipped = [
        ItemOutcome(
            o.index,
            o.id,
            o.prompt,
            ItemStatus.SKIPPED,
            o.attempts,
            o.files,
            sizes=o.sizes,
            version=o.version,
            pixels=o.pixels,
            flags=o.flags,
            derived=o.derived,
        )
        for o in job.outcomes
    ]
    assert unchanged.outcomes(stamp, job.store) == skipped


def test_a_stamp_reads_back_whole_and_refuses_another_format(job: Job) -> None:
    job.write()
    stamp = job.stamp()
    assert unchanged.Stamp.from_json(orjson.loads(orjson.dumps(stamp.to_json()))) == stamp
    with pytest.raises(ValueError, match="format 99"):
        unchanged.Stamp.from_json({**stamp.to_json(), "format": 99})


def test_a_stamp_whose_columns_disagree_is_not_read_short(job: Job) -> None:
    job.write()
    stamp = job.stamp()
    with pytest.raises(ValueError, match="zip"):
        unchanged.outcomes(dataclasses.replace(stamp, prompts=stamp.prompts[:1]), job.store)


@pytest.mark.parametrize(
    "derived",
    [
        Derived(files=(("thumb", ("derived/a.webp", "derived/a-2.webp")),), sizes=((30,),)),
        Derived(files=(("thumb", ("derived/a.webp",)), ("web", ())), sizes=((30,),)),
    ],
    ids=["a-size-short", "a-variant-short"],
)
def test_a_derived_record_whose_sizes_disagree_is_not_stamped_short(job: Job, derived: Derived) -> None:
    job.outcomes[0] = dataclasses.replace(job.outcomes[0], derived=derived)
    with pytest.raises(ValueError, match="zip"):
        job.write()


def test_an_item_whose_sizes_disagree_with_its_files_is_not_stamped_short(job: Job) -> None:
    job.outcomes[1] = dataclasses.replace(job.outcomes[1], sizes=(7,))
    with pytest.raises(ValueError, match="zip"):
        job.write()


def test_a_stamp_is_only_for_its_key(job: Job) -> None:
    job.write("k")
    assert unchanged.find(job.store.root, "another") is None
    assert unchanged.find(job.store.root / "elsewhere", "k") is None


def test_a_source_changed_since_ends_the_stamp(job: Job) -> None:
    job.write()
    job.manifest.write_text("job: job\nlimits: {concurrency: 2}\n")
    assert unchanged.find(job.store.root, "k") is None


@pytest.mark.parametrize(
    "damaged",
    [b"{not json", b"[1, 2]", b'{"key": "k"}', b'{"key": "k", "format": 1}', b"{}"],
    ids=["not-json", "not-a-record", "no-format", "old-format", "no-key"],
)
def test_a_damaged_or_foreign_stamp_is_no_stamp(job: Job, damaged: bytes) -> None:
    job.write()
    (job.store.root / paths.STAMP).write_bytes(damaged)
    assert unchanged.find(job.store.root, "k") is None


def test_a_source_changed_while_the_job_ran_leaves_no_stamp(
    job: Job, caplog: pytest.LogCaptureFixture
) -> None:
    sources = job.sources()
    job.manifest.write_text("job: job\nlimits: {concurrency: 2}\n")
    with caplog.at_level(logging.INFO):
        assert not unchanged.write(job.store, "k", sources, job.outcomes, (PARAMS, [0, 0]), [])
    assert not (job.store.root / paths.STAMP).exists()
    assert caplog.messages == [
        f"{job.manifest} changed while the job ran: the next run reads the manifest again"
    ]


def test_the_journal_written_since_ends_the_stamp(job: Job) -> None:
    job.write()
    stamp = job.stamp()
    with open(job.store.root / paths.JOURNAL, "ab") as f:
        f.write(b'{"id": "b"}\n')
    assert unchanged.outcomes(stamp, job.store) is None


def test_a_stamp_written_without_a_journal_wants_none(job: Job) -> None:
    os.unlink(job.store.root / paths.JOURNAL)
    assert unchanged.journal_signature(job.store.root) is None
    job.write()
    assert unchanged.outcomes(job.stamp(), job.store) is not None
    job.store.write_bytes(paths.JOURNAL, b"\n")
    assert unchanged.outcomes(job.stamp(), job.store) is None


@pytest.mark.parametrize("damage", ["delete", "truncate"])
@pytest.mark.parametrize("file", ["images/a.png", "images/b-2.jpg", "derived/a.webp"])
def test_an_image_or_thumbnail_gone_or_cut_short_ends_the_stamp(job: Job, file: str, damage: str) -> None:
    job.write()
    stamp = job.stamp()
    if damage == "delete":
        os.unlink(job.store.root / file)
    else:
        os.truncate(job.store.root / file, 1)
    assert unchanged.outcomes(stamp, job.store) is None


def test_a_flag_this_batchgen_does_not_know_is_dropped(job: Job) -> None:
    job.write()
    data = orjson.loads((job.store.root / paths.STAMP).read_bytes())
    data["flags"][0] = ["size_mismatch", "from_a_newer_batchgen"]
    (job.store.root / paths.STAMP).write_bytes(orjson.dumps(data))
    made = unchanged.outcomes(job.stamp(), job.store)
    assert made is not None
    assert made[0].flags == (Flag.SIZE_MISMATCH,)


def test_forget_removes_the_stamp_and_minds_none(job: Job) -> None:
    job.write()
    unchanged.forget(job.store)
    assert unchanged.find(job.store.root, "k") is None
    unchanged.forget(job.store)


def test_signature_of_a_file_and_of_none() -> None:
    assert unchanged.signature("/nonexistent/batchgen/file") is None
    st = os.stat(__file__)
    assert unchanged.signature(__file__) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def made(status: ItemStatus = ItemStatus.SUCCEEDED, **changes: object) -> ItemOutcome:
    fields: dict[str, object] = {"files": ("images/a.png",), "sizes": (100,), **changes}
    return ItemOutcome(0, "a", "p", status, 1, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([made()], True),
        ([made(ItemStatus.SKIPPED), made(derived=THUMBS)], True),
        ([], False),
        ([made(), made(ItemStatus.FAILED)], False),
        ([made(ItemStatus.PENDING)], False),
        ([made(files=(), sizes=())], False),
        ([made(sizes=())], False),  # a size the journal never had
        ([made(derived=Derived(errors=(("web", "too small"),)))], False),
    ],
    ids=[
        "made",
        "skipped-and-derived",
        "none",
        "one-failed",
        "pending",
        "no-files",
        "no-sizes",
        "variant-failed",
    ],
)
def test_what_may_be_stamped(outcomes: list[ItemOutcome], expected: bool) -> None:
    assert unchanged.stampable(outcomes) is expected
