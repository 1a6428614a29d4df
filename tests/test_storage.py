"""Runs that write to a bucket: a real S3 API (moto's server, in memory, on 127.0.0.1), no mock.

Exact request counts come from the simulator: what a bucket already holds is never sent again.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from batchgen.cli.main import main
from batchgen.job import jobs, remote
from batchgen.manifest import validate
from batchgen.outcomes import Event
from batchgen.output import paths, spool
from batchgen.output.bucket import Retries
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS
from .network import ForwardProxy

moto_server = pytest.importorskip("moto.server")

KEY_ID, SECRET = "AKIDSTORAGETEST", "storage-secret-never-shown-9f2c"


class S3:
    """moto's S3 on 127.0.0.1; ``stop``/``start`` make an outage (moto keeps the objects in memory)."""

    def __init__(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, self.port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def client(self) -> Any:
        """boto3 (moto's own dependency): the test looks at the bucket through another S3 client."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )

    def make_bucket(self) -> str:
        name = f"b-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> dict[str, int]:
        """Every object of ``bucket``, with its size."""
        listed = self.client().list_objects_v2(Bucket=bucket, MaxKeys=1000)
        return {o["Key"]: o["Size"] for o in listed.get("Contents", [])}

    def get(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return data


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    server = S3()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3:
    for name, value in {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "BATCHGEN_WORK_DIR": str(tmp_path / "spool"),
        "BATCHGEN_API_KEY": "k",
    }.items():
        monkeypatch.setenv(name, value)
    for name in (
        "AWS_ALLOW_HTTP",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "BATCHGEN_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    return s3_server


class Job:
    def __init__(self, tmp_path: Path, sim: Simulator, s3: S3, n: int = 4) -> None:
        self.sim, self.s3 = sim, s3
        self.bucket = s3.make_bucket()
        self.url = f"s3://{self.bucket}/night"
        self.path = tmp_path / "jobs" / "cat.yaml"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.work = tmp_path / "work"
        self.write([{"id": f"i{k}", "prompt": f"p {k}"} for k in range(n)])

    def write(self, items: list[dict[str, Any]]) -> None:
        data = {"job": "cat", "limits": {**FAST_LIMITS, "concurrency": 4}, "items": items}
        self.path.write_text(yaml.safe_dump(data, sort_keys=False))

    def argv(self, *flags: str) -> list[str]:
        return ["run", str(self.path), "--base-url", self.sim.base_url, "--output", self.url, *flags]

    def run(self, *flags: str, work: Path | None = None, quiet: bool = True) -> int:
        return main([*self.argv(*flags), "--work-dir", str(work or self.work), *(["-q"] if quiet else [])])

    def held(self) -> dict[str, int]:
        return {k.removeprefix("night/cat/"): v for k, v in self.s3.keys(self.bucket).items()}

    def object(self, key: str) -> bytes:
        return self.s3.get(self.bucket, f"night/cat/{key}")

    def journal_ids(self) -> list[str]:
        lines = [orjson.loads(line) for line in self.object("journal.jsonl").splitlines()]
        return sorted(line["id"] for line in lines if line.get("type") == "item")


def test_a_job_to_a_bucket_lands_there_whole(tmp_path: Path, sim: Simulator, s3: S3) -> None:
    job = Job(tmp_path, sim, s3)
    assert job.run() == 0
    keys = job.held()
    for k in range(4):
        assert f"images/i{k}.png" in keys
        assert f"images/i{k}.json" in keys
    assert {"journal.jsonl", "report.json", "report.html"} <= set(keys)
    assert {f"thumbs/i{k}.webp" for k in range(4)} <= set(
        keys
    )  # the gallery's previews, before the spool lets go
    assert ".lock" not in keys  # released
    report = orjson.loads(job.object("report.json"))
    assert report["status"] == "completed"
    assert report["counts"]["succeeded"] == 4
    assert job.journal_ids() == ["i0", "i1", "i2", "i3"]
    assert sim.stats.requests == 4


def test_a_fresh_work_dir_resumes_from_the_bucket_and_sends_nothing(
    tmp_path: Path, sim: Simulator, s3: S3
) -> None:
    job = Job(tmp_path, sim, s3)
    assert job.run() == 0
    assert sim.stats.requests == 4
    records = {k: job.object(f"derived/i{k}.json") for k in range(4)}
    assert job.run(work=tmp_path / "another-pod") == 0
    # What was derived stays on record, not written over by a pod that never held the images.
    assert {k: job.object(f"derived/i{k}.json") for k in range(4)} == records
    assert sim.stats.requests == 4  # the bucket's journal and sizes vouch for every item
    report = orjson.loads(job.object("report.json"))
    assert report["counts"]["skipped"] == 4
    # The thumbnails are in the bucket: nothing to make again, nor to fail for want of the image.
    assert not [item for item in report["items"] if item.get("variant_errors")]
    assert {f"thumbs/i{k}.webp" for k in range(4)} <= set(job.held())
    # Nothing was downloaded to decide: the new spool holds no image.
    assert not list((tmp_path / "another-pod").rglob("*.png"))


def test_an_edited_prompt_regenerates_that_item_alone(tmp_path: Path, sim: Simulator, s3: S3) -> None:
    job = Job(tmp_path, sim, s3)
    assert job.run() == 0
    before = job.object("images/i2.png")
    job.write([{"id": f"i{k}", "prompt": "p edited" if k == 2 else f"p {k}"} for k in range(4)])
    assert job.run(work=tmp_path / "another-pod") == 0
    assert dict(sim.stats.by_prompt) == {"p 0": 1, "p 1": 1, "p 2": 1, "p 3": 1, "p edited": 1}
    assert job.object("history/i2.1.png") == before  # versioned as a redo is: nothing paid for lost
    sidecar = orjson.loads(job.object("images/i2.json"))
    assert sidecar["request"]["prompt"] == "p edited"


def test_an_image_missing_from_the_bucket_is_made_again(tmp_path: Path, sim: Simulator, s3: S3) -> None:
    job = Job(tmp_path, sim, s3)
    assert job.run() == 0
    s3.client().delete_object(Bucket=job.bucket, Key="night/cat/images/i1.png")
    assert job.run(work=tmp_path / "another-pod") == 0
    assert dict(sim.stats.by_prompt) == {"p 0": 1, "p 1": 2, "p 2": 1, "p 3": 1}
    assert "images/i1.png" in job.held()


FAST_STORE = Retries(attempts=2, first_backoff_s=0.01, max_backoff_s=0.02, give_up_s=1.0)


def run_api(
    job: Job,
    work: Path,
    on_event: Callable[[Event], None] = lambda e: None,
    stats: Callable[[spool.Stats], None] | None = None,
    **kw: Any,
) -> jobs.JobOutput:
    """A run through the library, for what the command line does not let a test set."""
    from batchgen import config

    options = jobs.RunOptions(overrides=config.Overrides(base_url=job.sim.base_url))
    bucket = remote.RemoteOutput(job.url, work, retries=FAST_STORE, **kw)
    import os

    return asyncio.run(
        remote.run_manifest(
            validate.load(job.path), options, bucket, os.environ, on_event=on_event, stats=stats
        )
    )


def outage_at_the_first_item(s3: S3) -> Callable[[Event], None]:
    """A run's event hook that stops the S3 server as the first item is finished."""
    stopped: list[str] = []

    def outage(event: Event) -> None:
        if type(event).__name__ == "ItemFinished" and not stopped:
            stopped.append("now")
            s3.stop()

    return outage


def test_the_store_failing_mid_run_loses_nothing_and_pays_for_nothing_twice(
    tmp_path: Path, sim: Simulator, s3: S3, caplog: pytest.LogCaptureFixture
) -> None:
    job = Job(tmp_path, sim, s3, n=6)
    try:
        output = run_api(job, job.work, outage_at_the_first_item(s3))
    finally:
        s3.restart()
    assert output.report.status.value == "partial"
    assert sim.stats.requests == 6
    assert "wait in" in caplog.text
    assert "run again to upload them" in caplog.text
    assert SECRET not in caplog.text
    held = job.held()
    assert ".lock" in held  # it could not be released: the store was down
    assert sum(k.endswith(".png") for k in held) < 6  # the outage kept some in the spool
    if "journal.jsonl" in held:  # it lists only items whose files made it
        assert all(f"images/{i}.png" in held for i in job.journal_ids())
    # The next run from the same work dir takes its own lock back, uploads what waits, sends nothing.
    assert job.run() == 0
    assert sim.stats.requests == 6
    held = job.held()
    assert all(f"images/i{k}.png" in held and f"images/i{k}.json" in held for k in range(6))
    assert job.journal_ids() == [f"i{k}" for k in range(6)]


def hold_lock(job: Job, token: str, lease_s: float) -> None:
    """Another run's lock on the job's folder, as a pod that died would leave it."""
    import os

    from batchgen import config
    from batchgen.output.bucket import Bucket, Location
    from batchgen.output.lease import BucketLock

    bucket = Bucket(Location.parse(job.url).child("cat"), config.storage(os.environ))
    asyncio.run(BucketLock(bucket, token, lease_s).acquire())


def test_a_second_run_into_the_same_prefix_is_refused_while_the_lock_lives(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3)
    hold_lock(job, "another-pod", lease_s=600)
    assert job.run() == 3
    err = capsys.readouterr().err
    assert "in use by another batchgen run" in err
    assert "lease runs out in" in err
    assert sim.stats.requests == 0
    assert "images/i0.png" not in job.held()


def test_a_dead_runs_lock_is_taken_over_once_its_lease_ran_out(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3)
    hold_lock(job, "a-pod-that-died", lease_s=0.001)
    assert job.run(quiet=False) == 0
    assert "taking over a lock whose lease ran out" in capsys.readouterr().err
    assert sim.stats.requests == 4
    assert ".lock" not in job.held()


def test_a_key_the_store_refuses_stops_the_run_before_anything_is_sent(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    from moto.core.authorization import enable_iam_authentication

    job = Job(tmp_path, sim, s3)
    with enable_iam_authentication():  # from here moto checks keys, and knows none
        code = job.run()
    err = capsys.readouterr().err
    assert code == 3
    assert "access refused" in err
    assert "check the credentials" in err
    assert len(err.strip().splitlines()) == 1
    assert SECRET not in err
    assert KEY_ID not in err
    assert sim.stats.requests == 0


def test_an_unknown_bucket_stops_the_run_before_anything_is_sent(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3)
    job.url = "s3://no-such-bucket-here/night"
    assert job.run() == 3
    err = capsys.readouterr().err
    assert "s3://no-such-bucket-here/night/cat" in err
    assert "the bucket does not exist" in err
    assert sim.stats.requests == 0


def test_shards_into_one_prefix_merge_in_the_bucket(tmp_path: Path, sim: Simulator, s3: S3) -> None:
    job = Job(tmp_path, sim, s3, n=6)
    assert job.run("--shard", "1/2", work=tmp_path / "pod-1") == 0
    assert job.run("--shard", "2/2", work=tmp_path / "pod-2") == 0
    held = job.held()
    assert {k.split("/")[0] for k in held if k.endswith(".png")} == {"shard-1-of-2", "shard-2-of-2"}
    assert main(["merge", f"{job.url}/cat", "--output", job.url, "-q"]) == 0
    held = job.held()
    assert all(f"images/i{k}.png" in held and f"images/i{k}.json" in held for k in range(6))
    report = orjson.loads(job.object("report.json"))
    assert report["counts"]["succeeded"] == 6
    assert report["status"] == "completed"
    assert job.journal_ids() == [f"i{k}" for k in range(6)]
    assert b"i5" in job.object("report.html")
    assert sim.stats.requests == 6


def test_report_rebuilds_the_gallery_of_a_bucket_folder(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3)
    assert job.run() == 0
    s3.client().delete_object(Bucket=job.bucket, Key="night/cat/report.html")
    assert main(["report", f"{job.url}/cat"]) == 0
    assert f"{job.url}/cat/report.json" in capsys.readouterr().out
    page = job.object("report.html")
    assert all(f"i{k}".encode() in page for k in range(4))


def test_storage_requests_go_through_the_proxy_the_environment_names(
    tmp_path: Path, sim: Simulator, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = Job(tmp_path, sim, s3, n=2)
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)  # the relay's requests may pass through it too
        code = job.run()
        monkeypatch.delenv("HTTP_PROXY")  # the test's own look at the bucket goes straight
    assert code == 0
    assert any(
        line.startswith(f"PUT {s3.endpoint}/{job.bucket}/night/cat/images/i0.png") for line in proxy.seen
    )
    assert "images/i1.png" in job.held()


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [
        ("s3://b/night", "b", "night"),
        ("s3://b/a/b/", "b", "a/b"),
        ("gs://b", "b", ""),
        ("az://container/x//y", "container", "x/y"),
    ],
)
def test_a_bucket_url_is_read_into_bucket_and_prefix(text: str, bucket: str, prefix: str) -> None:
    from batchgen.output.bucket import Location

    found = Location.parse(text)
    assert (found.bucket, found.prefix) == (bucket, prefix)
    assert str(found.child("job", "shard-1-of-2")) == f"{text.split('://')[0]}://{bucket}/" + "/".join(
        p for p in (prefix, "job", "shard-1-of-2") if p
    )


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--output", "s3://"], "expected s3://bucket/prefix"),
        (["--output", "s3://key:secret@b/p"], "credentials come from the environment"),
        (["--output", "s3://b/../p"], "no . or .."),
        (["--lock-lease", "0"], "above 0"),
    ],
)
def test_bad_bucket_flags_are_usage_errors(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["run", str(tmp_path / "x.yaml"), *argv])
    assert stopped.value.code == 2
    assert fragment in capsys.readouterr().err


