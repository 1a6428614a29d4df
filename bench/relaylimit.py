"""The relay's own rate limit (bench.py --only relaylimit): a job against the simulator in new-api's
mode, nothing configured, as the issue "The relay's own rate limit" measured it.

M = 60 requests a window (one minute, or a shorter window with --relay-window-s), L = 0.5 s,
C = 32, 2M items. Three runs, each against a fresh simulator (a new night):

1. first: nothing known; the run learns the limit from a 429 and mirrors the window;
2. next: the same job (--force), starting at the limit the first run remembered;
3. headers: a new job folder, the simulator also sending OpenAI's x-ratelimit headers.

``--old-python`` runs the first scenario with another interpreter's batchgen too (e.g. main's
venv, before the limit was learned), for the figure to put beside the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

LIMIT = 60
LATENCY_MS = 500
CONCURRENCY = 32
ITEMS = 2 * LIMIT
MAX_429 = 5

Simulator = Callable[..., AbstractContextManager[str]]


def _manifest(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    items = "".join(f'  - {{id: item-{k:04d}, prompt: "product {k}"}}\n' for k in range(ITEMS))
    path = folder / "relay.yaml"
    path.write_text(f"job: relay\nlimits:\n  concurrency: {CONCURRENCY}\n  timeout_s: 600\nitems:\n{items}")
    return path


def _run(python: str, manifest: Path, url: str, out: Path, *extra: str) -> dict[str, Any]:
    """One run of the command line; its wall time, what it reported, what the simulator counted."""
    env = {**os.environ, "BATCHGEN_API_KEY": "bench"}
    argv = [
        python,
        "-m",
        "batchgen",
        "run",
        str(manifest),
        "--base-url",
        url,
        "--output",
        str(out),
        "-q",
        *extra,
    ]
    started = time.perf_counter()
    # From the job's own folder: `-m batchgen` run from a checkout would import that checkout.
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=manifest.parent)
    seconds = time.perf_counter() - started
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_sim/stats") as resp:
        stats = json.load(resp)
    report = json.loads((out / "relay" / "report.json").read_text())
    return {
        "exit": done.returncode,
        "wall_s": seconds,
        "duration_s": report["duration_s"],
        "succeeded": report["counts"]["succeeded"],
        "failed": report["counts"]["failed"],
        "requests": stats["requests"],
        "throttled": stats.get("throttled", 0),
        "relay_limit": report.get("relay_limit"),
    }


def measure(simulator: Simulator, window_s: float, old_python: str | None, work: Path) -> dict[str, Any]:
    work = work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    manifest = _manifest(work / "jobs")
    mode = [
        "--latency-ms",
        str(LATENCY_MS),
        "--rate-limit",
        str(LIMIT),
        "--rate-window-ms",
        str(window_s * 1000),
    ]
    runs: dict[str, dict[str, Any]] = {}
    with simulator(*mode) as url:
        runs["first"] = _run(sys.executable, manifest, url, work / "out")
    with simulator(*mode) as url:
        runs["next"] = _run(sys.executable, manifest, url, work / "out", "--force")
    with simulator(*mode, "--rate-headers") as url:
        runs["headers"] = _run(sys.executable, manifest, url, work / "out-headers")
    if old_python:
        with simulator(*mode) as url:
            runs["old"] = _run(old_python, manifest, url, work / "out-old")
    return {"window_s": window_s, "limit": LIMIT, "latency_s": LATENCY_MS / 1000, "runs": runs}


def bars(found: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(name, measured, target, ok) for each bar of the issue."""
    window, runs = found["window_s"], found["runs"]
    ceiling = 1.3 * window + found["latency_s"]
    first, following, headers = runs["first"], runs["next"], runs["headers"]
    found_bars = [
        (
            "relay limit: first run, whole job",
            f"{first['duration_s']:.1f} s",
            f"<= {ceiling:.1f} s",
            first["duration_s"] <= ceiling,
        ),
        (
            "relay limit: first run, 429s",
            str(first["throttled"]),
            f"<= {MAX_429}",
            first["throttled"] <= MAX_429,
        ),
        ("relay limit: next run, 429s", str(following["throttled"]), "0", following["throttled"] == 0),
        ("relay limit: with the headers, 429s", str(headers["throttled"]), "0", headers["throttled"] == 0),
    ]
    for name, run in runs.items():
        if name != "old" and run["succeeded"] != ITEMS:
            found_bars.append(
                (f"relay limit: {name} run, items made", str(run["succeeded"]), str(ITEMS), False)
            )
    return found_bars
