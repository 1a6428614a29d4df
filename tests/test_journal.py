"""The journal: append-only, fsync'd, and readable after any crash."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batchgen.output import journal
from batchgen.output.journal import Entry, Journal, JournalFile, entry_record


def ok(item_id: str, fingerprint: str = "f1") -> Entry:
    return Entry(item_id, "succeeded", fingerprint, "p", 1, (JournalFile(f"images/{item_id}.png", "ab", 10),))


def bad(item_id: str) -> Entry:
    return Entry(
        item_id,
        "failed",
        "f1",
        "p",
        4,
        error_class="server_error",
        message="HTTP 502",
        http_status=502,
        retryable=True,
    )


def write(folder: Path, *entries: Entry) -> None:
    book = Journal(folder)
    book.open()
    book.run_started(folder / "m.yaml", 1.0)
    for e in entries:
        book.append(entry_record(e, 2.0))
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
        f.write(orjson.dumps(entry_record(ok("b"), 3.0))[:25])  # the crash: half a line
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