def test_the_storage_environment_is_read_in_either_case() -> None:
    from batchgen import config

    found = config.storage(
        {
            "https_proxy": "http://p:3128",
            "NO_PROXY": "10.0.0.0/8",
            "AWS_ENDPOINT_URL": "http://s3.lan",
            "AWS_ALLOW_HTTP": "true",
            "HOME": "/home/u",
        }
    )
    assert found.https_proxy == "http://p:3128"
    assert found.proxy_for("https://s3.amazonaws.com") == "http://p:3128"
    assert found.proxy_for("http://s3.lan") is None
    assert found.no_proxy == "10.0.0.0/8"
    assert found.allow_http
    assert found.work_dir == Path("/home/u/.cache/batchgen/spool")
    assert config.storage({"BATCHGEN_WORK_DIR": "/w"}, Path("/given")).work_dir == Path("/given")
    assert config.storage({"BATCHGEN_WORK_DIR": "/w", "XDG_CACHE_HOME": "/c"}).work_dir == Path("/w")
    assert config.storage({"XDG_CACHE_HOME": "/c"}).work_dir == Path("/c/batchgen/spool")


def test_a_plain_http_endpoint_to_another_host_is_refused_unless_allowed(
    tmp_path: Path,
    sim: Simulator,
    s3: S3,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = Job(tmp_path, sim, s3)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3.example.invalid:9000")
    assert job.run() == 2
    assert "AWS_ALLOW_HTTP" in capsys.readouterr().err
    assert sim.stats.requests == 0


DOCS = Path(__file__).resolve().parent.parent


def _documented_commands() -> list[list[str]]:
    import re
    import shlex

    readme = (DOCS / "README.md").read_text()
    section = readme.split("## Many machines, one bucket", 1)[1].split("\n## ", 1)[0]
    found = []
    for text in (section, (DOCS / "docs/storage.md").read_text()):
        for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
            found += [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("batchgen ")]
    return found


@pytest.mark.parametrize("argv", _documented_commands(), ids=lambda argv: " ".join(argv[:2]))
def test_the_storage_docs_command_lines_parse(argv: list[str]) -> None:
    from batchgen.cli.arguments import parser

    args = parser().parse_args(argv)  # exits (fails the test) on an unknown flag or a bad value
    assert args.command in ("run", "merge", "report", "redo")


def test_the_readme_section_links_the_storage_page_and_its_links_exist() -> None:
    import re

    readme = (DOCS / "README.md").read_text()
    section = readme.split("## Many machines, one bucket", 1)[1].split("\n## ", 1)[0]
    assert "(docs/storage.md)" in section
    page = (DOCS / "docs/storage.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", section + page):
        if not target.startswith("http"):
            assert (DOCS / target).exists() or (DOCS / "docs" / target).exists(), target
    for path in re.findall(r"`(jobs/deploy/[^`]+)`", section + page):
        assert (DOCS / path).is_file(), path


def test_a_running_job_renews_its_lock_so_no_one_takes_it_over(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], s3: S3
) -> None:
    import threading

    from batchgen.errors import JobLockedError

    slow = threaded_simulator(latency_ms=150)
    job = Job(tmp_path, slow, s3, n=4)
    tries: list[str] = []

    def another_run(event: Event) -> None:
        # Well after the 0.2 s lease would have run out, had it not been renewed.
        if type(event).__name__ != "ItemFinished" or len(tries) == 2:
            return
        if event.outcome.index < 2:  # type: ignore[union-attr]
            return

        def attempt() -> None:
            try:
                hold_lock(job, "another-pod", lease_s=60)
                tries.append("took it")
            except JobLockedError:
                tries.append("refused")

        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join()

    from batchgen import config

    options = jobs.RunOptions(overrides=config.Overrides(base_url=slow.base_url, limits={"concurrency": 1}))
    import os

    output = asyncio.run(
        remote.run_manifest(
            validate.load(job.path),
            options,
            remote.RemoteOutput(job.url, job.work, lease_s=0.2),
            os.environ,
            on_event=another_run,
        )
    )
    assert output.report.status.value == "completed"
    assert tries == ["refused", "refused"]


