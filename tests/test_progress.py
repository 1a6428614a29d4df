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


def test_bar_says_the_relays_limit_once_learned(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchgen.errors import RelayLimit
    from batchgen.outcomes import RateLimitLearned

    screen = io.StringIO()
    monkeypatch.setattr("sys.stderr", screen)
    bar = ProgressBar()
    bar(JobStarted("spring", 3))
    bar(RateLimitLearned(RelayLimit(120, 60.0), RelayLimit(60, 60.0)))
    bar(ItemFinished(ItemOutcome(0, "a", "p", ItemStatus.SUCCEEDED)))
    bar.close()
    shown = screen.getvalue()
    assert (
        "batchgen: the relay allows 120 requests a minute: this shard runs at 60 requests a minute\n" in shown
    )
    assert "relay limit=60 requests a minute" in shown.split("\r")[-1]


def test_json_log_has_the_learned_limit(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import orjson

    from batchgen.cli import logs
    from batchgen.errors import RelayLimit
    from batchgen.outcomes import RateLimitLearned

    logger = logging.getLogger("batchgen")
    handler = logging.StreamHandler()
    handler.setFormatter(logs.JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    limit = RelayLimit(60, 60.0)
    logs.event_logger("spring")(RateLimitLearned(limit, limit))
    line = orjson.loads(capsys.readouterr().err.strip())
    assert (line["event"], line["requests"], line["window_s"], line["running_at"]) == (
        "rate_limit_learned",
        60,
        60.0,
        60,
    )
    assert line["message"] == "the relay allows 60 requests a minute: running at that"
