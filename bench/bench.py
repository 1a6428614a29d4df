"""make bench: batchgen against a bare aiohttp loop and the openai SDK loop, on the built-in simulator.

The simulator runs in a process of its own (its CPU is not charged to the client); each contender
runs in a fresh child process, in alternating order, and its peak RSS is read from the OS. Medians
of the repetitions are compared as ratios against the baselines measured in the same run, and each
bar of docs/performance.md is printed with PASS or FAIL. Not a test: nothing in the suite depends on timing.

    python bench/bench.py            # the full run, under 3 minutes on 2 cores
    python bench/bench.py --quick    # a smaller run, under 30 seconds
    python bench/bench.py --scaling  # throughput by concurrency and image size (for docs/performance.md)
    python bench/bench.py --only throughput  # items/s against the bare loop and the SDK
    python bench/bench.py --only latency     # latency-bound rate and event-loop lag
    python bench/bench.py --only nightly   # re-running a finished 100,000-item catalog
    python bench/bench.py --only gallery   # the first screen of a 100,000-item gallery
    python bench/bench.py --only derive    # variants and thumbnails (bench/derive.py)
    python bench/bench.py --only relaylimit  # the relay's own limit, learned (bench/relaylimit.py)
    python bench/bench.py --only chains    # hero -> views: 50 x 4 at L = 1 s; planning 20,000 chains
    python bench/bench.py --only nightly-chains  # the nightly no-op of a catalog of 20,000 chains
    python bench/bench.py --only storage   # the latency-bound run into moto's S3 vs local disk
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import relaylimit

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
IMAGE_KB = 3072  # ~3 MB images, ~4 MB of base64 per response


@contextmanager
def simulator(*args: str) -> Iterator[str]:
    """The built-in simulator in its own process; yields its base URL."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "batchgen", "simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("listening on ", 1)[1].split()[0]
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def contender(name: str, **cfg: Any) -> dict[str, Any]:
    """Run one contender in a child process; its result plus its own peak RSS (MB)."""
    proc = subprocess.Popen(
        [PYTHON, str(HERE / "contenders.py"), name, json.dumps(cfg)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: contender {name} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    result["rss_mb"] = usage.ru_maxrss / 1024
    # The bare and SDK loops leave hundreds of megabytes of dirty pages (they never fsync);
    # written back during the next run, they would slow whoever goes next. Every run starts clean.
    os.sync()
    return result


def warm(url: str) -> None:
    """Have the simulator render every image the runs ask for before any run is timed: the
    prompts "product 0".."product 31" cover all 12 of its hues, and a first render costs it
    ~150 ms of CPU that would otherwise land in whichever contender goes first."""
    contender("bare", base_url=url, items=32, concurrency=32)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Bar:
    name: str
    measured: str
    target: str
    ok: bool


@dataclass
class Results:
    rows: list[tuple[str, ...]] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def throughput(res: Results, items: int, reps: int) -> None:
    """Zero latency, ~3 MB images, concurrency 32: items/s and peak RSS of each contender."""
    runs: dict[str, list[dict[str, Any]]] = {"batchgen": [], "bare": [], "openai": []}
    with simulator("--payload-kb", str(IMAGE_KB)) as url:
        warm(url)
        order = list(runs)
        for rep in range(reps):
            for name in order[rep % 3 :] + order[: rep % 3]:  # alternate who goes first
                runs[name].append(contender(name, base_url=url, items=items, concurrency=32))
    med = {n: statistics.median(r["items_per_s"] for r in rs) for n, rs in runs.items()}
    rss = {n: statistics.median(r["rss_mb"] for r in rs) for n, rs in runs.items()}
    secs = {n: statistics.median(r["seconds"] for r in rs) for n, rs in runs.items()}
    lags = [lag for r in runs["batchgen"] for lag in r["lags"]]
    for name in runs:
        res.rows.append(
            (
                "throughput, C=32, 0 ms, 3 MB",
                name,
                f"{med[name]:.1f}",
                f"{secs[name]:.2f}",
                f"{rss[name]:.0f}",
            )
        )
    res.raw["throughput"] = {"items_per_s": med, "rss_mb": rss, "seconds": secs, "reps": reps, "items": items}
    # How long the command went on after its last image was written: its thumbnails.
    tail = statistics.median(r["tail_s"] for r in runs["batchgen"])
    res.raw["throughput"]["tail_s"] = tail
    res.rows.append(("  then its thumbnail tail (not in the rate)", "batchgen", "", f"{tail:.2f}", ""))
    res.bars.append(
        Bar(
            "throughput vs bare aiohttp loop",
            f"{med['batchgen'] / med['bare']:.2f}x",
            ">= 2x",
            med["batchgen"] >= 2 * med["bare"],
        )
    )
    res.bars.append(
        Bar(
            "throughput vs openai SDK loop",
            f"{med['batchgen'] / med['openai']:.2f}x",
            ">= 3x",
            med["batchgen"] >= 3 * med["openai"],
        )
    )
    res.bars.append(
        Bar(
            "peak RSS vs bare loop (C=32)",
            f"{rss['batchgen'] / rss['bare']:.2f}x",
            "<= 1.2x",
            rss["batchgen"] <= 1.2 * rss["bare"],
        )
    )
    res.raw["throughput"]["lag_ms"] = {"p50": percentile(lags, 50) * 1000, "p99": percentile(lags, 99) * 1000}


def latency_bound(res: Results, rounds: int, reps: int, with_bare: bool) -> None:
    """L = 2 s, C = 64, ~3 MB images: batchgen should keep all 64 slots busy (C/L items/s).
    The bare loop, for comparison only, runs once, between batchgen's first two runs."""
    c, latency = 64, 2.0
    runs: dict[str, list[dict[str, Any]]] = {"batchgen": [], **({"bare": []} if with_bare else {})}
    with simulator("--payload-kb", str(IMAGE_KB), "--latency-ms", str(int(latency * 1000))) as url:
        warm(url)
        for rep in range(reps):
            runs["batchgen"].append(contender("batchgen", base_url=url, items=c * rounds, concurrency=c))
            if rep == 0 and with_bare:
                runs["bare"].append(contender("bare", base_url=url, items=c * rounds, concurrency=c))
    ideal = c / latency
    res.raw["latency"] = {}
    for name, rs in runs.items():
        whole = statistics.median(r["items_per_s"] for r in rs)
        steady = statistics.median(steady_rate(r["finished"], c) for r in rs)
        secs = statistics.median(r["seconds"] for r in rs)
        rss = statistics.median(r["rss_mb"] for r in rs)
        res.rows.append(
            (f"latency-bound, C={c}, L=2 s, 3 MB", name, f"{whole:.1f}", f"{secs:.2f}", f"{rss:.0f}")
        )
        res.rows.append((f"  the same, after the first {c} answers", name, f"{steady:.1f}", "", ""))
        res.raw["latency"][name] = {"whole_run": whole / ideal, "steady_state": steady / ideal}
    fraction = res.raw["latency"]["batchgen"]["steady_state"]
    label = f"{fraction:.3f} (whole run {res.raw['latency']['batchgen']['whole_run']:.3f})"
    res.bars.append(Bar("latency-bound rate vs C/L, steady state", label, ">= 0.95", fraction >= 0.95))
    lags = [lag for r in runs["batchgen"] for lag in r["lags"]]
    p50, p99 = percentile(lags, 50) * 1000, percentile(lags, 99) * 1000
    res.raw["latency"]["lag_ms"] = {"p50": p50, "p99": p99}
    res.bars.append(
        Bar("event-loop lag p99, 64 large responses", f"{p99:.1f} ms (p50 {p50:.1f})", "< 20 ms", p99 < 20)
    )


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in a process of its own, with a bucket "bench"; yields its address.
    moto keeps every object in memory, in Python: a slower store than a real one."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(urllib.request.Request(f"{url}/bench", method="PUT")).close()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def storage(res: Results, rounds: int, reps: int) -> None:
    """The latency-bound run (L = 2 s, C = 64, ~3 MB) writing to an S3 server vs to local disk."""
    c, latency = 64, 2.0
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
    with (
        simulator("--payload-kb", str(IMAGE_KB), "--latency-ms", str(int(latency * 1000))) as url,
        s3_server() as endpoint,
    ):
        warm(url)
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
        )
        for rep in range(reps):
            for name in ("local", "s3") if rep % 2 == 0 else ("s3", "local"):
                bucket = {"bucket": f"s3://bench/rep{rep}"} if name == "s3" else {}
                runs[name].append(
                    contender("batchgen", base_url=url, items=c * rounds, concurrency=c, **bucket)
                )

    # To the last image at its destination (written to disk; in the bucket), as the latency bar
    # measures; what each run does after it (previews, the report, the last journal) is its tail.
    def last(r: dict[str, Any]) -> float:
        return float(r["last_in_bucket"] if r.get("last_in_bucket") else max(r["finished"]))

    rate = {n: statistics.median(r["items"] / last(r) for r in rs) for n, rs in runs.items()}
    rss = {n: statistics.median(r["rss_mb"] for r in rs) for n, rs in runs.items()}
    secs = {n: statistics.median(r["seconds"] for r in rs) for n, rs in runs.items()}
    tail = {n: statistics.median(r["seconds"] - last(r) for r in rs) for n, rs in runs.items()}
    waits = [w for r in runs["s3"] for w in r["upload_waits"]]
    for name in runs:
        scenario = f"latency-bound to {'moto S3' if name == 's3' else 'local disk'}, C={c}, L=2 s"
        res.rows.append((scenario, "batchgen", f"{rate[name]:.1f}", f"{secs[name]:.2f}", f"{rss[name]:.0f}"))
    p50, p99, most = percentile(waits, 50), percentile(waits, 99), max(waits, default=float("nan"))
    res.raw["storage"] = {
        "items_per_s": rate,
        "rss_mb": rss,
        "seconds": secs,
        "tail_s": tail,
        "upload_wait_s": [p50, p99, most],
    }
    ratio, rss_ratio = rate["s3"] / rate["local"], rss["s3"] / rss["local"]
    res.bars.append(Bar("object storage: rate vs local disk", f"{ratio:.2f}x", ">= 0.9x", ratio >= 0.9))
    res.bars.append(
        Bar("object storage: peak RSS vs local disk", f"{rss_ratio:.2f}x", "<= 1.3x", rss_ratio <= 1.3)
    )
    res.bars.append(
        Bar(
            "object storage: image written -> in the bucket",
            f"p50 {p50:.2f} s, p99 {p99:.2f} s",
            "a few s",
            p99 < 5,
        )
    )
    res.note = (
        "storage: items/s to the last image written (local) or in the bucket (s3); after it, the tail"
        f" (previews, report, journal) took {tail['local']:.1f} s locally, {tail['s3']:.1f} s to S3.\n"
        "moto keeps objects in memory, in Python, on the same cores as the run."
    )


def steady_rate(finished: list[float], first: int) -> float:
    """Items per second after the first ``first`` answers: the start, when all C requests go out
    together and come back together, is left out; every later answer counts."""
    times = sorted(finished)
    if len(times) <= first + 1:
        return float("nan")
    return (len(times) - first) / (times[-1] - times[first - 1])


def rate_limit(res: Results, rpm: int, items: int) -> None:
    """--rpm: arrivals at the simulator never beat the limit, with no burst at start, and use it."""
    with simulator() as url:
        run = contender("batchgen", base_url=url, items=items, concurrency=16, rpm=rpm)
        with urllib.request.urlopen(url.removesuffix("/v1") + "/_sim/arrivals") as resp:
            arrivals = sorted(json.load(resp))
    interval = 60 / rpm
    worst = 0.0
    for window in (1.0, 5.0):
        allowed = rpm * window / 60
        most = max(bisect.bisect_left(arrivals, t + window) - k for k, t in enumerate(arrivals))
        worst = max(worst, most / allowed)
    span = arrivals[-1] - arrivals[0]
    used = (len(arrivals) - 1) / span * 60 / rpm if span > 0 else 0.0
    first_gap = arrivals[1] - arrivals[0]
    res.raw["rate"] = {
        "rpm": rpm,
        "requests": len(arrivals),
        "worst_window_vs_allowed": worst,
        "used": used,
        "first_gap_s": first_gap,
    }
    res.rows.append(
        (
            f"rate limit, --rpm {rpm}",
            "batchgen",
            f"{run['items_per_s']:.1f}",
            f"{run['seconds']:.2f}",
            f"{run['rss_mb']:.0f}",
        )
    )
    # A window may hold one more arrival than allowed only through network jitter at its edges.
    ok = all(
        max(bisect.bisect_left(arrivals, t + w) - k for k, t in enumerate(arrivals)) <= rpm * w / 60 + 1
        for w in (1.0, 5.0)
    )
    res.bars.append(
        Bar(
            f"rate limit: most in any 1 s / 5 s window (--rpm {rpm})",
            f"{worst:.2f}x of allowed",
            "<= allowed (+1 jitter)",
            ok,
        )
    )
    res.bars.append(
        Bar(
            "rate limit: no burst at start",
            f"first gap {first_gap * 1000:.0f} ms",
            f">= {interval * 900:.0f} ms",
            first_gap >= 0.9 * interval,
        )
    )
    res.bars.append(Bar("rate limit: share of --rpm used", f"{used:.3f}", ">= 0.9", used >= 0.9))


def relay_limit(res: Results, window_s: float, old_python: str | None) -> None:
    """A relay that limits its rate as new-api does, nothing configured (bench/relaylimit.py)."""
    found = relaylimit.measure(simulator, window_s, old_python, Path("output/bench/relaylimit"))
    res.raw["relaylimit"] = found
    for name, run in found["runs"].items():
        who = "batchgen" if name != "old" else "old"
        rate = run["succeeded"] / run["duration_s"] if run["duration_s"] else 0.0
        res.rows.append(
            (
                f"relay limit {relaylimit.LIMIT}/{window_s:g} s, {name} run, 429s {run['throttled']}",
                who,
                f"{rate:.1f}",
                f"{run['duration_s']:.1f}",
                "-",
            )
        )
    res.bars.extend(Bar(*bar) for bar in relaylimit.bars(found))


def memory_scale(res: Results, small: int, large: int) -> None:
    """Peak RSS of catalog jobs of two sizes (small images, C=64): what each item costs, projected to 100k."""
    with simulator() as url:
        a = contender("batchgen", base_url=url, items=small, concurrency=64, catalog=True)
        b = contender("batchgen", base_url=url, items=large, concurrency=64, catalog=True)
    per_item_kb = (b["rss_mb"] - a["rss_mb"]) * 1024 / (large - small)
    projected = b["rss_mb"] + per_item_kb * (100_000 - large) / 1024
    res.rows.append(
        (
            f"catalog job, {small} items, C=64",
            "batchgen",
            f"{a['items_per_s']:.1f}",
            f"{a['seconds']:.2f}",
            f"{a['rss_mb']:.0f}",
        )
    )
    res.rows.append(
        (
            f"catalog job, {large} items, C=64",
            "batchgen",
            f"{b['items_per_s']:.1f}",
            f"{b['seconds']:.2f}",
            f"{b['rss_mb']:.0f}",
        )
    )
    res.raw["memory"] = {
        "small": a["rss_mb"],
        "large": b["rss_mb"],
        "per_item_kb": per_item_kb,
        "projected_100k_mb": projected,
    }
    res.bars.append(
        Bar(
            "100,000-item job peak RSS (projected)",
            f"{projected:.0f} MB ({per_item_kb:.2f} KB/item)",
            "< 300 MB",
            projected < 300,
        )
    )


def scaling(res: Results) -> None:
    """Throughput by concurrency and image size, batchgen and the bare loop."""
    for kb in (512, IMAGE_KB):
        with simulator("--payload-kb", str(kb)) as url:
            warm(url)
            for c in (8, 32, 64):
                for name in ("batchgen", "bare"):
                    run = contender(name, base_url=url, items=max(96, c * 3), concurrency=c)
                    res.rows.append(
                        (
                            f"scaling, C={c}, 0 ms, {kb // 1024 or 0.5} MB",
                            name,
                            f"{run['items_per_s']:.1f}",
                            f"{run['seconds']:.2f}",
                            f"{run['rss_mb']:.0f}",
                        )
                    )


def nightly_noop(res: Results, rows: int, chains: bool = False) -> None:
    """Re-running a finished catalog of ``rows`` x 5 items: nothing to send, the report rewritten.

    The job is made once for real (minutes at 100,000 items) and kept in output/bench/ for later runs.
    """
    from catalog import VIEWS, batchgen, finished_catalog

    items = rows * len(VIEWS)
    kind = f", {rows} chains" if chains else ""
    with simulator() as url:
        manifest, output, first = finished_catalog(Path("output/bench"), rows, url, chains=chains)
        if first is not None:
            res.rows.append(
                (
                    f"catalog job, {items} items{kind}, C=64 (first run)",
                    "batchgen",
                    f"{items / first.seconds:.1f}",
                    f"{first.seconds:.1f}",
                    f"{first.rss_mb:.0f}",
                )
            )
            res.bars.append(
                Bar(
                    f"{items:,}-item job{kind} peak RSS (a real run)",
                    f"{first.rss_mb:.0f} MB",
                    "< 300 MB",
                    first.rss_mb < 300,
                )
            )
        again = ["run", str(manifest), "--base-url", url, "--output", str(output), "-q"]
        runs = [batchgen(again) for _ in range(3)]
        # The long way, for comparison: a touched CSV (nothing in it changed) ends the stamp, so the
        # manifest is expanded and every request compared with the journal; that run stamps again.
        os.utime(manifest.with_name("products.csv"))
        long_way = batchgen(again)
    for run in [*runs, long_way]:
        if run.code != 0:
            raise SystemExit(f"bench: the nightly re-run failed (exit {run.code}): {run.stderr[-2000:]}")
    seconds = statistics.median(r.seconds for r in runs)
    rss = max(r.rss_mb for r in runs)
    res.rows.append((f"nightly no-op, {items} items{kind}", "batchgen", "-", f"{seconds:.2f}", f"{rss:.0f}"))
    res.rows.append(
        (
            f"nightly re-run, {items} items{kind}, CSV touched",
            "batchgen",
            "-",
            f"{long_way.seconds:.2f}",
            f"{long_way.rss_mb:.0f}",
        )
    )
    res.raw["nightly_noop" + ("_chains" if chains else "")] = {
        "items": items,
        "seconds": [r.seconds for r in runs],
        "rss_mb": [r.rss_mb for r in runs],
        "long_way": {"seconds": long_way.seconds, "rss_mb": long_way.rss_mb},
    }
    res.bars.append(
        Bar(f"nightly no-op of {items:,} items{kind}: time", f"{seconds:.2f} s", "< 3 s", seconds < 3)
    )
    res.bars.append(
        Bar(f"nightly no-op of {items:,} items{kind}: peak RSS", f"{rss:.0f} MB", "< 300 MB", rss < 300)
    )


def chain_run(res: Results, roots: int, dependents: int, concurrency: int, latency: float) -> None:
    """``roots`` chains of a root and ``dependents`` made from it, at latency L: the whole run
    against the ideal, L x the larger of the depth (2) and the rounds C slots need (no barrier:
    a dependent goes as soon as its own root is written), and against the same items with no
    references, run alternately on the same simulator (what this machine reaches at best)."""
    from catalog import batchgen

    folder = Path("output/bench/chains")
    shutil.rmtree(folder, ignore_errors=True)  # earlier runs' folders
    folder.mkdir(parents=True, exist_ok=True)
    manifests = {}
    for kind in ("chains", "plain"):
        items: list[dict[str, Any]] = []
        for k in range(roots):
            items.append({"id": f"r{k}", "prompt": f"product {k} hero"})
            for d in range(dependents):
                refs = {"references": [f"@r{k}"]} if kind == "chains" else {}
                items.append({"id": f"r{k}-{d}", "prompt": f"product {k} view {d}", **refs})
        manifests[kind] = folder / f"{kind}-{concurrency}.yaml"
        job = {
            "job": kind,
            "defaults": {"size": "512"},
            "limits": {"concurrency": concurrency},
            "items": items,
        }
        manifests[kind].write_text(json.dumps(job))  # JSON is YAML
    total = roots * (1 + dependents)
    ideal = latency * max(2, -(-total // concurrency))
    walls: dict[str, list[float]] = {"chains": [], "plain": []}
    rss = 0.0
    with simulator("--latency-ms", str(int(latency * 1000))) as url:
        for rep in range(3):
            for kind, manifest in manifests.items():
                output = folder / f"output-{kind}-{rep}"  # a fresh one: thumbnails may still be written
                run = batchgen(["run", str(manifest), "--base-url", url, "--output", str(output), "-q"])
                if run.code != 0:
                    raise SystemExit(f"bench: the {kind} run failed (exit {run.code}): {run.stderr[-2000:]}")
                walls[kind].append(json.loads((output / kind / "report.json").read_text())["duration_s"])
                rss = max(rss, run.rss_mb) if kind == "chains" else rss
    chained, plain = statistics.median(walls["chains"]), statistics.median(walls["plain"])
    label = f"chains {roots}x{dependents}, L={latency:g} s, C={concurrency}"
    res.rows.append((label, "batchgen", f"{total / chained:.1f}", f"{chained:.2f}", f"{rss:.0f}"))
    res.rows.append(
        ("  the same items, no references", "batchgen", f"{total / plain:.1f}", f"{plain:.2f}", "")
    )
    res.raw.setdefault("chains", {})[label] = {**walls, "ideal_s": ideal}
    ratio = chained / ideal
    res.bars.append(Bar(f"{label}: run vs ideal {ideal:g} s", f"{ratio:.3f}x", "<= 1.2x", ratio <= 1.2))
    ratio = chained / plain
    res.bars.append(Bar(f"{label}: run vs no references", f"{ratio:.3f}x", "<= 1.2x", ratio <= 1.2))


def chain_planning(res: Results, rows: int) -> None:
    """A catalog of ``rows`` x 5 items, each row a chain (its front view the hero of the four
    others), and the same catalog without chains: ``validate``, and a run's planning (every item
    triaged against an empty job folder; ``--max-cost 0.0001`` then refuses to send), each timed."""
    from catalog import batchgen, write_catalog

    measured: dict[tuple[str, bool], tuple[float, float]] = {}
    for chains in (False, True):
        folder = Path("output/bench") / f"plan-{rows}{'-chains' if chains else ''}"
        manifest = write_catalog(folder, rows, chains=chains)
        output = ["--output", str(folder / "none")]
        for step, args, code in (
            ("validate", ["validate", str(manifest), *output], 0),
            ("plan", ["run", str(manifest), *output, "--max-cost", "0.0001", "-q"], 2),
        ):
            runs = [batchgen(args) for _ in range(3)]
            if any(r.code != code for r in runs):
                raise SystemExit(f"bench: {step} failed: {runs[0].stderr[-2000:]}")
            measured[(step, chains)] = (
                statistics.median(r.seconds for r in runs),
                max(r.rss_mb for r in runs),
            )
    items = rows * 5
    for (step, chains), (secs, rss) in measured.items():
        label = f"{step}, {items} items" + (f", {rows} chains" if chains else "")
        res.rows.append((label, "batchgen", "-", f"{secs:.2f}", f"{rss:.0f}"))
    for step in ("validate", "plan"):
        ratio = measured[(step, True)][0] / measured[(step, False)][0]
        name = f"{step} {items:,} items, {rows:,} chains vs none"
        res.bars.append(Bar(name, f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2))
    res.raw["chain_planning"] = {f"{step}{'-chains' if c else ''}": v for (step, c), v in measured.items()}


def gallery_first_paint(res: Results, items: int) -> None:
    """The gallery of an ``items``-item job in headless Chromium: when its first screen is drawn."""
    import shutil
    import tempfile

    sys.path.insert(0, str(HERE.parent))
    from batchgen.report import gallery
    from tests.browser import FLAGS
    from tests.test_browser import big_report

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        res.note += "\nno chromium here: the gallery's first paint was not measured"
        return
    from playwright.sync_api import sync_playwright

    report_data, cards = big_report(items)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        started = time.perf_counter()
        page_path = gallery.write(Path(tmp), report_data, cards)
        written = time.perf_counter() - started
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        ready = []
        for _ in range(3):
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(page_path.as_uri())
            page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
            ready.append(int(page.locator("body").get_attribute("data-ready-ms") or 0))
            page.close()
        browser.close()
        size_mb = page_path.stat().st_size / 1e6
    first = statistics.median(ready)
    res.rows.append(
        (f"gallery, {items} items ({size_mb:.0f} MB page)", "chromium", "-", f"{first / 1000:.2f}", "-")
    )
    res.raw["gallery"] = {"items": items, "ready_ms": ready, "written_s": written, "page_mb": size_mb}
    res.bars.append(
        Bar(f"gallery of {items:,} items: first screen", f"{first:.0f} ms", "< 3000 ms", first < 3000)
    )


def deriving(res: Results, images: int, reps: int, rederive_items: int) -> None:
    """The derivation stage (bench/derive.py): rendering against a plain Pillow loop, the loop's lag
    while variants render, the thumbnail tail at a pace the machine keeps, re-deriving for free."""
    import derive

    found = derive.rendering(images, reps)
    ratio = found["batchgen"] / found["plain"]
    label = f"2K PNG ({found['png_mb']:.1f} MB) -> 3 variants + thumbnail"
    res.rows.append((label, "batchgen", f"{found['batchgen']:.2f}", "", ""))
    res.rows.append((label, "pillow", f"{found['plain']:.2f}", "", ""))
    res.bars.append(
        Bar("variant rendering vs plain Pillow, a process per core", f"{ratio:.2f}x", ">= 0.8x", ratio >= 0.8)
    )
    with simulator("--payload-kb", str(IMAGE_KB)) as url:
        warm(url)
        run = contender("batchgen", base_url=url, items=24, concurrency=8, variants=derive.CHANNELS)
    p99 = percentile(run["lags"], 99) * 1000
    res.rows.append(
        (
            "24 x 2K, C=8, 0 ms, 3 variants",
            "batchgen",
            f"{run['items_per_s']:.1f}",
            f"{run['seconds']:.2f}",
            f"{run['rss_mb']:.0f}",
        )
    )
    res.rows.append(("  then its derivation tail", "batchgen", "", f"{run['tail_s']:.2f}", ""))
    res.bars.append(Bar("event-loop lag p99 while variants render", f"{p99:.1f} ms", "< 20 ms", p99 < 20))
    with simulator("--payload-kb", str(IMAGE_KB), "--latency-ms", "2000") as url:
        warm(url)
        paced = contender("batchgen", base_url=url, items=32, concurrency=8)
    res.rows.append(
        (
            "L=2 s, C=8, 3 MB, thumbnails",
            "batchgen",
            f"{paced['items_per_s']:.1f}",
            f"{paced['seconds']:.2f}",
            f"{paced['rss_mb']:.0f}",
        )
    )
    res.bars.append(
        Bar("thumbnail tail, L=2 s, C=8", f"{paced['tail_s']:.2f} s", "< 1 s", paced["tail_s"] < 1)
    )
    web = {"web": {"width": 256, "format": "webp", "quality": 80}}
    with simulator() as url:
        again = contender(
            "batchgen",
            base_url=url,
            items=rederive_items,
            concurrency=64,
            size="1K",
            variants=web,
            rederive=True,
        )
    second = again["rederive"]
    res.rows.append(
        (
            f"re-derive {rederive_items} items, spec changed",
            "batchgen",
            f"{second['items'] / second['seconds']:.1f}",
            f"{second['seconds']:.2f}",
            "",
        )
    )
    res.rows.append(
        (
            "  its first run (sent, then derived)",
            "batchgen",
            f"{again['items_per_s']:.1f}",
            f"{again['seconds']:.2f}",
            f"{again['rss_mb']:.0f}",
        )
    )
    res.bars.append(
        Bar(
            f"re-deriving {rederive_items:,} items: requests sent",
            str(second["requests_sent"]),
            "0",
            second["requests_sent"] == 0,
        )
    )
    res.raw["derive"] = {
        "rendering": found,
        "lag_ms_p99": p99,
        "loaded": run,
        "paced": paced,
        "rederive": again,
    }
    res.raw["derive"]["thumbnail_cpu_s"] = derive.cpu_per_thumbnail()
    for what, cpu in res.raw["derive"]["thumbnail_cpu_s"].items():
        res.rows.append((f"  CPU of one thumbnail from a {what}", "render", "", f"{cpu:.3f}", ""))


def report(res: Results, started: float) -> bool:
    width = max(len(r[0]) for r in res.rows)
    python = sys.version.split()[0]
    print(f"\nbatchgen benchmark, {os.cpu_count()} cores, Python {python}, {time.time() - started:.0f} s\n")
    print(f"{'scenario':<{width}}  {'contender':<9} {'items/s':>8} {'wall s':>7} {'peak RSS MB':>11}")
    for scenario, name, rate, secs, rss in res.rows:
        print(f"{scenario:<{width}}  {name:<9} {rate:>8} {secs:>7} {rss:>11}")
    if res.bars:
        print(f"\n{'bar (docs/performance.md)':<52} {'measured':<28} {'target':<22} result")
        for bar in res.bars:
            print(f"{bar.name:<52} {bar.measured:<28} {bar.target:<22} {'PASS' if bar.ok else 'FAIL'}")
    out = Path("output/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"rows": res.rows, "bars": [b.__dict__ for b in res.bars], "raw": res.raw}, indent=2)
    )
    if res.note:
        print(f"\n{res.note}")
    print(f"\nresults: {out / 'results.json'}")
    return all(bar.ok for bar in res.bars)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 30 s")
    parser.add_argument("--scaling", action="store_true", help="only the scaling table")
    parser.add_argument(
        "--catalog-rows",
        type=int,
        default=20_000,
        help="rows x 5 views of the nightly no-op's catalog (default 20,000: 100,000 items; made once,"
        " in minutes, and kept in output/bench/)",
    )
    parser.add_argument(
        "--only",
        choices=(
            "throughput",
            "latency",
            "nightly",
            "nightly-chains",
            "gallery",
            "chains",
            "derive",
            "relaylimit",
            "storage",
        ),
        help="one scenario alone",
    )
    parser.add_argument(
        "--derive-items",
        type=int,
        default=10_000,
        help="items of the re-derive scenario (default 10,000: its first run makes them, in minutes)",
    )
    parser.add_argument(
        "--relay-window-s",
        type=float,
        default=60.0,
        help="relaylimit: the relay's window (default 60: new-api's minute; shorter for a quick look)",
    )
    parser.add_argument(
        "--old-python",
        metavar="PYTHON",
        help="relaylimit: also run the first scenario with this interpreter's batchgen (e.g. main's venv)",
    )
    args = parser.parse_args()
    started = time.time()
    res = Results()
    if args.only == "throughput":
        throughput(res, items=150, reps=4)
    elif args.only == "latency":
        latency_bound(res, rounds=5, reps=3, with_bare=True)
    elif args.only == "nightly":
        nightly_noop(res, args.catalog_rows)
    elif args.only == "nightly-chains":  # makes its own 100,000-item catalog first: long
        nightly_noop(res, args.catalog_rows, chains=True)
    elif args.only == "gallery":
        gallery_first_paint(res, 100_000)
    elif args.only == "derive":
        deriving(res, images=24, reps=2, rederive_items=args.derive_items)
    elif args.only == "relaylimit":
        relay_limit(res, args.relay_window_s, args.old_python)
    elif args.only == "chains":
        chain_run(res, roots=50, dependents=4, concurrency=50, latency=1.0)
        chain_run(res, roots=50, dependents=4, concurrency=250, latency=1.0)
        chain_planning(res, args.catalog_rows)
    elif args.only == "storage":
        storage(res, rounds=3, reps=2)
    elif args.scaling:
        scaling(res)
    elif args.quick:
        res.note = (
            "quick: one short run of each, so every ratio is rough; the 100k projection most of all\n"
            "(below ~5,000 items a job's memory still grows faster than it will later). make bench decides."
        )
        throughput(res, items=48, reps=1)
        latency_bound(res, rounds=3, reps=1, with_bare=False)
        rate_limit(res, rpm=1200, items=40)
        memory_scale(res, small=300, large=1200)
    else:
        throughput(res, items=150, reps=4)
        latency_bound(res, rounds=5, reps=3, with_bare=True)
        rate_limit(res, rpm=1200, items=140)
        memory_scale(res, small=1000, large=5000)
        gallery_first_paint(res, 100_000)
        nightly_noop(res, args.catalog_rows)
        deriving(res, images=24, reps=2, rederive_items=args.derive_items)
    return 0 if report(res, started) else 1


if __name__ == "__main__":
    sys.exit(main())