def test_the_buckets_journal_lists_only_items_whose_files_are_all_there(tmp_path: Path) -> None:
    from batchgen.outcomes import ItemStatus
    from batchgen.output.journal import Entry, JournalFile
    from batchgen.output.spool import Ledger, Mirror

    def line(item: str, *files: tuple[str, int]) -> bytes:
        entry = Entry(
            item, ItemStatus.SUCCEEDED, "f", "p", 1, tuple(JournalFile(f, "h", n) for f, n in files)
        )
        return orjson.dumps(entry.to_json(0.0))

    header = b'{"type":"run","manifest":"m"}'
    lines = [
        header,
        line("a", ("images/a.png", 10)),
        line("b", ("images/b.png", 20)),
        line("c", ("images/c.png", 5)),
    ]
    (tmp_path / "journal.jsonl").write_bytes(b"".join(x + b"\n" for x in lines) + b'{"type":"item","id":"cut')
    for name, size in (("a", 10), ("b", 20)):
        (tmp_path / f"images/{name}.png").parent.mkdir(exist_ok=True)
        (tmp_path / f"images/{name}.png").write_bytes(b"x" * size)
    mirror = Mirror({"images/a.png": 10, "images/c.png": 4}, [])  # c: in the bucket, cut short
    ledger = Ledger(tmp_path, mirror, set())
    assert sorted(ledger.read()) == ["images/b.png", "images/c.png"]  # what the bucket lacks
    assert ledger.body() == header + b"\n" + lines[1] + b"\n"
    mirror.sizes["images/b.png"] = 20  # uploaded since
    assert ledger.body() == b"".join(x + b"\n" for x in lines[:3])


