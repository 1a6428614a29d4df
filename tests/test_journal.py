"""The journal: append-only, fsync'd, and readable after any crash."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from batchgen.errors import ErrorClass
from batchgen.outcomes import Failure, Flag, ItemOutcome, ItemStatus
from batchgen.output import journal
from batchgen.output.journal import Entry, Journal, JournalFile


def ok(item_id: str, fingerprint: str = "f1") -> Entry:
    files = (JournalFile(f"images/{item_id}.png", "ab", 10),)
    return Entry(item_id, ItemStatus.SUCCEEDED, fingerprint, "p", 1, files)


def bad(item_id: str) -> Entry:
    return Entry(
        item_id,
        ItemStatus.FAILED,
        "f1",
        "p",
        4,
        error_class=ErrorClass.SERVER_ERROR,
        message="HTTP 502",
        http_status=502,
        retryable=True,
    )


def write(folder: Path, *entries: Entry) -> None:
    book = Journal(folder)
    book.open()
    book.run_started(folder / "m.yaml", 1.0)
    for e in entries:
        book.append(e.to_json(2.0))
    book.close()


def test_round_trip_last_word_wins(tmp_path: Path) -> None:
    write(tmp_path, bad("a"), ok("b"))
    write(tmp_path, ok("a", "f2"))
    state = journal.read(tmp_path)
    assert state.entries == {"a": ok("a", "f2"), "b": ok("b")}
    assert state.manifest == str((tmp_path / "m.yaml").resolve())
    assert state.damaged_lines == 0


def test_failure_fields_survive(tmp_path: Path) -> None:
    write(tmp_path, bad("a"))
    assert journal.read(tmp_path).entries["a"] == bad("a")


def test_no_journal_is_an_empty_state(tmp_path: Path) -> None:
    state = journal.read(tmp_path)
    assert (state.entries, state.manifest) == ({}, None)


def test_a_torn_last_line_is_tolerated_and_closed_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, ok("a"))
    with open(tmp_path / journal.JOURNAL, "ab") as f:
        f.write(orjson.dumps(ok("b").to_json(3.0))[:25])  # the crash: half a line
    state = journal.read(tmp_path)
    assert set(state.entries) == {"a"}
    assert state.damaged_lines == 1
    assert "damaged line" in caplog.text
    write(tmp_path, ok("c"))  # the next run appends on a fresh line
    assert set(journal.read(tmp_path).entries) == {"a", "c"}


@pytest.mark.parametrize(
    "garbage", [b"\x00\x00\x00", b"[1, 2]", b'{"type": "item", "id": "x"}', b"{not json"]
)
def test_damaged_lines_in_the_middle_are_skipped(tmp_path: Path, garbage: bytes) -> None:
    write(tmp_path, ok("a"))
    with open(tmp_path / journal.JOURNAL, "ab") as f:
        f.write(garbage + b"\n")
    write(tmp_path, ok("b"))
    state = journal.read(tmp_path)
    assert set(state.entries) == {"a", "b"}
    assert state.damaged_lines == 1


def test_statuses_and_classes_read_back_as_enums(tmp_path: Path) -> None:
    write(tmp_path, bad("a"), ok("b"))
    entries = journal.read(tmp_path).entries
    assert entries["a"].status is ItemStatus.FAILED
    assert entries["a"].error_class is ErrorClass.SERVER_ERROR
    assert entries["b"].status is ItemStatus.SUCCEEDED
    assert entries["b"].error_class is None


def test_a_failure_class_this_version_does_not_know_reads_as_none(tmp_path: Path) -> None:
    line = {**bad("a").to_json(2.0), "class": "a_class_from_the_future"}
    (tmp_path / journal.JOURNAL).write_bytes(orjson.dumps(line) + b"\n")
    state = journal.read(tmp_path)
    assert state.entries["a"].error_class is None
    assert state.damaged_lines == 0


def test_the_run_header_round_trips_and_reads_what_older_lines_lack(tmp_path: Path) -> None:
    header = journal.RunHeader.of(tmp_path / "jobs/m.yaml", tmp_path / "out/j", 5.0, "2/3")
    assert header.manifest_relative == "../../jobs/m.yaml"
    assert journal.RunHeader.from_json(header.to_json()) == header
    assert journal.RunHeader.from_json({"type": "run"}) == journal.RunHeader("", None, 0.0)


def raw_lines(folder: Path) -> list[bytes]:
    return (folder / journal.JOURNAL).read_bytes().split(b"\n")[:-1]


def append_raw(folder: Path, *lines: bytes) -> None:
    with open(folder / journal.JOURNAL, "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def test_every_field_survives_a_round_trip(tmp_path: Path) -> None:
    remade = Entry(
        "a",
        ItemStatus.SUCCEEDED,
        "f1",
        "p",
        2,
        (JournalFile("images/a.png", "ab", 10),),
        estimated_cost=0.078,
        version=3,
    )
    lost = Entry(
        "b",
        ItemStatus.FAILED,
        "f2",
        "q",
        1,
        error_class=ErrorClass.DOWNLOAD_FAILED,
        message="the link answered 404",
        http_status=404,
        retryable=False,
        estimated_cost=0.039,
        links=("https://cdn.test/b/0.png", "https://cdn.test/b/1.png"),
        version=2,
    )
    blocked = Entry(
        "c",
        ItemStatus.FAILED,
        "",
        "r",
        0,
        error_class=ErrorClass.DEPENDENCY_FAILED,
        message="not sent",
        retryable=True,
        blocked_by=("a", "b"),
    )
    write(tmp_path, remade, lost, blocked)
    assert journal.read(tmp_path).entries == {"a": remade, "b": lost, "c": blocked}
    assert journal.read(tmp_path).entries["b"].refetchable


def test_lines_without_the_newer_fields_read_with_their_defaults(tmp_path: Path) -> None:
    append_raw(
        tmp_path, b'{"type": "item", "id": "a", "status": "succeeded", "fingerprint": "f", "files": []}'
    )
    assert journal.read(tmp_path).entries["a"] == Entry("a", ItemStatus.SUCCEEDED, "f", "", 0)


def test_the_latest_run_line_says_which_manifest_and_shard(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "job"
    folder.mkdir(parents=True)
    book = Journal(folder)
    book.open()
    book.run_started(tmp_path / "jobs" / "m.yaml", 1.0, "2/3")
    book.close()
    state = journal.read(folder)
    assert state.manifest == str((tmp_path / "jobs" / "m.yaml").resolve())
    assert state.manifest_relative == os.path.join("..", "..", "jobs", "m.yaml")  # found again if both move
    assert state.shard == "2/3"
    book.open()
    book.run_started(tmp_path / "jobs" / "n.yaml", 2.0)
    book.close()
    state = journal.read(folder)
    assert (state.manifest_relative, state.shard) == (os.path.join("..", "..", "jobs", "n.yaml"), None)


def test_a_run_line_without_a_usable_manifest_keeps_the_one_before(tmp_path: Path) -> None:
    append_raw(
        tmp_path,
        b'{"type": "run", "manifest": "/work/jobs/m.yaml", "manifest_relative": "../jobs/m.yaml"}',
        b'{"type": "run", "manifest": "", "manifest_relative": 5}',
    )
    state = journal.read(tmp_path)
    assert (state.manifest, state.manifest_relative) == ("/work/jobs/m.yaml", None)


def test_each_line_says_when(tmp_path: Path) -> None:
    book = Journal(tmp_path)
    book.open()
    book.run_started(tmp_path / "m.yaml", 1700000000.5)
    book.append(ok("a").to_json(1700000060.25))
    book.close()
    run, item = (orjson.loads(line) for line in raw_lines(tmp_path))
    assert (run["type"], run["started_at"]) == ("run", 1700000000.5)
    assert (item["type"], item["finished_at"]) == ("item", 1700000060.25)


def test_every_damaged_line_is_counted_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, ok("a"))
    append_raw(
        tmp_path,
        b"{not json",
        b"\xff\xfe\x00 not even text",  # a crash can leave any bytes, not only UTF-8
        b'{"type": "item", "id": "x"}',
        b'{"type": "item", "id": "y", "status": "succeeded", "fingerprint": "f", "files": [{}]}',
    )
    state = journal.read(tmp_path)
    assert (set(state.entries), state.damaged_lines) == ({"a"}, 4)
    path = tmp_path / journal.JOURNAL
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: skipped 4 damaged line(s) (a crash mid-write?)"
    ]


def test_a_clean_journal_reopened_gets_no_blank_line(tmp_path: Path) -> None:
    write(tmp_path, ok("a"))
    write(tmp_path, ok("b"))
    assert [orjson.loads(line)["type"] for line in raw_lines(tmp_path)] == ["run", "item", "run", "item"]


def test_the_run_after_a_torn_line_is_read_whole(tmp_path: Path) -> None:
    write(tmp_path, ok("a"))
    append_raw(tmp_path, orjson.dumps(ok("b").to_json(3.0))[:25])
    (tmp_path / journal.JOURNAL).write_bytes((tmp_path / journal.JOURNAL).read_bytes()[:-1])  # no newline
    book = Journal(tmp_path)
    book.open()
    book.run_started(tmp_path / "later.yaml", 4.0)
    book.append(ok("c").to_json(5.0))
    book.close()
    state = journal.read(tmp_path)
    assert state.manifest == str((tmp_path / "later.yaml").resolve())
    assert (set(state.entries), state.damaged_lines) == ({"a", "c"}, 1)


def test_the_journal_is_created_readable_by_all_and_writable_by_its_owner(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write(tmp_path, ok("a"))
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / journal.JOURNAL).stat().st_mode) == 0o644


def open_fds() -> set[str]:
    return set(os.listdir("/dev/fd"))


def test_closing_releases_the_file_once_and_may_be_repeated(tmp_path: Path) -> None:
    book = Journal(tmp_path)
    book.close()  # never opened: nothing to close
    before = open_fds()
    book.open()
    assert open_fds() != before
    book.close()
    book.close()
    assert open_fds() == before
    with pytest.raises(AssertionError, match=r"^Journal\.open\(\) first$"):
        book.append({"type": "item"})


def test_a_merged_folders_run_line_says_so_and_reads_back(tmp_path: Path) -> None:
    merged = journal.RunHeader.of(tmp_path / "m.yaml", tmp_path, 0, merged=True)
    assert merged.to_json()["merged"] is True
    assert journal.RunHeader.from_json(merged.to_json()).merged
    run = journal.RunHeader.of(tmp_path / "m.yaml", tmp_path, 0)
    assert "merged" not in run.to_json()  # a run's line as 0.3.0 wrote it
    assert not journal.RunHeader.from_json(run.to_json()).merged
    assert not journal.RunHeader.from_json({**run.to_json(), "merged": "yes"}).merged


@pytest.mark.parametrize("odd", [5, ["x"], {"k": 1}])
def test_a_run_line_or_a_class_of_the_wrong_type_reads_as_none(tmp_path: Path, odd: object) -> None:
    assert journal.RunHeader.from_json({"type": "run", "shard": odd}).shard is None
    line = {**bad("a").to_json(2.0), "class": odd}
    (tmp_path / journal.JOURNAL).write_bytes(orjson.dumps(line) + b"\n")
    state = journal.read(tmp_path)
    assert state.entries["a"].error_class is None
    assert state.damaged_lines == 0


def test_a_first_version_is_written_without_a_version_key_as_before(tmp_path: Path) -> None:
    assert "version" not in ok("a").to_json(1.0)
    redone = Entry("a", ItemStatus.SUCCEEDED, "f", "p", 1, version=2)
    assert redone.to_json(1.0)["version"] == 2


def test_a_failure_whose_class_was_unknown_is_written_back_without_one(tmp_path: Path) -> None:
    unknown = Entry("a", ItemStatus.FAILED, "f", "p", 1, message="from a later version")
    assert unknown.to_json(1.0)["class"] is None
    write(tmp_path, unknown)
    assert journal.read(tmp_path).entries["a"] == unknown


def test_pixel_sizes_and_flags_are_written_when_known_and_read_back(tmp_path: Path) -> None:
    sized = JournalFile("images/a.png", "ab", 10, 1376, 768)
    flagged = Entry("a", ItemStatus.SUCCEEDED, "f1", "p", 1, (sized,), flags=(Flag.SIZE_MISMATCH,))
    line = flagged.to_json(1.0)
    assert line["files"] == [
        {"path": "images/a.png", "sha256": "ab", "bytes": 10, "width": 1376, "height": 768}
    ]
    assert line["flags"] == ["size_mismatch"]
    assert list(ok("b").to_json(1.0)["files"][0]) == ["path", "sha256", "bytes"]  # unknown: not written
    assert "flags" not in ok("b").to_json(1.0)
    write(tmp_path, flagged, ok("b"))
    entries = journal.read(tmp_path).entries
    assert entries["a"] == flagged
    assert (entries["a"].files[0].pixels, entries["a"].flags) == ((1376, 768), (Flag.SIZE_MISMATCH,))
    assert (entries["b"].files[0].pixels, entries["b"].flags) == (None, ())
    # A flag a later batchgen wrote, read by this one: passed over, the line kept.
    line["flags"] = ["size_mismatch", "blurry"]
    read_back = Entry.from_json(line)
    assert read_back is not None
    assert read_back.flags == (Flag.SIZE_MISMATCH,)


# The one mapping from a journal line to an item's outcome (``journal.outcome``): what a run that
# wrote the line reports (``sent``), and what a run that leaves the item alone reports (None).
TWO = (JournalFile("images/a-1.png", "s1", 10, 640, 480), JournalFile("images/a-2.png", "s2", 20))
MADE = Entry(
    "a", ItemStatus.SUCCEEDED, "f", "old", 3, TWO, estimated_cost=0.08, version=2, flags=(Flag.SIZE_MISMATCH,)
)
NO_PIXELS = Entry("a", ItemStatus.SUCCEEDED, "f", "old", 1, (JournalFile("images/a.png", "s", 5),))
LOST = Entry(
    "a",
    ItemStatus.FAILED,
    "f",
    "old",
    2,
    error_class=ErrorClass.DOWNLOAD_FAILED,
    message="gone",
    http_status=404,
    retryable=False,
    estimated_cost=0.04,
    links=("https://cdn.test/a",),
    version=3,
)
BLOCKED = Entry(
    "a",
    ItemStatus.FAILED,
    "",
    "old",
    0,
    error_class=ErrorClass.DEPENDENCY_FAILED,
    message="not sent",
    retryable=True,
    blocked_by=("p", "q"),
)
UNKNOWN = Entry("a", ItemStatus.FAILED, "f", "old", 1)  # a class this batchgen does not know; no message
SENT = journal.Sent(requests=4, unconfirmed=1, unconfirmed_cost=0.04)
NOW = {"requests_sent": 4, "unconfirmed": 1, "unconfirmed_cost": 0.04}
MADE_FIELDS = {
    "attempts": 3,
    "files": ("images/a-1.png", "images/a-2.png"),
    "sizes": (10, 20),
    "version": 2,
    "pixels": (640, 480),
    "flags": (Flag.SIZE_MISMATCH,),
}
LOST_FAILURE = Failure(ErrorClass.DOWNLOAD_FAILED, "gone", 404, False, ("https://cdn.test/a",))
BLOCKED_FAILURE = Failure(ErrorClass.DEPENDENCY_FAILED, "not sent", None, True, blocked_by=("p", "q"))


@pytest.mark.parametrize(
    ("entry", "sent", "status", "fields"),
    [
        (MADE, None, ItemStatus.SKIPPED, MADE_FIELDS),
        (
            MADE,
            SENT,
            ItemStatus.SUCCEEDED,
            {**MADE_FIELDS, **NOW, "estimated_cost": 0.08, "digests": ("s1", "s2")},
        ),
        (NO_PIXELS, None, ItemStatus.SKIPPED, {"attempts": 1, "files": ("images/a.png",), "sizes": (5,)}),
        (replace(NO_PIXELS, files=()), None, ItemStatus.SKIPPED, {"attempts": 1}),
        (LOST, None, ItemStatus.FAILED, {"attempts": 2, "failure": LOST_FAILURE}),
        (
            LOST,
            SENT,
            ItemStatus.FAILED,
            {"attempts": 2, "failure": LOST_FAILURE, "estimated_cost": 0.04, **NOW},
        ),
        (BLOCKED, None, ItemStatus.FAILED, {"failure": BLOCKED_FAILURE}),
        (
            UNKNOWN,
            None,
            ItemStatus.FAILED,
            {"attempts": 1, "failure": Failure(ErrorClass.INVALID_RESPONSE, "", None, False)},
        ),
    ],
)
def test_an_entry_maps_to_one_outcome(
    entry: Entry, sent: journal.Sent | None, status: ItemStatus, fields: dict[str, object]
) -> None:
    expected = ItemOutcome(7, "a", "asked", status, **fields)  # type: ignore[arg-type]
    assert journal.outcome(entry, 7, "asked", sent) == expected


def test_a_line_is_read_as_an_item_record_and_anything_else_as_none() -> None:
    made = Entry("a", ItemStatus.SUCCEEDED, "f", "p", 1, (JournalFile("images/a.png", "ab", 10),))
    assert journal.entry(orjson.dumps(made.to_json(1.0)) + b"\n") == made
    header = journal.RunHeader("/m.yaml", "m.yaml", 1.0)
    for line in (
        orjson.dumps(header.to_json()),
        b'{"type": "item", "id": "a", "sta',
        b"[1, 2]",
        b'{"type": "note", "id": "a", "status": "succeeded", "fingerprint": "f", "files": []}',
    ):
        assert journal.entry(line) is None, line
