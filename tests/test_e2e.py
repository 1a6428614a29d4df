"""The command line against the built-in simulator: files on disk, report.json, exact request counts."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgen import config, manifest
from batchgen.cli.main import main
from batchgen.errors import UsageError
from batchgen.job import jobs
from batchgen.sim.simulator import Simulator

from .conftest import CANARY_KEY, FAST_LIMITS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BATCHGEN_API_KEY", "BATCHGEN_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def report_at(folder: Path) -> dict[str, Any]:
    return dict(orjson.loads((folder / "report.json").read_bytes()))


def test_demo_runs_clean_against_the_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(REPO / "jobs/demo.yaml"), "--simulate", "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    report = report_at(tmp_path / "demo")
    assert report["status"] == "completed"
    assert report["counts"] == {"total": 12, "succeeded": 12, "failed": 0, "skipped": 0, "pending": 0}
    images = sorted((tmp_path / "demo/images").glob("*.png"))
    assert len(images) == 13  # one item asks for n: 2
    assert png_size(tmp_path / "demo/images/tote-red-flatlay-1.png") == (768, 1376)  # Gemini's 9:16
    assert png_size(tmp_path / "demo/images/tote-lineup.png") == (3168, 1344)  # Gemini's 2K 21:9
    assert report["flags"] == {"size_mismatch": 0}  # the simulator answers what was asked
    files = [f for item in report["items"] for f in item["files"]]
    assert sorted(files) == sorted(f"images/{p.name}" for p in images)
    assert "demo: completed" in out
    assert "report: " in out


def faulty_manifest(write_manifest: Callable[..., Path], items: list[dict[str, Any]], **limits: Any) -> Path:
    return write_manifest(
        {"job": "faults", "limits": {**FAST_LIMITS, "concurrency": 4, **limits}, "items": items}
    )


CASES = [
    # prompt, expected requests, final status, class
    ("fine", 1, "succeeded", None),
    ("[sim:safety] refused", 1, "failed", "safety_filter"),
    ("[sim:no_image] declined", 1, "failed", "no_image"),
    ("[sim:400] bad", 1, "failed", "invalid_request"),
    ("[sim:empty] nothing", 1, "failed", "no_image"),
    ("[sim:500*2] flaky", 3, "succeeded", None),
    ("[sim:upload*1] upload hiccup", 2, "succeeded", None),
    ("[sim:429*1] busy", 2, "succeeded", None),
    ("[sim:drop*1] dropped", 2, "succeeded", None),
    ("[sim:cut*1] cut off", 2, "succeeded", None),
    ("[sim:truncated*1] truncated json", 2, "succeeded", None),
    ("[sim:html*1] html page", 2, "succeeded", None),
    ("[sim:badb64*1] garbled", 2, "succeeded", None),
    ("[sim:notimage*1] text", 2, "succeeded", None),
    ("[sim:502] gateway down", 4, "failed", "server_error"),
]
# Timed out after sending, so perhaps billed: limits.max_unconfirmed_per_item (2) stops it.
STALLS = ("[sim:slow] stalls", 2, "failed", "timeout")


def test_every_fault_is_classified_and_sent_exactly_as_often_as_it_should(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stalled answer never comes (the simulator holds it far longer than the test runs), so
    # the client's timeout is the one thing that can end those attempts; it is a job of its own,
    # so that no other item has a deadline short enough for a busy machine to miss.
    sim = threaded_simulator(slow_ms=600_000)
    monkeypatch.setenv("BATCHGEN_API_KEY", "test-key")
    items = [{"id": f"i{k}", "prompt": prompt} for k, (prompt, *_) in enumerate(CASES)]
    path = faulty_manifest(write_manifest, items)
    stalls = write_manifest(
        {
            "job": "stalls",
            "limits": {**FAST_LIMITS, "timeout_s": 0.5},
            "items": [{"id": "i15", "prompt": STALLS[0]}],
        }
    )
    out = tmp_path / "out"
    code = main(["run", str(path), str(stalls), "--base-url", sim.base_url, "--output", str(out), "-q"])
    assert code == 1
    reports = [report_at(out / "faults"), report_at(out / "stalls")]
    by_id = {item["id"]: item for report in reports for item in report["items"]}
    failures = {f["id"]: f for report in reports for f in report["failures"]}
    for k, (prompt, requests, status, error_class) in enumerate([*CASES, STALLS]):
        assert sim.stats.by_prompt[prompt] == requests, prompt
        assert by_id[f"i{k}"]["status"] == status, prompt
        assert by_id[f"i{k}"]["attempts"] == requests, prompt
        if error_class:
            assert failures[f"i{k}"]["class"] == error_class, prompt
    assert sum(r["requests_sent"] for r in reports) == sum(requests for _, requests, *_ in [*CASES, STALLS])
    # drop and cut happen after the request was sent; two slow attempts timed out after sending.
    assert [r["unconfirmed_attempts"] for r in reports] == [2, 2]
    assert [r["status"] for r in reports] == ["partial", "partial"]
    assert failures["i1"]["retryable"] is False
    assert failures["i14"]["message"] == "HTTP 502: HTML page: 502 Bad Gateway"
    assert failures["i15"]["message"] == "timed out waiting for the service"


def test_rpm_on_the_command_line_spaces_the_requests_at_the_service(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = threaded_simulator()
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    items = [{"id": f"i{k}", "prompt": f"p{k}"} for k in range(5)]
    # All five could go at once, and the manifest's own rate would allow it; --rpm 1200 overrides
    # that with one request every 50 ms.
    path = faulty_manifest(write_manifest, items, concurrency=5, requests_per_minute=600_000)
    argv = ["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path), "-q", "--rpm", "1200"]
    assert main(argv) == 0
    arrivals = sorted(sim.stats.arrivals)
    assert len(arrivals) == 5
    # Four gaps of 50 ms, less up to 50 ms of the first request's own travel (a new connection).
    assert arrivals[-1] - arrivals[0] >= 4 * 0.050 - 0.050


def test_seeded_random_faults_are_recovered_and_reproducible(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    path = faulty_manifest(
        write_manifest, [{"id": f"i{k}", "prompt": f"p{k}"} for k in range(30)], max_attempts=8
    )
    counts = []
    for run in range(2):
        sim = threaded_simulator(fault_rate=0.3, seed=11)
        assert (
            main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / f"o{run}"), "-q"])
            == 0
        )
        counts.append(dict(sim.stats.by_prompt))
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) > 30  # some faults happened and were retried


def test_a_bad_key_stops_the_job_at_once(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = threaded_simulator(api_key="the-right-key")
    monkeypatch.setenv("BATCHGEN_API_KEY", "a-wrong-key")
    path = faulty_manifest(
        write_manifest, [{"id": f"i{k}", "prompt": f"p{k}"} for k in range(200)], concurrency=4
    )
    code = main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path)])
    assert code == 3
    assert sim.stats.requests <= 4
    report = report_at(tmp_path / "faults")
    assert report["status"] == "aborted"
    assert report["counts"]["pending"] >= 196
    assert report["failures"][0]["class"] == "auth"
    assert "aborted:" in capsys.readouterr().out


def test_url_responses_are_downloaded(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = threaded_simulator()
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    path = faulty_manifest(write_manifest, [{"id": "u", "prompt": "p", "response_format": "url", "n": 2}])
    assert main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path), "-q"]) == 0
    assert sim.stats.downloads == 2
    assert png_size(tmp_path / "faults/images/u-2.png") == (1024, 1024)


def test_the_key_never_reaches_a_file_or_a_log_line(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = threaded_simulator(api_key=CANARY_KEY)
    monkeypatch.setenv("BATCHGEN_API_KEY", CANARY_KEY)
    items = [
        {"id": "ok", "prompt": "fine"},
        {"id": "s", "prompt": "[sim:safety] x"},
        {"id": "r", "prompt": "[sim:500*1] y"},
        {"id": "d", "prompt": "[sim:drop*1] z"},
    ]
    path = faulty_manifest(write_manifest, items)
    code = main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "out"), "-vv"])
    captured = capsys.readouterr()
    assert code == 1
    assert report_at(tmp_path / "out/faults")["counts"]["succeeded"] == 3  # the canary key was accepted
    assert "attempt 1 failed" in captured.err  # debug logging was on and had things to say
    for text in (captured.out, captured.err):
        assert CANARY_KEY not in text
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) > 5
    for file in files:
        assert CANARY_KEY.encode() not in file.read_bytes(), file


def test_an_invalid_manifest_sends_nothing_and_writes_nothing(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = threaded_simulator()
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    good = faulty_manifest(write_manifest, [{"id": "a", "prompt": "p"}])
    bad = write_manifest({"items": [{"id": "a", "prompt": "p", "size": "huge"}]}, name="bad.yaml")
    code = main(["run", str(good), str(bad), "--base-url", sim.base_url, "--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"batchgen: error: {bad}: items[0] (id a): size: must be one of")
    assert sim.stats.requests == 0
    assert not (tmp_path / "out").exists()


def test_a_missing_key_says_how_to_set_it(
    write_manifest: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_manifest({"api": {"api_key_env": "SHOP_IMAGES_KEY"}, "items": [{"prompt": "p"}]})
    assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "export SHOP_IMAGES_KEY=" in err
    assert "--simulate" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "x.yaml", "--concurrency", "0"], "--concurrency: must be at least 1"),
        (["run", "x.yaml", "--max-attempts", "lots"], "--max-attempts: must be a number"),
        (["run"], "the following arguments are required: MANIFEST"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert fragment in capsys.readouterr().err


def test_bad_simulator_settings_are_usage_errors(
    write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_manifest({"items": [{"prompt": "p"}]})
    assert main(["run", str(path), "--simulate", "--sim-faults", "500,meteor"]) == 2
    assert "unknown fault kinds ['meteor']" in capsys.readouterr().err
    assert main(["run", str(path), "--simulate", "--sim-max-body-mb", "-3"]) == 2
    assert "max body must be above 0 MB, not -3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["run", str(path), "--simulate", "--sim-response", "json"])
    assert exited.value.code == 2


def test_validate_prints_counts_sizes_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO / "jobs/demo.yaml")]) == 0
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.endswith("ok: job 'demo', 12 items, 12 requests, 13 images")
    assert "1024x1792 x2" in out
    assert "estimated cost ~USD" in out
    assert err == ""  # the example warns of nothing: no field the service does not document


def test_python_dash_m_runs_the_demo_in_a_subprocess(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGEN_")}
    jobs = tmp_path / "jobs"
    shutil.copytree(REPO / "jobs", jobs)
    done = subprocess.run(
        [sys.executable, "-m", "batchgen", "run", "jobs/demo.yaml", "--simulate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "output/demo/report.json").is_file()  # --output defaults to ./output
    assert done.stderr.count("\n") <= 2  # no progress bar when not a terminal; just the seed warning


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &x [1]\nitems: *x\n", ":1: YAML anchors and aliases are not allowed"),
        (
            "items: !!python/object/apply:os.system [ls]\n",
            ":1: YAML tag tag:yaml.org,2002:python/object/apply:os.system is not allowed",
        ),
        ("", ": is empty; a manifest needs at least `items:`"),
        ("[1, 2]\n", ": must be a YAML mapping at the top level, not a list"),
        (
            "items:\n  - id: ../../etc/passwd\n    prompt: x\n",
            ": items[0]: id: '../../etc/passwd' must be 1-100 of",
        ),
        ("items:\n  - id: /abs\n    prompt: x\n", ": items[0]: id: '/abs' must be 1-100 of"),
        ('items:\n  - id: "a\\0b"\n    prompt: x\n', ": items[0]: id: 'a\\x00b' must be 1-100 of"),
        (
            "items:\n  - {id: A, prompt: x}\n  - {id: a, prompt: y}\n",
            ": items[1] (id a): id: has an id that differs only in case (A) from items[0]",
        ),
        (
            "items:\n  - {id: a, prompt: x, references: [nope.png]}\n",
            ": items[0] (id a): references[0]: nope.png: file not found",
        ),
        ("api: {max_request_mb: 0}\nitems: [{prompt: x}]\n", ": api.max_request_mb: must be a number"),
        ('api: {max_request_mb: "32MB"}\nitems: [{prompt: x}]\n', ": api.max_request_mb: must be a number"),
        ("limits: {reference_max_side: 10}\nitems: [{prompt: x}]\n", ": limits.reference_max_side: must be"),
        (
            "limits: {reference_max_mb: 0}\nitems: [{prompt: x}]\n",
            ": limits.reference_max_mb: must be above 0",
        ),
        (
            "limits: {max_unconfirmed_per_item: 0}\nitems: [{prompt: x}]\n",
            ": limits.max_unconfirmed_per_item: must be at least 1",
        ),
    ],
)
def test_hostile_manifests_get_one_line_exit_2_and_nothing_sent(
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    fragment: str,
) -> None:
    sim = threaded_simulator()
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    path = write_manifest(text, name="hostile.yaml")
    assert main(["run", str(path), "--base-url", sim.base_url, "--output", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"batchgen: error: {path}{fragment}"), line
    assert sim.stats.requests == 0
    assert not (tmp_path / "out").exists()


async def test_asked_to_simulate_without_a_simulator_the_library_sends_nothing(
    write_manifest: Callable[..., Path], tmp_path: Path
) -> None:
    # config.resolve skips the key when simulating: without the simulator the command line
    # passes, the prompts would go to the manifest's base_url with no key.
    path = write_manifest({"job": "j", "items": [{"id": "a", "prompt": "p"}]})
    options = jobs.RunOptions(overrides=config.Overrides(output_dir=tmp_path / "out", simulate=True))
    with pytest.raises(UsageError, match="simulate"):
        await jobs.run_manifest(manifest.load(path), options, {})
    assert not (tmp_path / "out").exists()