@pytest.mark.parametrize(
    ("url", "kind", "setting", "prefix"),
    [
        ("gs://bkt/night", "GCSStore", ("bucket", "bkt"), "night/cat"),
        ("az://container/night", "AzureStore", ("container_name", "container"), "night/cat"),
        ("s3://bkt/night", "S3Store", ("bucket", "bkt"), "night/cat"),
    ],
)
def test_each_cloud_url_opens_its_own_store_at_the_jobs_folder(
    url: str, kind: str, setting: tuple[str, str], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchgen import config
    from batchgen.output.bucket import Bucket, Location

    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "account")
    bucket = Bucket(Location.parse(url).child("cat"), config.storage({}))
    store = bucket._store  # opened, not used: no request leaves the machine
    assert type(store).__name__ == kind
    assert store.config[setting[0]] == setting[1]  # type: ignore[union-attr]
    assert store.prefix == prefix


def test_retry_of_a_bucket_job_resends_its_failures_alone(tmp_path: Path, sim: Simulator, s3: S3) -> None:
    job = Job(tmp_path, sim, s3)
    job.write([{"id": "ok", "prompt": "fine"}, {"id": "flaky", "prompt": "[sim:502*4] down for a while"}])
    assert job.run() == 1  # every attempt at "flaky" failed
    # From another machine's empty work dir: the manifest is found where the journal says.
    other = tmp_path / "another-pod"
    assert main(["retry", f"{job.url}/cat", "--base-url", sim.base_url, "--work-dir", str(other), "-q"]) == 0
    assert any(other.iterdir())  # its spool, not this work dir's
    assert dict(sim.stats.by_prompt) == {"fine": 1, "[sim:502*4] down for a while": 5}
    report = orjson.loads(job.object("report.json"))
    assert report["status"] == "completed"
    assert "images/flaky.png" in job.held()


