"""One item's path (engine/item.py) across runs of one job folder, journaled as batchgen runs it:
links an earlier run paid for, images made again, what a halt or a budget leaves, what the log
and the stop reasons say. A fake client and a clock that does not wait: milliseconds each."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgen.engine.guards import Guards
from batchgen.engine.item import idempotency_key, when
from batchgen.engine.retry import RetryPolicy
from batchgen.engine.runner import JobRun, Runner
from batchgen.errors import ErrorClass, RateHeaders, RelayLimit, RequestError
from batchgen.images import PNG, GeneratedImage
from batchgen.manifest.references import ItemReference, LocalReference, ReferenceLoader
from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import Flag, ItemRetrying, ItemStatus
from batchgen.output.journal import Entry, Journal
from batchgen.output.journal import read as read_journal
from batchgen.output.store import JobStore
from batchgen.plan.plan import plan_item
from batchgen.plan.pricing import PriceTable
from batchgen.plan.resume import Mode
from batchgen.plan.triage import Triage, decided, parents_of
from batchgen.service.client import Generation, Room, no_wait

from .conftest import png_bytes
from .fakes import LINKS, OK, FakeClient, error, make_spec

LINK = "https://cdn.test/p/0.png"
DEAD = error(ErrorClass.DOWNLOAD_FAILED, http_status=404, should_retry=True)
PRICE = 0.039  # nano-banana-2 at 1K, shipped prices


class Ticking:
    """A clock that moves a second each time it is read, and sleeps that take no time."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        self.now += 1.0
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Job:
    """One job folder, run again and again through the runner with one fake client."""

    def __init__(self, tmp_path: Path, client: Any, **runner: Any) -> None:
        self.root = tmp_path / "out" / "job"
        self.client = client
        self.runner = runner
        self.time = Ticking()

    def entry(self, item_id: str) -> Entry:
        return read_journal(self.root).entries[item_id]

    def sidecar(self, item_id: str) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads((self.root / "images" / f"{item_id}.json").read_bytes())
        return data

    def make(self, mode: Mode = Mode.RUN, **override: Any) -> Runner:
        store = JobStore(self.root)
        store.prepare()
        book = Journal(self.root)
        book.open()
        settings: dict[str, Any] = {
            "job": "job",
            "client": self.client,
            "store": store,
            "policy": RetryPolicy.from_limits(),
            "references": ReferenceLoader(20_000_000),
            "concurrency": 1,
            "sleep": self.time.sleep,
            "clock": self.time.clock,
            "journal": book,
            "mode": mode,
            "guards": Guards.from_limits(),
        }
        return Runner(**{**settings, **self.runner, **override})

    async def run(self, specs: list[ItemSpec], mode: Mode = Mode.RUN, **override: Any) -> JobRun:
        return await self.go(self.make(mode, **override), specs)

    async def go(self, r: Runner, specs: list[ItemSpec]) -> JobRun:
        planner = partial(plan_item, reference_field="reference_images", prices=PriceTable.default())
        previous = read_journal(self.root).entries
        triage = Triage(planner, previous, r.store, r.references, r.mode, parents=parents_of(specs))
        try:
            return await asyncio.wait_for(r.run(specs, decided(triage, specs), triage), timeout=10)
        finally:
            assert r.journal is not None
            r.journal.close()


async def test_a_success_journals_its_prompt_and_each_images_pixels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = Job(tmp_path, FakeClient())
    with caplog.at_level(logging.WARNING, logger="batchgen.engine.item"):
        (outcome,) = (await job.run([make_spec(0, "a", "p", n=2)])).outcomes
    assert (outcome.status, outcome.prompt) == (ItemStatus.SUCCEEDED, "p")
    entry = job.entry("a")
    assert entry.prompt == "p"
    assert [(f.width, f.height) for f in entry.files] == [(8, 8), (8, 8)]  # tests' PNGs are 8x8
    assert not [m for m in caplog.messages if "images, the service sent" in m]  # as many as asked


async def test_fewer_images_than_asked_are_kept_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = Job(tmp_path, FakeClient(images_per_call=1))
    with caplog.at_level(logging.WARNING, logger="batchgen.engine.item"):
        (outcome,) = (await job.run([make_spec(0, "a", "p", n=2)])).outcomes
    assert outcome.status is ItemStatus.SUCCEEDED
    assert len(job.entry("a").files) == 1
    assert "a: asked for 2 images, the service sent 1" in caplog.messages


