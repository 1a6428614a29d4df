"""What batchgen says on stderr: one voice in text, only JSON with --log-format json, repeated
mistakes counted, no library internals, and the pointers a new user needs (--dry-run, plain http)."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from batchgen import config
from batchgen.cli import logs
from batchgen.cli.main import main
from batchgen.errors import Problem
from batchgen.service.client import map_exception
from batchgen.sim.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
CANARY = "sk-canary-0123456789abcdef"


def json_lines(text: str) -> list[dict[str, object]]:
    """Every line of ``text`` as JSON; fails on any line that is not."""
    return [orjson.loads(line) for line in text.splitlines()]


def catalog_with_missing_references(folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "products.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["sku", "name"])
        writer.writerows([f"sku-{k:05d}", f"product {k}"] for k in range(rows))
    manifest = folder / "catalog.yaml"
    manifest.write_text(
        "job: cat\n"
        "generate:\n"
        "  - rows: products.csv\n"
        "    template:\n"
        "      id: '{sku}'\n"
        "      prompt: 'Studio photo of {name}'\n"
        "      references: ['refs/{sku}.png']\n"
    )
    return manifest


def test_an_invalid_manifest_in_json_mode_is_only_json_lines_that_locate_each_problem(
    write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str], api_key: None
) -> None:
    bad = write_manifest({"items": [{"id": "a", "prompt": "p", "size": "huge"}]}, name="broken.yaml")

    assert main(["run", str(bad), "--log-format", "json", "--simulate"]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = json_lines(captured.err)
    assert line["level"] == "error"
    assert line["event"] == "manifest_problem"
    assert line["file"] == str(bad)
    assert line["item"] == "items[0]"
    assert line["id"] == "a"
    assert line["field"] == "size"
    assert str(line["message"]).startswith("must be one of")


def test_a_missing_key_in_json_mode_is_a_json_line(
    write_manifest: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BATCHGEN_API_KEY", raising=False)
    path = write_manifest({"items": [{"prompt": "p"}]})

    assert main(["run", str(path), "--output", str(tmp_path / "out"), "--log-format=json"]) == 2

    (line,) = json_lines(capsys.readouterr().err)
    assert line["level"] == "error"
    assert "export BATCHGEN_API_KEY=" in str(line["message"])


def test_validate_in_json_mode_prints_its_results_and_warnings_as_json(
    write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_manifest(
        {
            "job": "shop",
            "items": [
                {"id": "a", "prompt": "p", "size": "2K", "n": 2},
                {"id": "b", "prompt": "q", "extra_fields": {"colour": "red"}},
            ],
        }
    )

    assert main(["validate", str(path), "--log-format", "json"]) == 0

    captured = capsys.readouterr()
    (result,) = json_lines(captured.out)
    assert result["event"] == "manifest_ok"
    assert (result["job"], result["items"], result["requests"], result["images"]) == ("shop", 2, 2, 3)
    assert isinstance(result["estimated_cost"], float)
    assert result["estimated_cost"] > 0
    (warning,) = json_lines(captured.err)
    assert warning["level"] == "warning"
    assert warning["field"] == "extra_fields.colour"


def test_text_mode_speaks_with_one_prefix(
    write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str], api_key: None, tmp_path: Path
) -> None:
    path = write_manifest({"items": [{"id": "b", "prompt": "q", "extra_fields": {"colour": "red"}}]})
    assert main(["validate", str(path)]) == 0
    warned = capsys.readouterr().err.splitlines()
    bad = write_manifest({"items": [{"id": "a", "prompt": "p", "size": "huge"}]})
    assert main(["run", str(bad), "--simulate", "--output", str(tmp_path / "out")]) == 2
    failed = capsys.readouterr().err.splitlines()

    assert [line.split(": ")[:2] for line in warned] == [["batchgen", "warning"]]
    assert [line.split(": ")[:2] for line in failed] == [["batchgen", "error"]]


def test_thousands_of_rows_with_the_same_mistake_are_shown_a_few_times_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = catalog_with_missing_references(tmp_path / "jobs", rows=3000)

    assert main(["validate", str(manifest)]) == 2

    err = capsys.readouterr().err.splitlines()
    assert len(err) == logs.SHOWN_LIKE_THIS + 1
    assert all("references[0]" in line for line in err[:-1])
    assert err[-1] == f"batchgen: error: ... and {3000 - logs.SHOWN_LIKE_THIS:,} more like this"


def test_different_mistakes_are_each_shown() -> None:
    names = ["tote", "mug", "cap.v2", "scarf", "bag"]  # no numbers: the file names themselves differ
    found = [
        Problem("m.yaml", f"refs/{n}.png: file not found", item=k, field="references[0]")
        for k, n in enumerate(names)
    ]
    found.append(Problem("m.yaml", "must be one of 1K, 2K, 4K or WxH, not 'huge'", item=9, field="size"))

    shown = list(logs.summarised(found))

    assert [(p.field, more) for p, more in shown] == [
        ("references[0]", 0),
        ("references[0]", 0),
        ("references[0]", 0),
        ("references[0]", 2),
        ("size", 0),
    ]


def test_usage_errors_speak_in_the_same_voice_and_as_json_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as text_exit:
        main(["run", "--concurrency", "many", "x.yaml"])
    text = capsys.readouterr().err.splitlines()
    with pytest.raises(SystemExit) as json_exit:
        main(["run", "--log-format", "json", "--concurrency", "many", "x.yaml"])
    (line,) = json_lines(capsys.readouterr().err)

    assert text_exit.value.code == json_exit.value.code == 2
    assert text[-1].startswith("batchgen: error: argument --concurrency: must be a number")
    assert line["event"] == "usage_error"
    assert "--concurrency" in str(line["message"])


@pytest.mark.parametrize("command", ["run", "retry", "redo"])
def test_dry_run_points_at_validate_and_sends_nothing(
    command: str, sim: Simulator, capsys: pytest.CaptureFixture[str], tmp_path: Path, api_key: None
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, str(tmp_path), "--dry-run", "--base-url", sim.base_url])

    assert exit_.value.code == 2
    assert "there is no --dry-run: `batchgen validate MANIFEST`" in capsys.readouterr().err
    assert sim.stats.requests == 0


@pytest.mark.parametrize(
    ("base_url", "warns"),
    [
        ("http://relay.example.com/v1", True),
        ("http://10.0.0.5:3000/v1", True),  # a private network still carries the key in clear
        ("https://relay.example.com/v1", False),
        ("http://127.0.0.1:8787/v1", False),
        ("http://localhost:8787/v1", False),
        ("http://[::1]:8787/v1", False),
    ],
)
def test_a_plain_http_base_url_to_another_host_warns_that_the_key_travels_in_clear(
    base_url: str, warns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="batchgen")

    config.resolve(
        config.ApiSettings(),
        config.Limits(),
        config.Overrides(base_url=base_url),
        {"BATCHGEN_API_KEY": CANARY},
    )

    warned = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert bool(warned) is warns
    if warns:
        assert warned == [
            f"--base-url is plain http to {base_url.split('/')[2].split(':')[0]}: the API key,"
            " prompts and images travel unencrypted; use https"
        ]
        assert all(CANARY not in r.getMessage() for r in caplog.records)  # never the key itself


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.http_exceptions.ContentLengthError("Not enough data to satisfy content length header."),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ServerDisconnectedError(),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
)
def test_connection_failures_read_as_words_not_library_internals(exc: BaseException) -> None:
    message = map_exception(exc).message

    assert type(exc).__name__ not in message
    assert "Error" not in message
    assert "400" not in message  # aiohttp's code for a short body is not an HTTP status
    assert "message=" not in message


def test_the_demo_manifests_validate_without_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "jobs"), "-q"]) == 0
    assert capsys.readouterr().err == ""


WITHOUT_FCNTL = """
import sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
from batchgen.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_help_and_validate_work_without_fcntl_and_a_run_says_what_it_needs(tmp_path: Path) -> None:
    def batchgen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", WITHOUT_FCNTL, *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    assert batchgen("--help").returncode == 0
    assert batchgen("validate", str(ROOT / "jobs/demo.yaml"), "-q").returncode == 0
    run = batchgen("run", str(ROOT / "jobs/demo.yaml"), "--simulate", "--output", str(tmp_path / "out"))

    assert run.returncode == 2
    assert run.stderr.strip() == (
        "batchgen: error: running a job needs Linux or macOS (job folders are locked with flock);"
        " on Windows, use WSL or the container image"
    )