def test_a_run_that_lost_its_lock_leaves_the_buckets_journal_to_the_new_holder(
    tmp_path: Path, s3: S3
) -> None:
    import os

    from batchgen import config
    from batchgen.output.bucket import Bucket, Location

    name = s3.make_bucket()
    bucket = Bucket(Location.parse(f"s3://{name}/night/cat"), config.storage(os.environ))
    (tmp_path / "journal.jsonl").write_bytes(b'{"type":"run","manifest":"m"}\n')
    (tmp_path / "report.json").write_bytes(b"{}")

    async def finish(ours: bool) -> int:
        mirror = spool.Mirror({}, [])
        async with spool.Uploader(bucket, tmp_path, mirror, still_ours=lambda: ours) as uploader:
            return await uploader.finish()

    assert asyncio.run(finish(ours=False)) == 1  # the journal waits
    assert "night/cat/journal.jsonl" not in s3.keys(name)
    assert "night/cat/report.json" in s3.keys(name)
    assert asyncio.run(finish(ours=True)) == 0
    assert "night/cat/journal.jsonl" in s3.keys(name)


def test_a_second_run_from_the_same_work_dir_is_refused_before_it_touches_the_bucket(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from batchgen.output.lock import JobLock

    job = Job(tmp_path, sim, s3)
    where = remote.locate(remote.RemoteOutput(job.url, job.work), "cat", None, os.environ)
    (where.spool / ".bucket").mkdir(parents=True)
    with JobLock(where.spool / ".bucket"):  # as the first run holds it
        assert job.run() == 3
    assert "in use by another batchgen run" in capsys.readouterr().err
    assert job.held() == {}  # not even a lock object: the first run's would have been taken
    assert sim.stats.requests == 0


def chain(edited: str = "") -> list[dict[str, Any]]:
    """Two chains, each a root and an item made from the root's image; ``edited`` in back's prompt."""
    return [
        {"id": "hero", "prompt": "hero photo"},
        {"id": "back", "prompt": f"back view{edited}", "references": ["@hero"]},
        {"id": "other", "prompt": "other photo"},
        {"id": "side", "prompt": "side view", "references": ["@other"]},
    ]


def sent_reference(sim: Simulator, prompt: str) -> bytes:
    import pybase64

    bodies = [b for b in sim.stats.bodies if b["prompt"] == prompt]
    assert len(bodies) == 1
    (uri,) = bodies[0]["extra_fields"]["reference_images"]
    return pybase64.b64decode(uri.partition(",")[2])


@pytest.mark.parametrize("pod", ["another-pod", "work"])
def test_a_dependent_of_an_earlier_runs_parent_is_sent_with_the_parents_image_from_the_bucket(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], s3: S3, pod: str
) -> None:
    sim = threaded_simulator(record_bodies=True)
    job = Job(tmp_path, sim, s3)
    job.write(chain())
    assert job.run() == 0
    hero = job.object("images/hero.png")
    job.write(chain(edited=", edited"))
    # A fresh pod's spool has no image; the first run's own spool let go of them as it ended.
    assert job.run(work=tmp_path / pod) == 0
    assert sim.stats.requests == 5
    assert sent_reference(sim, "back view, edited") == hero
    report = orjson.loads(job.object("report.json"))
    assert report["counts"]["succeeded"] == 1
    assert not list((tmp_path / pod).rglob("*.png"))  # and the spool lets go of it again


