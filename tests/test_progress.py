"""The progress bar counts what the runner's events say."""

from __future__ import annotations

import io

import pytest

from batchgen.cli.progress import ProgressBar
from batchgen.errors import ErrorClass
from batchgen.outcomes import Failure, ItemFinished, ItemOutcome, ItemRetrying, ItemStatus, JobStarted


def test_bar_shows_done_failed_and_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr("sys.stderr", screen)
    bar = ProgressBar()
    bar(JobStarted("spring", 3))
    bar(ItemRetrying("a", 1, ErrorClass.SERVER_ERROR, "boom", 0.1))
    bar(ItemRetrying("b", 1, ErrorClass.TIMEOUT, "slow", 0.1))
    bar(ItemFinished(ItemOutcome(0, "a", "p", ItemStatus.SUCCEEDED)))
    failure = Failure(ErrorClass.SAFETY_FILTER, "no", 500, False)
    bar(ItemFinished(ItemOutcome(1, "c", "p", ItemStatus.FAILED, failure=failure)))
    bar.close()
    last = screen.getvalue().split("\r")[-1]
    assert "spring" in last
    assert "2/3" in last
    assert "ok=1, failed=1, retrying=1" in last
