"""What a re-run does with each item: a pure table."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import ErrorClass
from batchgen.outcomes import ItemStatus
from batchgen.output.journal import Entry, JournalFile
from batchgen.output.store import JobStore
from batchgen.plan.resume import Action, Mode, decide

SEND, SKIP, KEEP, LEAVE = Action.SEND, Action.SKIP, Action.KEEP, Action.LEAVE
RUN, ONLY, ALL, FORCE, REDO = Mode.RUN, Mode.ONLY_FAILED, Mode.ALL_FAILED, Mode.FORCE, Mode.REDO

OK, FAILED = ItemStatus.SUCCEEDED, ItemStatus.FAILED
DONE = Entry("a", OK, "fp", "p", 1, (JournalFile("images/a.png", "h", 3),))
FAILED_RETRYABLE = Entry("a", FAILED, "fp", "p", 4, error_class=ErrorClass.SERVER_ERROR, retryable=True)
REFUSED = Entry("a", FAILED, "fp", "p", 1, error_class=ErrorClass.SAFETY_FILTER, retryable=False)
NO_CREDIT = Entry("a", FAILED, "fp", "p", 1, error_class=ErrorClass.QUOTA_EXHAUSTED, retryable=False)
BAD_KEY = Entry("a", FAILED, "fp", "p", 1, error_class=ErrorClass.AUTH, retryable=False)
LINK_DEAD = Entry(
    "a",
    FAILED,
    "fp",
    "p",
    1,
    error_class=ErrorClass.DOWNLOAD_FAILED,
    retryable=False,
    links=("https://cdn.test/a",),
)
FETCH = Action.FETCH


@pytest.mark.parametrize(
    ("entry", "fingerprint", "intact", "mode", "action"),
    [
        # never seen (new, or pending when the last run stopped): always sent
        (None, "fp", False, RUN, SEND),
        (None, "fp", False, ONLY, SEND),
        (None, "fp", False, ALL, SEND),
        # done with the same request and files intact: never sent again, except --force
        (DONE, "fp", True, RUN, SKIP),
        (DONE, "fp", True, ONLY, SKIP),
        (DONE, "fp", True, ALL, SKIP),
        (DONE, "fp", True, FORCE, SEND),
        # the request changed: run regenerates it, retry leaves successes alone
        (DONE, "other", True, RUN, SEND),
        (DONE, "other", True, ONLY, SKIP),
        # its files are gone or truncated: not done
        (DONE, "fp", False, RUN, SEND),
        (DONE, "fp", False, ONLY, SEND),
        # failures
        (FAILED_RETRYABLE, "fp", False, RUN, SEND),
        (FAILED_RETRYABLE, "fp", False, ONLY, SEND),
        (REFUSED, "fp", False, RUN, SEND),
        (REFUSED, "fp", False, ONLY, KEEP),
        (REFUSED, "fp", False, ALL, SEND),
        (REFUSED, "fp", False, FORCE, SEND),
        # failed because the account did, not the item: retry sends them once that is fixed
        (NO_CREDIT, "fp", False, ONLY, SEND),
        (BAD_KEY, "fp", False, ONLY, SEND),
        # made and billed, but its link failed: fetched again, not made again...
        (LINK_DEAD, "fp", False, RUN, FETCH),
        (LINK_DEAD, "fp", False, ONLY, FETCH),
        (LINK_DEAD, "other", False, ONLY, FETCH),
        (LINK_DEAD, "fp", False, ALL, FETCH),  # (the runner makes it again if the links are dead)
        # ...unless the request changed since, or --force
        (LINK_DEAD, "other", False, RUN, SEND),
        (LINK_DEAD, "fp", False, FORCE, SEND),
        # An item a redo does not name is left as it is, whatever changed.
        (DONE, "other", True, REDO, SKIP),
        (DONE, "fp", False, REDO, LEAVE),
        (REFUSED, "fp", False, REDO, KEEP),
        (None, "fp", False, REDO, LEAVE),
        (LINK_DEAD, "fp", False, REDO, KEEP),
    ],
)
def test_decide(entry: Entry | None, fingerprint: str, intact: bool, mode: Mode, action: Action) -> None:
    assert decide(entry, fingerprint, intact, mode) is action


def test_the_store_checks_presence_and_size(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    store = JobStore(tmp_path)
    files = [(f.path, f.bytes) for f in DONE.files]
    assert not store.intact(files)  # missing
    (tmp_path / "images/a.png").write_bytes(b"abc")
    assert store.intact(files)
    (tmp_path / "images/a.png").write_bytes(b"ab")  # truncated
    assert not store.intact(files)
    assert not store.intact([])  # nothing recorded is nothing to keep