def test_only_the_parents_of_what_is_sent_are_brought_down_and_never_sent_up_again(
    tmp_path: Path, sim: Simulator, s3: S3
) -> None:
    job = Job(tmp_path, sim, s3)
    job.write(chain())
    assert job.run() == 0
    job.write(chain(edited=", edited"))
    seen: list[spool.Stats] = []
    output = run_api(job, tmp_path / "another-pod", stats=seen.append)
    assert output.report.status.value == "completed"
    assert [s.brought for s in seen] == [["images/hero.png"]]
    assert seen[0].uploaded_under[paths.IMAGES] == 2  # back's image and sidecar; hero's is there


def test_a_parent_changed_in_the_bucket_is_never_sent_in_its_place(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3)
    job.write(chain())
    assert job.run() == 0
    hero = bytearray(job.object("images/hero.png"))
    hero[-20] ^= 0xFF  # the same size: the listing still vouches for it
    s3.client().put_object(Bucket=job.bucket, Key="night/cat/images/hero.png", Body=bytes(hero))
    job.write(chain(edited=", edited"))
    capsys.readouterr()
    assert job.run(work=tmp_path / "another-pod", quiet=False) == 1
    assert sim.stats.requests == 4
    assert "images/hero.png: not the file its record names (its sha256)" in capsys.readouterr().err
    lines = [orjson.loads(line) for line in job.object("journal.jsonl").splitlines()]
    failed = [line["class"] for line in lines if line.get("id") == "back" and line["status"] == "failed"]
    assert failed == ["reference_error"]