async def test_each_request_carries_the_key_of_its_item_and_request_and_a_failure_journals_it(
    tmp_path: Path,
) -> None:
    refused = error(ErrorClass.SAFETY_FILTER, http_status=400)
    job = Job(tmp_path, FakeClient({"q": [refused]}))
    await job.run([make_spec(0, "a", "p"), make_spec(1, "b", "q")])
    keys = {prompt: key for prompt, _, key in job.client.calls}
    for item_id, prompt in (("a", "p"), ("b", "q")):
        assert keys[prompt] == idempotency_key("job", item_id, job.entry(item_id).fingerprint)
    assert job.entry("b").status is ItemStatus.FAILED


async def test_a_sidecar_says_when_the_service_made_it_and_how_long_it_took(tmp_path: Path) -> None:
    job = Job(tmp_path, FakeClient())
    job.time.now = 1_000_000.0  # a clock far from 0: a sum of two readings is no duration
    await job.run([make_spec(0, "a", "p")])
    sidecar = job.sidecar("a")
    assert sidecar["created"] == 123  # the fake service's
    assert 0 < sidecar["latency_s"] < 10  # a few ticks of the clock


async def test_an_item_that_failed_cleanly_spends_nothing(tmp_path: Path) -> None:
    refused = error(ErrorClass.SAFETY_FILTER, http_status=400)
    job = Job(tmp_path, FakeClient({"p": [refused]}))
    r = job.make()
    await job.go(r, [make_spec(0, "a", "p")])
    assert (r.guards.spent, r.guards.reserved) == (0.0, 0.0)


async def test_a_429_whose_headers_say_none_is_left_waits_for_the_reset_and_is_no_attempt(
    tmp_path: Path,
) -> None:
    throttled = error(ErrorClass.RATE_LIMITED, http_status=429, rate_headers=RateHeaders(None, 0, 30.0))
    job = Job(tmp_path, FakeClient({"p": [throttled, OK]}))
    (outcome,) = (await job.run([make_spec(0, "a", "p")])).outcomes
    assert (outcome.status, outcome.attempts) == (ItemStatus.SUCCEEDED, 1)
    assert job.client.calls_for("p") == 2
    assert job.time.now >= 30  # the headers' reset, waited for before it was sent again


