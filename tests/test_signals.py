"""Killing a run at a random point (SIGINT, SIGTERM, SIGKILL), then re-running it.

The run is a real subprocess; the simulator runs in this process, so its
request counts span both runs. A seeded random request count picks the
moment of the signal; the test waits for that request, never for time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from batchgen.cli.main import main
from batchgen.output.journal import read as read_journal
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS, assert_png_whole

ITEMS = 24


def start_run(path: Path, out: Path, sim: Simulator, *flags: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGEN_")}
    env["BATCHGEN_API_KEY"] = "k"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchgen",
            "run",
            str(path),
            "--base-url",
            sim.base_url,
            "--output",
            str(out),
            *flags,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def when_requests_reach(sim: Simulator, count: int) -> threading.Event:
    reached = threading.Event()

    def hook(seen: int) -> None:
        if seen >= count:
            reached.set()

    sim.on_request = hook
    return reached


def write_job(folder: Path, **limits: Any) -> Path:
    path = folder / "jobs" / "nightly.yaml"
    path.parent.mkdir(parents=True)
    data = {
        "job": "nightly",
        "limits": {**FAST_LIMITS, "concurrency": 4, **limits},
        "items": [{"id": f"sku-{k:03d}", "prompt": f"product {k}", "n": 1 + k % 2} for k in range(ITEMS)],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def check_rerun_finishes_without_resending(
    path: Path, out: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = out / "nightly"
    for image in (job / "images").glob("*.png"):
        assert_png_whole(image)
    finished = {e.id for e in read_journal(job).entries.values() if e.status == "succeeded"}
    before = dict(sim.stats.by_prompt)
    sim.on_request = None
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    monkeypatch.delenv("BATCHGEN_BASE_URL", raising=False)
    assert main(["run", str(path), "--base-url", sim.base_url, "--output", str(out), "-q"]) == 0
    after = dict(sim.stats.by_prompt)
    for item_id in finished:
        prompt = f"product {int(item_id.removeprefix('sku-'))}"
        assert after[prompt] == before[prompt], f"{item_id} finished before the signal and was sent again"
    report = orjson.loads((job / "report.json").read_bytes())
    assert report["counts"]["succeeded"] + report["counts"]["skipped"] == ITEMS
    assert report["counts"]["skipped"] == len(finished)
    for image in (job / "images").glob("*"):
        assert not image.name.startswith(".")  # no temp file survives
        if image.suffix == ".png":
            assert_png_whole(image)


@pytest.mark.parametrize(
    ("sig", "code", "seed"), [(signal.SIGINT, 130, 1), (signal.SIGTERM, 143, 2), (signal.SIGINT, 130, 3)]
)
def test_a_signal_stops_cleanly_and_a_rerun_finishes(
    sig: signal.Signals,
    code: int,
    seed: int,
    tmp_path: Path,
    threaded_simulator: Callable[..., Simulator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = threaded_simulator(latency_ms=40)
    path, out = write_job(tmp_path), tmp_path / "out"
    reached = when_requests_reach(sim, random.Random(seed).randint(2, ITEMS - 4))
    with start_run(path, out, sim, "-q") as proc:
        assert reached.wait(timeout=30), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    report = orjson.loads((out / "nightly/report.json").read_bytes())
    assert report["status"] == "partial"
    assert report["interrupted_by"] == sig.name
    journal = read_journal(out / "nightly")
    assert {i["id"] for i in report["items"] if i["status"] == "succeeded"} == {
        e.id for e in journal.entries.values()
    }
    assert report["counts"]["pending"] > 0
    check_rerun_finishes_without_resending(path, out, sim, monkeypatch)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_kill_9_at_a_random_point_loses_nothing_finished(
    seed: int, tmp_path: Path, threaded_simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = threaded_simulator(latency_ms=random.Random(seed).randint(1, 30), payload_kb=256)
    path, out = write_job(tmp_path), tmp_path / "out"
    reached = when_requests_reach(sim, random.Random(seed).randint(1, ITEMS - 2))
    with start_run(path, out, sim, "-q") as proc:
        assert reached.wait(timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    check_rerun_finishes_without_resending(path, out, sim, monkeypatch)


def test_a_second_ctrl_c_cancels_the_requests_in_flight(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Answers take 20 s and the grace period is 60 s: only the second Ctrl-C can end this run quickly.
    sim = threaded_simulator(latency_ms=20_000)
    path, out = write_job(tmp_path, grace_s=60), tmp_path / "out"
    reached = when_requests_reach(sim, 4)
    with start_run(path, out, sim) as proc:
        assert proc.stderr is not None
        assert reached.wait(timeout=30)
        proc.send_signal(signal.SIGINT)
        for line in proc.stderr:
            if "again to stop now" in line:
                break
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130
    report = orjson.loads((out / "nightly/report.json").read_bytes())
    assert report["counts"]["succeeded"] == 0
    assert report["counts"]["pending"] == ITEMS
    assert report["requests_sent"] == 4
    assert report["unconfirmed_attempts"] == 4  # cut off after sending: perhaps billed
    assert read_journal(out / "nightly").entries == {}


def test_a_first_sigterm_lets_the_requests_in_flight_finish(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    # Slow answers, well inside the grace period: the four in flight finish, are journaled and paid
    # for once; nothing is cut off after sending.
    sim = threaded_simulator(latency_ms=800)
    path, out = write_job(tmp_path, grace_s=30), tmp_path / "out"
    reached = when_requests_reach(sim, 4)
    with start_run(path, out, sim, "-q") as proc:
        assert reached.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    report = orjson.loads((out / "nightly/report.json").read_bytes())
    assert (report["requests_sent"], report["unconfirmed_attempts"]) == (4, 0)
    assert report["counts"]["succeeded"] == 4
    finished = {e.id for e in read_journal(out / "nightly").entries.values() if e.status == "succeeded"}
    assert len(finished) == 4
    assert sim.stats.requests == 4