@pytest.mark.parametrize("sharded", [False, True])
def test_the_relay_limit_a_run_learned_travels_with_the_job_in_the_bucket(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], s3: S3, sharded: bool
) -> None:
    def relay() -> Simulator:  # new-api's limit: 4 requests per 250 ms, stated by its 429
        return threaded_simulator(rate_limit=4, rate_window_ms=250.0, latency_ms=5)

    job = Job(tmp_path, relay(), s3, n=8)
    # max_attempts 1: a throttled request charged as an attempt would fail its item.
    items = [{"id": f"i{k}", "prompt": f"p {k}"} for k in range(8)]
    data = {"job": "cat", "limits": {**FAST_LIMITS, "concurrency": 4, "max_attempts": 1}, "items": items}
    job.path.write_text(yaml.safe_dump(data, sort_keys=False))
    first, then = (["--shard", "1/2"], ["--shard", "2/2"]) if sharded else ([], ["--force"])
    assert job.run(*first) == 0
    assert job.sim.stats.throttled >= 1
    learned = orjson.loads(job.object("relay-limit.json"))  # the job's folder: every shard's
    assert (learned["requests"], learned["window_s"]) == (4, pytest.approx(0.25))
    job.sim = tomorrow = relay()
    assert job.run(*then, work=tmp_path / "another-pod") == 0
    assert tomorrow.stats.throttled == 0
    folder = "shard-2-of-2/" if sharded else ""
    report = orjson.loads(job.object(f"{folder}report.json"))
    assert report["relay_limit"]["source"] == "remembered"