class TestPaidForEarlier:
    """An image an earlier run made and paid for, whose link failed then."""

    async def paid(self, tmp_path: Path, later: list[Any]) -> Job:
        """A first run: two attempts (one 500), the image answered as a dead link."""
        client = FakeClient(
            {"p": [error(ErrorClass.SERVER_ERROR), LINKS]}, link_scripts={LINK: [DEAD] * 3 + later}
        )
        job = Job(tmp_path, client)
        (first,) = (await job.run([make_spec(0, "a", "p")])).outcomes
        assert first.failure is not None
        assert first.failure.links == (LINK,)
        assert first.failure.http_status == 404  # the link's own answer
        assert first.failure.message.endswith(
            "; the image was generated (and billed) but not fetched:"
            " its link is kept, and a re-run or `batchgen retry` fetches it again"
        )
        return job

    async def test_is_fetched_not_made_again(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        job = await self.paid(tmp_path, [OK])
        before = job.entry("a")
        with caplog.at_level(logging.INFO):
            (outcome,) = (await job.run([make_spec(0, "a", "p")])).outcomes
        assert job.client.calls_for("p") == 2  # the first run's two attempts, nothing since
        assert job.client.downloads == [LINK] * 4
        assert (outcome.status, outcome.attempts, outcome.requests_sent) == (ItemStatus.SUCCEEDED, 2, 0)
        assert outcome.estimated_cost == 0.0  # billed by the run that made it
        after = job.entry("a")
        assert (after.status, after.fingerprint, after.attempts) == (
            ItemStatus.SUCCEEDED,
            before.fingerprint,
            2,
        )
        assert after.estimated_cost == 0.0
        sidecar = job.sidecar("a")
        assert (sidecar["created"], sidecar["attempts"], sidecar["latency_s"]) == (None, 2, 1.0)
        assert "a: fetched the image an earlier run paid for" in caplog.messages

    async def test_still_dead_fails_again_as_it_did(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        job = await self.paid(tmp_path, [DEAD])
        before = job.entry("a")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="batchgen.engine.item"):
            (outcome,) = (await job.run([make_spec(0, "a", "p")])).outcomes
        assert caplog.messages.count("a: fetching its image failed (simulated download_failed)") == 3
        assert job.client.calls_for("p") == 2
        assert (outcome.status, outcome.attempts, outcome.requests_sent) == (ItemStatus.FAILED, 2, 0)
        after = job.entry("a")
        assert (after.fingerprint, after.prompt, after.links, after.attempts) == (
            before.fingerprint,
            "p",
            (LINK,),
            2,
        )
        assert after.estimated_cost == 0.0  # this run paid nothing

    async def test_with_all_failed_a_dead_link_is_made_again(self, tmp_path: Path) -> None:
        job = await self.paid(tmp_path, [DEAD])
        job.client.scripts = {"p": [error(ErrorClass.SERVER_ERROR), LINKS, OK]}
        (outcome,) = (await job.run([make_spec(0, "a", "p")], Mode.ALL_FAILED)).outcomes
        assert job.client.calls_for("p") == 3
        assert (outcome.status, outcome.attempts, outcome.estimated_cost) == (ItemStatus.SUCCEEDED, 1, PRICE)

    async def test_a_full_disk_leaves_it_pending(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        job = await self.paid(tmp_path, [OK])
        monkeypatch.setattr(JobStore, "write_images", _disk_full)
        result = await job.run([make_spec(0, "a", "p")])
        assert [o.status for o in result.outcomes] == [ItemStatus.PENDING]
        assert result.aborted is not None
        assert result.aborted.startswith("cannot write the output:")
        assert job.entry("a").status is ItemStatus.FAILED  # its links are still there to fetch


def _disk_full(*args: Any, **kwargs: Any) -> Any:
    from batchgen.errors import StoreError

    raise StoreError("No space left on device")


class TestMadeAgain:
    """An item that has an image, made again (--force): the old one is kept, or stays."""

    async def test_the_new_image_is_a_new_version_under_a_new_key(self, tmp_path: Path) -> None:
        job = Job(tmp_path, FakeClient())
        await job.run([make_spec(0, "a", "p")])
        (outcome,) = (await job.run([make_spec(0, "a", "p")], Mode.FORCE)).outcomes
        assert (outcome.status, outcome.version) == (ItemStatus.SUCCEEDED, 2)
        assert job.entry("a").version == 2
        assert sorted(p.name for p in (job.root / "history").iterdir()) == ["a.1.json", "a.1.png"]
        first_key, second_key = (key for _, _, key in job.client.calls)
        assert first_key != second_key

    @pytest.mark.parametrize(
        ("answer", "cost"),
        [(error(ErrorClass.SAFETY_FILTER), 0.0), (LINKS, PRICE)],
        ids=["refused", "dead link"],
    )
    async def test_one_that_fails_keeps_the_earlier_image(
        self, tmp_path: Path, answer: Any, cost: float
    ) -> None:
        job = Job(tmp_path, FakeClient({"p": [OK, answer]}, link_scripts={LINK: [DEAD]}))
        await job.run([make_spec(0, "a", "p")])
        made = job.entry("a")
        (outcome,) = (await job.run([make_spec(0, "a", "p")], Mode.FORCE)).outcomes
        assert outcome.status is ItemStatus.FAILED
        assert outcome.failure is not None
        assert outcome.failure.message.endswith(" (its earlier image is kept)")
        assert outcome.estimated_cost == cost  # a dead link's image was billed all the same
        assert job.entry("a") == made  # not journaled: no later run forgets the image it has
        assert (job.root / "images" / "a.png").exists()
        assert not (job.root / "history").exists() or not list((job.root / "history").iterdir())


async def test_a_dependent_blocked_by_a_parent_made_again_keeps_its_earlier_image(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = make_spec(1, "c", "c view", references=[ItemReference("p", 1, "@p")])
    job = Job(tmp_path, FakeClient({"p2": [error(ErrorClass.SAFETY_FILTER)]}), concurrency=2)
    await job.run([make_spec(0, "p", "p1"), child])
    made = job.entry("c")
    with caplog.at_level(logging.WARNING, logger="batchgen.engine.item"):
        result = await job.run([make_spec(0, "p", "p2"), child])  # the parent's prompt changed; it fails
    _, blocked = result.outcomes
    assert (blocked.id, blocked.prompt) == ("c", "c view")
    assert "c: not sent: an item it references did not succeed (p failed (safety_filter))" in caplog.messages
    assert blocked.failure is not None
    assert blocked.failure.error_class is ErrorClass.DEPENDENCY_FAILED
    assert blocked.failure.message.endswith(" (its earlier image is kept)")
    assert job.entry("c") == made


async def test_messages_name_the_job_folder_as_the_caller_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    no_credit = error(ErrorClass.QUOTA_EXHAUSTED, http_status=429)
    job = Job(tmp_path, FakeClient({"p": [no_credit]}), folder_name="s3://bucket/job")
    with caplog.at_level(logging.WARNING):
        result = await job.run([make_spec(0, "a", "small", aspect_ratio="16:9"), make_spec(1, "b", "p")])
    assert "`batchgen redo s3://bucket/job --flag size_mismatch`" in caplog.text
    assert result.outcomes[0].flags == (Flag.SIZE_MISMATCH,)
    assert result.aborted is not None
    assert result.aborted.endswith(", then run `batchgen retry s3://bucket/job`")
    assert (
        "the API credit ran out (b: simulated quota_exhausted); top up the account or key" in result.aborted
    )


async def test_an_auth_failure_stops_the_job_naming_the_item_and_the_key(tmp_path: Path) -> None:
    job = Job(tmp_path, FakeClient({"p": [error(ErrorClass.AUTH, http_status=401)]}))
    result = await job.run([make_spec(0, "a", "p")])
    assert result.aborted == "a: simulated auth (check the API key)"


class Stuck:
    """Answers with ``failures`` first, then takes room for an answer and never finishes reading it."""

    def __init__(self, *failures: RequestError) -> None:
        self.failures = list(failures)
        self.reading = asyncio.Event()

    async def generate(
        self, body: Mapping[str, Any], idempotency_key: str, room: Room = no_wait
    ) -> Generation:
        await room()
        if self.failures:
            raise self.failures.pop(0)
        self.reading.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def download(self, url: str) -> GeneratedImage:
        raise AssertionError("no links here")


@pytest.mark.parametrize(
    ("before", "counted"),
    [((), 1), ((error(ErrorClass.TIMEOUT, sent=True),), 2)],
    ids=["first attempt", "after a timed-out one"],
)
async def test_a_halt_mid_request_leaves_it_pending_and_perhaps_billed(
    tmp_path: Path, before: tuple[RequestError, ...], counted: int
) -> None:
    client = Stuck(*before)
    job = Job(tmp_path, client)
    r = job.make()
    task = asyncio.create_task(job.go(r, [make_spec(0, "a", "p"), make_spec(1, "b", "q")]))
    await asyncio.wait_for(client.reading.wait(), timeout=10)
    r.halt()
    cut, unreached = (await task).outcomes
    assert (cut.id, cut.prompt, cut.status) == ("a", "p", ItemStatus.PENDING)
    assert (cut.attempts, cut.requests_sent, cut.unconfirmed) == (counted, counted, counted)
    assert cut.unconfirmed_cost == pytest.approx(counted * PRICE)
    assert (unreached.status, unreached.requests_sent, unreached.unconfirmed) == (ItemStatus.PENDING, 0, 0)


async def test_a_halt_before_a_retry_counts_the_timed_out_attempt_once(tmp_path: Path) -> None:
    job = Job(tmp_path, FakeClient({"p": [error(ErrorClass.TIMEOUT, sent=True)]}))
    r = job.make(sleep=None)
    r.on_event = lambda event: r.halt() if isinstance(event, ItemRetrying) else None
    (outcome,) = (await job.go(r, [make_spec(0, "a", "p")])).outcomes
    assert (outcome.status, outcome.attempts, outcome.requests_sent, outcome.unconfirmed) == (
        ItemStatus.PENDING,
        1,
        1,
        1,
    )


class HeldDisk(ThreadPoolExecutor):
    """I/O threads that hold every file operation until the test lets them go."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.held = threading.Event()
        self.go = threading.Event()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        return super().submit(self._held, fn, *args, **kwargs)

    def _held(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.held.set()
        self.go.wait(timeout=30)
        return fn(*args, **kwargs)


async def test_a_halt_while_its_images_are_written_adds_no_request_to_those_sent(tmp_path: Path) -> None:
    io = HeldDisk()
    job = Job(tmp_path, FakeClient(), io=io)
    r = job.make()
    try:
        task = asyncio.create_task(job.go(r, [make_spec(0, "a", "p")]))
        await asyncio.wait_for(asyncio.to_thread(io.held.wait, 10), timeout=10)
        r.halt()
        (outcome,) = (await task).outcomes
    finally:
        io.go.set()
        io.shutdown()
    assert (outcome.status, outcome.attempts, outcome.requests_sent, outcome.unconfirmed) == (
        ItemStatus.PENDING,
        1,
        1,
        0,
    )


async def test_a_stop_before_a_retry_leaves_an_attempt_that_never_left_unbilled(tmp_path: Path) -> None:
    job = Job(tmp_path, FakeClient({"p": [error(ErrorClass.CONNECTION, sent=False)]}))
    r = job.make(sleep=None)
    r.on_event = lambda event: r.abort("a budget ran out") if isinstance(event, ItemRetrying) else None
    (outcome,) = (await job.go(r, [make_spec(0, "a", "p")])).outcomes
    assert (outcome.status, outcome.attempts, outcome.requests_sent, outcome.unconfirmed) == (
        ItemStatus.PENDING,
        1,
        0,
        0,
    )


async def test_max_failures_stops_the_job_once_reached(tmp_path: Path) -> None:
    refused = error(ErrorClass.SAFETY_FILTER)
    client = FakeClient({f"prompt {k}": [refused] for k in range(4)})
    job = Job(tmp_path, client, guards=Guards.from_limits(max_failures=2))
    result = await job.run([make_spec(k) for k in range(4)])
    statuses = [o.status for o in result.outcomes]
    assert statuses == [ItemStatus.FAILED, ItemStatus.FAILED, ItemStatus.PENDING, ItemStatus.PENDING]
    assert result.aborted == "--max-failures 2 reached"


async def test_a_failing_service_stops_the_job_after_its_probe_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeClient({"p": [error(ErrorClass.SERVER_ERROR, http_status=500)]})
    job = Job(tmp_path, client, guards=Guards(max_consecutive_failures=2, pause_s=0.0))
    with caplog.at_level(logging.DEBUG, logger="batchgen.engine.item"):
        result = await job.run(
            [make_spec(0, "a", "p")], policy=replace(RetryPolicy.from_limits(), max_attempts=9)
        )
    assert client.calls_for("p") == 3  # two failures trip the breaker; the third attempt is its probe
    assert "a: sending attempt 3 (probe)" in caplog.messages
    assert result.aborted == "the service failed 2 times in a row and a probe after 0s failed too"
    assert [o.status for o in result.outcomes] == [ItemStatus.PENDING]  # it would have been retried


async def test_a_success_ends_the_run_of_failures_in_a_row(tmp_path: Path) -> None:
    # Two failures in a row trip the breaker; a success between them must start the count again.
    boom = error(ErrorClass.SERVER_ERROR, http_status=500)
    client = FakeClient({"p": [boom, OK], "q": [boom, boom, OK]})
    job = Job(tmp_path, client, guards=Guards(max_consecutive_failures=2, pause_s=0.0))
    result = await job.run([make_spec(0, "a", "p"), make_spec(1, "b", "q")])
    assert result.aborted is None  # the probe after b's two failures found the service up
    assert [o.status for o in result.outcomes] == [ItemStatus.SUCCEEDED, ItemStatus.SUCCEEDED]
    assert (client.calls_for("p"), client.calls_for("q")) == (2, 3)


async def test_a_success_whose_headers_say_none_is_left_holds_the_next_request_until_the_reset(
    tmp_path: Path,
) -> None:
    spent = Generation((GeneratedImage(png_bytes(), PNG),), 123, rate=RateHeaders(60, 0, 300.0))
    job = Job(tmp_path, FakeClient({"p": [spent]}))
    await job.run([make_spec(0, "a", "p"), make_spec(1, "b", "q")])
    assert [prompt for prompt, _, _ in job.client.calls] == ["p", "q"]
    assert job.time.now >= 300  # b went only once the relay's window was said to reset


async def test_an_item_with_a_reference_is_not_made_again_until_the_reference_changes(
    tmp_path: Path, ref_png: Path
) -> None:
    spec = make_spec(0, "a", "p", references=[LocalReference(ref_png, "refs/style.png")])
    job = Job(tmp_path, FakeClient())
    await job.run([spec])
    (again,) = (await job.run([spec])).outcomes
    assert again.status is ItemStatus.SKIPPED
    assert job.client.calls_for("p") == 1
    ref_png.write_bytes(png_bytes(hue=7))  # the same path, another picture
    (changed,) = (await job.run([spec])).outcomes
    assert changed.status is ItemStatus.SUCCEEDED
    assert job.client.calls_for("p") == 2


async def test_a_failed_item_that_fails_again_is_journaled_with_its_new_failure(tmp_path: Path) -> None:
    # It has no image to keep: the new failure replaces the old one in the journal.
    client = FakeClient(
        {"p": [error(ErrorClass.SERVER_ERROR, http_status=500), error(ErrorClass.SAFETY_FILTER)]}
    )
    job = Job(tmp_path, client)
    await job.run([make_spec(0, "a", "p")], policy=replace(RetryPolicy.from_limits(), max_attempts=1))
    assert job.entry("a").error_class is ErrorClass.SERVER_ERROR
    (outcome,) = (await job.run([make_spec(0, "a", "p")])).outcomes
    assert outcome.failure is not None
    assert outcome.failure.message == "simulated safety_filter"  # no earlier image to speak of
    assert job.entry("a").error_class is ErrorClass.SAFETY_FILTER


async def test_the_log_tells_each_attempt_and_how_the_item_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = error(ErrorClass.RATE_LIMITED, http_status=429, stated_limit=RelayLimit(50, 60.0))
    client = FakeClient(
        {"p": [error(ErrorClass.SERVER_ERROR), throttle, OK], "q": [error(ErrorClass.SAFETY_FILTER)]},
        images_per_call=1,
    )
    job = Job(tmp_path, client)
    with caplog.at_level(logging.DEBUG, logger="batchgen.engine.item"):
        await job.run([make_spec(0, "a", "p", n=2), make_spec(1, "b", "q")])
    messages = [m for m in caplog.messages if m.startswith(("a:", "b:"))]
    assert "a: sending attempt 1" in messages
    assert any(
        m.startswith("a: attempt 1 failed (server_error: simulated server_error); retrying ")
        for m in messages
    )
    assert "a: the relay's rate limit; waiting for room in its window" in messages
    assert messages.count("a: sending attempt 2") == 2  # the throttle's attempt is not counted
    assert "a: asked for 2 images, the service sent 1" in messages
    assert "b: failed (safety_filter) after 1 attempt(s): simulated safety_filter" in messages


async def test_a_link_that_fails_is_logged_before_it_is_fetched_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeClient({"p": [LINKS]}, link_scripts={LINK: [DEAD, OK]})
    with caplog.at_level(logging.INFO, logger="batchgen.engine.item"):
        await Job(tmp_path, client).run([make_spec(0, "a", "p")])
    assert "a: fetching its image failed (simulated download_failed)" in caplog.messages


def test_an_idempotency_key_is_the_same_in_every_batchgen() -> None:
    """What a stopped run sent, the next run (of any later batchgen) sends again: the key is the
    job, the item, its request's fingerprint and, from the second, the image's version."""

    def expected(seed: bytes) -> str:
        return "batchgen-" + hashlib.sha256(seed).hexdigest()[:32]

    assert idempotency_key("job", "a", "f") == expected(b"job\0a\0f")
    assert idempotency_key("job", "a", "f", 1) == expected(b"job\0a\0f")
    assert idempotency_key("job", "a", "f", 2) == expected(b"job\0a\0f\0v2")


def test_a_retry_with_no_wait_says_now() -> None:
    assert when(0.0) == "retrying now"
    assert when(0.04) == "retrying now"
    assert when(0.05) == "retrying in 0.1s"
    assert when(2.5) == "retrying in 2.5s"
