"""Runs against a relay that limits its rate as new-api does: learned, mirrored, remembered,
shared by shards, said; exact request counts from the simulator."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgen import config
from batchgen.cli.main import main
from batchgen.errors import RelayLimit
from batchgen.job import rates
from batchgen.output import paths, relaylimit
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS

WINDOW_MS = 250.0
LIMIT = 4  # requests per window
ITEMS = 10


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    monkeypatch.delenv("BATCHGEN_BASE_URL", raising=False)


def relay(threaded_simulator: Callable[..., Simulator], **extra: Any) -> Simulator:
    return threaded_simulator(rate_limit=LIMIT, rate_window_ms=WINDOW_MS, latency_ms=20, **extra)


def job(write_manifest: Callable[..., Path], items: int = ITEMS, **limits: Any) -> Path:
    # max_attempts 1: a throttled request charged as an attempt would fail its item.
    chosen = {**FAST_LIMITS, "concurrency": LIMIT, "max_attempts": 1, **limits}
    entries = [{"id": f"i{k}", "prompt": f"product {k}"} for k in range(items)]
    return write_manifest({"job": "relay", "limits": chosen, "items": entries}, name="relay.yaml")


def run(path: Path, sim: Simulator, out: Path, *extra: str) -> dict[str, Any]:
    assert main(["run", str(path), "--base-url", sim.base_url, "--output", str(out), "-q", *extra]) == 0
    folder = out / "relay"
    for part in extra:
        if "/" in part:  # --shard K/N
            k, n = part.split("/")
            folder = folder / f"shard-{k}-of-{n}"
    return dict(orjson.loads((folder / paths.REPORT_JSON).read_bytes()))


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + window) - k for k, t in enumerate(times))


@pytest.mark.parametrize("form", ["success", "total"])
def test_the_limit_is_learned_from_the_429_and_nothing_is_charged_for_it(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    form: str,
) -> None:
    sim = relay(threaded_simulator, rate_form=form)
    report = run(job(write_manifest), sim, tmp_path)
    assert report["counts"]["succeeded"] == ITEMS
    assert all(item["attempts"] == 1 for item in report["items"])  # no throttle charged an attempt
    assert report["requests_sent"] == ITEMS  # a throttled request is not a request that may be billed
    assert 1 <= sim.stats.throttled <= LIMIT  # only the batch in flight when it was learned
    assert sim.stats.requests == ITEMS + sim.stats.throttled
    assert set(sim.stats.billed.values()) == {1}
    assert report["relay_limit"] == {
        "requests": LIMIT,
        "window_s": pytest.approx(WINDOW_MS / 1000),
        "source": "stated",
    }
    remembered = relaylimit.recall(tmp_path / "relay")
    assert remembered is not None
    assert remembered.limit.requests == LIMIT
    assert remembered.limit.window_s == pytest.approx(WINDOW_MS / 1000)


def test_the_next_run_starts_at_the_remembered_limit_and_sends_no_429(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    path = job(write_manifest)
    run(path, relay(threaded_simulator), tmp_path)
    tomorrow = relay(threaded_simulator)  # a fresh relay: the night after
    report = run(path, tomorrow, tmp_path, "--force")
    assert tomorrow.stats.throttled == 0
    assert tomorrow.stats.requests == ITEMS
    assert report["relay_limit"]["source"] == "remembered"
    # Mirrored, not spaced: the first window is used whole at once.
    first = sorted(tomorrow.stats.arrivals)
    assert first[LIMIT - 1] - first[0] < WINDOW_MS / 1000 / 2


@pytest.mark.parametrize("where", ["manifest", "command line"])
def test_a_configured_rate_wins_over_the_remembered_limit(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    where: str,
) -> None:
    relaylimit.remember(tmp_path / "relay", RelayLimit(LIMIT, WINDOW_MS / 1000), 0.0)
    # 6000 a minute: one every 10 ms, faster than the relay allows; the remembered limit would
    # have kept the run from every 429.
    limits = {"requests_per_minute": 6000} if where == "manifest" else {}
    extra = ["--rpm", "6000"] if where == "command line" else []
    sim = relay(threaded_simulator)
    report = run(job(write_manifest, **limits), sim, tmp_path, *extra)
    assert sim.stats.throttled >= 1
    assert report["counts"]["succeeded"] == ITEMS
    assert report["relay_limit"]["source"] == "stated"  # learned again, from the relay itself


def test_shards_take_their_part_of_the_remembered_limit(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    relaylimit.remember(tmp_path / "relay", RelayLimit(LIMIT, WINDOW_MS / 1000), 0.0)
    sim = relay(threaded_simulator)
    report = run(job(write_manifest, items=12), sim, tmp_path, "--shard", "1/2")
    assert sim.stats.throttled == 0
    sent = report["counts"]["total"]
    assert sim.stats.requests == sent >= 3
    # Half the key's limit: at most 2 in any window (answers come 20 ms after arrival).
    assert most_in_any_window(sim.stats.arrivals, WINDOW_MS / 1000) <= LIMIT // 2


def test_with_the_headers_no_429_at_all(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    sim = relay(threaded_simulator, rate_headers=True)
    report = run(job(write_manifest), sim, tmp_path)
    assert sim.stats.throttled == 0
    assert sim.stats.requests == ITEMS
    assert report["relay_limit"] == {"requests": LIMIT, "source": "headers"}


def test_a_429_that_says_nothing_keeps_todays_behaviour(
    threaded_simulator: Callable[..., Simulator], write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    """No words, no headers: an attempt of the item (here its only one), Retry-After honoured."""
    sim = threaded_simulator()
    items = [{"id": "busy", "prompt": "[sim:429*1] busy"}]
    path = write_manifest({"job": "relay", "limits": {**FAST_LIMITS, "max_attempts": 1}, "items": items})
    assert main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path), "-q"]) == 1
    report = orjson.loads((tmp_path / "relay" / paths.REPORT_JSON).read_bytes())
    assert report["failures"][0]["class"] == "rate_limited"
    assert "relay_limit" not in report
    assert not (tmp_path / "relay" / paths.RELAY_LIMIT).exists()


def test_validate_shows_the_remembered_limit_and_who_wins(
    write_manifest: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relaylimit.remember(tmp_path / "relay", RelayLimit(120, 60.0), 0.0)
    path = job(write_manifest)
    assert main(["validate", str(path), "--output", str(tmp_path), "--shard", "2/4"]) == 0
    out = capsys.readouterr().out
    assert "the relay allows 120 requests a minute (learned 1970-01-01T00:00:00Z)" in out
    assert "rate: starts at the relay's limit, 30 requests a minute" in out
    configured = job(write_manifest, requests_per_minute=90)
    assert main(["validate", str(configured), "--output", str(tmp_path), "--shard", "2/4"]) == 0
    assert (
        "rate: 22.5 requests a minute, from requests_per_minute (this shard's part)"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("manifest_rpm", "cli_rpm", "shard", "per_minute", "starts_at_relay"),
    [
        (None, None, None, None, True),
        (None, None, (1, 4), None, True),
        (120.0, None, (1, 4), 30.0, False),  # the manifest's rate is the job's total
        (120.0, 120.0, (1, 4), 120.0, False),  # --rpm is this process's own
        (None, 60.0, None, 60.0, False),
    ],
)
def test_the_rate_a_run_starts_at(
    tmp_path: Path,
    manifest_rpm: float | None,
    cli_rpm: float | None,
    shard: tuple[int, int] | None,
    per_minute: float | None,
    starts_at_relay: bool,
) -> None:
    relaylimit.remember(tmp_path / "job", RelayLimit(60, 60.0), 0.0)
    overrides = config.Overrides(limits={"requests_per_minute": cli_rpm} if cli_rpm else {})
    limits = config.Limits(requests_per_minute=cli_rpm or manifest_rpm)
    found = rates.of("job", limits, shard, overrides, tmp_path)
    assert found.per_minute == per_minute
    assert (found.mirrored == RelayLimit(60, 60.0)) is starts_at_relay
    assert found.shards == (shard[1] if shard else 1)


def test_a_damaged_record_is_ignored(tmp_path: Path) -> None:
    (tmp_path / paths.RELAY_LIMIT).write_text('{"requests": "many"}')
    assert relaylimit.recall(tmp_path) is None