def test_a_bucket_runs_messages_name_the_bucket_not_its_spool(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = threaded_simulator(dropped_fields=("image_size",))  # 2K asked, Gemini's 1K sent
    job = Job(tmp_path, sim, s3)
    wide = {"id": "wide", "prompt": "a wide tote", "image_size": "2K", "aspect_ratio": "16:9"}
    job.write([wide])
    assert job.run(quiet=False) == 0
    err = capsys.readouterr().err
    assert f"`batchgen redo {job.url}/cat --flag size_mismatch` makes it again" in err
    job.write([wide, {"id": "broke", "prompt": "[sim:quota] out of credit"}])
    assert job.run(quiet=False) == 3
    said = "".join(capsys.readouterr())
    assert f"then run `batchgen retry {job.url}/cat`" in said
    assert str(tmp_path / "work") not in said


def test_merge_into_a_bucket_takes_the_merged_folders_lock(
    tmp_path: Path, sim: Simulator, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Job(tmp_path, sim, s3, n=2)
    assert job.run("--shard", "1/2", work=tmp_path / "pod-1") == 0
    assert job.run("--shard", "2/2", work=tmp_path / "pod-2") == 0
    hold_lock(job, "a-run-into-the-merged-folder", lease_s=60)
    capsys.readouterr()
    assert main(["merge", f"{job.url}/cat", "--output", job.url, "-q"]) == 3
    assert "is in use by another batchgen run" in capsys.readouterr().err
    assert not [k for k in job.held() if "/" not in k and k != ".lock"]  # nothing merged into it
    assert not [k for k in job.held() if k.startswith("images/")]
    s3.client().delete_object(Bucket=job.bucket, Key="night/cat/.lock")  # that run ended
    assert main(["merge", f"{job.url}/cat", "--output", job.url, "-q"]) == 0
    assert ".lock" not in job.held()  # released
    assert "report.json" in job.held()


def test_a_fresh_work_dir_derives_again_what_a_changed_variant_spec_asks_for(
    tmp_path: Path, sim: Simulator, s3: S3
) -> None:
    job = Job(tmp_path, sim, s3, n=2)

    def write(width: int) -> None:
        items = [{"id": f"i{k}", "prompt": f"p {k}"} for k in range(2)]
        data = {
            "job": "cat",
            "limits": {**FAST_LIMITS, "concurrency": 4},
            "variants": {"web": {"width": width, "format": "png"}},
            "items": items,
        }
        job.path.write_text(yaml.safe_dump(data, sort_keys=False))

    write(48)
    assert job.run() == 0
    seen: list[spool.Stats] = []
    assert run_api(job, tmp_path / "pod-2", stats=seen.append).report.status.value == "completed"
    assert seen[0].brought == []  # nothing changed: no original comes down
    thumbs = {k: job.object(f"thumbs/i{k}.webp") for k in range(2)}
    write(24)
    assert run_api(job, tmp_path / "pod-3", stats=seen.append).report.status.value == "completed"
    # The originals, and the thumbnails that stay as they are: not made again, nor uploaded again.
    assert sorted(seen[1].brought) == ["images/i0.png", "images/i1.png", "thumbs/i0.webp", "thumbs/i1.webp"]
    assert (seen[1].uploaded_under["variants"], seen[1].uploaded_under["thumbs"]) == (2, 0)
    assert sim.stats.requests == 2  # derived again from what was paid for, never sent
    from PIL import Image

    for k in range(2):
        with Image.open(io.BytesIO(job.object(f"variants/web/i{k}.png"))) as made:
            assert made.width == 24
        assert job.object(f"thumbs/i{k}.webp") == thumbs[k]
    records = [orjson.loads(job.object(f"derived/i{k}.json")) for k in range(2)]
    assert all(r["images"][f"images/i{k}.png"]["web"]["bytes"] for k, r in enumerate(records))


def test_the_relay_limit_learned_last_wins_between_the_bucket_and_the_spool(
    tmp_path: Path, sim: Simulator, s3: S3
) -> None:
    import os

    from batchgen.errors import RelayLimit
    from batchgen.output import relaylimit

    job = Job(tmp_path, sim, s3, n=1)
    s3.client().put_object(
        Bucket=job.bucket,
        Key="night/cat/relay-limit.json",
        Body=orjson.dumps(
            {"format": 1, "requests": 6, "window_s": 60.0, "learned_at": "2026-06-01T00:00:00Z"}
        ),
    )

    def spool_job(work: Path) -> Path:
        return remote.locate(remote.RemoteOutput(job.url, work), "cat", None, os.environ).job

    # A work dir that learned one before the bucket's: the bucket's is the one it starts at.
    relaylimit.remember(spool_job(tmp_path / "old"), RelayLimit(3, 60.0), 0.0)
    assert run_api(job, tmp_path / "old").report.relay_limit.requests == 6  # type: ignore[union-attr]
    # One that learned one since (its upload failed, say): its own, and the bucket gets it.
    relaylimit.remember(spool_job(tmp_path / "new"), RelayLimit(2, 60.0), 1.9e9)
    output = run_api(job, tmp_path / "new")
    assert output.report.relay_limit.requests == 2  # type: ignore[union-attr]
    assert orjson.loads(job.object("relay-limit.json"))["requests"] == 2
