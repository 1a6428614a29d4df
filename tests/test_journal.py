"""The journal: append-only, fsync'd, and readable after any crash."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batchgen.errors import ErrorClass
from batchgen.outcomes import ItemStatus
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
