"""The runner with a fake client: retries, refusals, auth stops, references, sidecars, counts."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgen.engine.guards import Guards
from batchgen.engine.retry import RetryPolicy
from batchgen.engine.room import ImageRoom
from batchgen.engine.runner import JobRun, Runner
from batchgen.errors import ErrorClass
from batchgen.images import GeneratedImage
from batchgen.manifest.references import LocalReference, ReferenceLoader, UrlReference
from batchgen.outcomes import Event, ItemFinished, ItemRetrying, ItemStatus, JobStarted, JobStopping
from batchgen.output.store import JobStore
from batchgen.plan.plan import plan_item
from batchgen.plan.pricing import PriceTable
from batchgen.plan.resume import Mode
from batchgen.plan.triage import Triage, decided
from batchgen.service.client import Generation, Room, no_wait

from .fakes import LINKS, OK, FakeClient, error, make_spec


class FakeTime:
    """Sleeping moves this clock instead of waiting: retries and rate-limit pauses take no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def runner(
    tmp_path: Path,
    client: FakeClient,
    *,
    concurrency: int = 4,
    fake: FakeTime | None = None,
    real_sleep: bool = False,
    events: list[Event] | None = None,
    io: Executor | None = None,
    room: ImageRoom | None = None,
    guards: Guards | None = None,
    **policy: float,
) -> Runner:
    fake = fake or FakeTime()
    store = JobStore(tmp_path / "out" / "job")
    store.prepare()
    return Runner(
        job="job",
        client=client,
        store=store,
        policy=replace(RetryPolicy.from_limits(), **policy),  # type: ignore[arg-type]
        references=ReferenceLoader(20_000_000),
        concurrency=concurrency,
        on_event=(events.append if events is not None else lambda e: None),
        sleep=None if real_sleep else fake.sleep,
        clock=fake.clock,
        io=io,
        room=room or ImageRoom(),
        guards=guards or Guards.from_limits(),
    )


async def run(r: Runner, specs: list) -> JobRun:  # type: ignore[type-arg]
    planner = partial(plan_item, reference_field="reference_images", prices=PriceTable.default())
    triage = Triage(planner, {}, r.store, r.references, Mode.RUN)
    return await r.run(specs, decided(triage, specs))


async def test_success_writes_images_and_a_sidecar_without_reference_bytes(
    tmp_path: Path, ref_png: Path
) -> None:
    client = FakeClient()
    refs = [LocalReference(ref_png, "refs/style.png"), UrlReference("https://cdn.test/x.png")]
    spec = make_spec(0, "sku-1", "a tote", n=2, references=refs, aspect_ratio="4:5")
    result = await run(runner(tmp_path, client), [spec])
    (outcome,) = result.outcomes
    assert outcome.status is ItemStatus.SUCCEEDED
    assert outcome.files == ("images/sku-1-1.png", "images/sku-1-2.png")
    assert (outcome.attempts, outcome.requests_sent, outcome.unconfirmed) == (1, 1, 0)
    # The request that went out carries the reference as a data URI of the file's bytes.
    ((_, body, _),) = client.calls
    sent_refs = body["extra_fields"]["reference_images"]
    assert sent_refs[0].startswith("data:image/png;base64,")
    assert sent_refs[1] == "https://cdn.test/x.png"
    sidecar = orjson.loads((tmp_path / "out/job/images/sku-1.json").read_bytes())
    assert sidecar["request"]["extra_fields"]["reference_images"][0].startswith("file:refs/style.png sha256:")
    assert "base64" not in orjson.dumps(sidecar).decode()
    assert [f["path"] for f in sidecar["files"]] == list(outcome.files)
    assert sidecar["attempts"] == 1
    assert sidecar["estimated_cost"] == outcome.estimated_cost > 0
    for f in sidecar["files"]:
        assert (tmp_path / "out/job" / f["path"]).stat().st_size == f["bytes"]


async def test_retries_until_success_with_one_idempotency_key(tmp_path: Path) -> None:
    events: list[Event] = []
    client = FakeClient(
        {
            "p": [
                error(ErrorClass.SERVER_ERROR, http_status=500),
                error(ErrorClass.RATE_LIMITED, http_status=429),
                OK,
            ]
        }
    )
    result = await run(runner(tmp_path, client, events=events), [make_spec(0, "a", "p")])
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.attempts, outcome.requests_sent) == (ItemStatus.SUCCEEDED, 3, 3)
    assert len({key for _, _, key in client.calls}) == 1
    retries = [e for e in events if isinstance(e, ItemRetrying)]
    assert [(e.attempt, e.error_class, e.message) for e in retries] == [
        (1, ErrorClass.SERVER_ERROR, "simulated server_error"),
        (2, ErrorClass.RATE_LIMITED, "simulated rate_limited"),
    ]
    assert isinstance(events[0], JobStarted)
    assert isinstance(events[-1], ItemFinished)


async def test_idempotency_keys_differ_between_items_and_repeat_across_runs(tmp_path: Path) -> None:
    client = FakeClient()
    specs = [make_spec(0, "a", "p"), make_spec(1, "b", "p")]
    await run(runner(tmp_path, client), specs)
    await run(runner(tmp_path, client), specs)
    keys = [key for _, _, key in client.calls]
    assert keys[0] != keys[1]
    assert sorted(keys[:2]) == sorted(keys[2:])


@pytest.mark.parametrize(
    "error_class", [ErrorClass.SAFETY_FILTER, ErrorClass.NO_IMAGE, ErrorClass.INVALID_REQUEST]
)
async def test_final_failures_are_sent_exactly_once(tmp_path: Path, error_class: ErrorClass) -> None:
    client = FakeClient({"bad": [error(error_class, http_status=500)]})
    result = await run(runner(tmp_path, client), [make_spec(0, "a", "bad"), make_spec(1, "b", "good")])
    bad, good = result.outcomes
    assert client.calls_for("bad") == 1
    assert bad.status is ItemStatus.FAILED
    assert bad.failure is not None
    assert (bad.failure.error_class, bad.failure.retryable, bad.failure.http_status) == (
        error_class,
        False,
        500,
    )
    assert good.status is ItemStatus.SUCCEEDED
    assert result.aborted is None


async def test_retryable_failure_uses_max_attempts_then_fails(tmp_path: Path) -> None:
    client = FakeClient({"p": [error(ErrorClass.SERVER_ERROR)]})
    result = await run(runner(tmp_path, client, max_attempts=3), [make_spec(0, "a", "p")])
    (outcome,) = result.outcomes
    assert client.calls_for("p") == 3
    assert outcome.status is ItemStatus.FAILED
    assert outcome.failure is not None
    assert outcome.failure.retryable


async def test_unconfirmed_attempts_count_only_what_may_have_been_billed(tmp_path: Path) -> None:
    client = FakeClient(
        {
            "p": [
                error(ErrorClass.TIMEOUT, sent=True),
                error(ErrorClass.CONNECTION, sent=False),  # refused: never left
                error(ErrorClass.CONNECTION, sent=True),  # dropped after sending
                OK,
            ]
        }
    )
    result = await run(runner(tmp_path, client, max_unconfirmed=3), [make_spec(0, "a", "p")])
    (outcome,) = result.outcomes
    assert (outcome.attempts, outcome.requests_sent, outcome.unconfirmed) == (4, 3, 2)
    assert outcome.unconfirmed_cost == pytest.approx(2 * outcome.estimated_cost)


@pytest.mark.parametrize(
    ("max_unconfirmed", "retry_after_send", "attempts"),
    [(2, True, 2), (3, True, 3), (1, True, 1), (5, False, 1)],
)
async def test_an_item_stops_at_its_unconfirmed_cap(
    tmp_path: Path, max_unconfirmed: int, retry_after_send: bool, attempts: int
) -> None:
    # A gateway's 504 arrives after the upstream did (and billed) the work: it counts as unconfirmed.
    gave_up = error(ErrorClass.SERVER_ERROR, http_status=504, sent=True)
    client = FakeClient({"p": [gave_up] * 5 + [OK]})
    r = runner(
        tmp_path, client, max_attempts=8, max_unconfirmed=max_unconfirmed, retry_after_send=retry_after_send
    )
    (outcome,) = (await run(r, [make_spec(0, "a", "p")])).outcomes
    assert client.calls_for("p") == attempts
    assert (outcome.status, outcome.unconfirmed) == (ItemStatus.FAILED, attempts)
    assert outcome.unconfirmed_cost == pytest.approx(attempts * 0.039)  # nano-banana-2 1K, shipped prices


async def test_a_failure_that_never_left_does_not_count_toward_the_cap(tmp_path: Path) -> None:
    refused = error(ErrorClass.SERVER_ERROR, http_status=504, sent=False)
    client = FakeClient({"p": [refused, refused, refused, OK]})
    (outcome,) = (await run(runner(tmp_path, client, max_unconfirmed=1), [make_spec(0, "a", "p")])).outcomes
    assert (outcome.status, outcome.unconfirmed, client.calls_for("p")) == (ItemStatus.SUCCEEDED, 0, 4)


async def test_auth_failure_stops_the_job_and_leaves_the_rest_pending(tmp_path: Path) -> None:
    events: list[Event] = []
    client = FakeClient({f"prompt {k}": [error(ErrorClass.AUTH, http_status=401)] for k in range(100)})
    specs = [make_spec(k) for k in range(100)]
    result = await run(runner(tmp_path, client, concurrency=3, events=events), specs)
    assert len(client.calls) <= 3  # only what was already in flight
    statuses = [o.status for o in result.outcomes]
    assert statuses.count(ItemStatus.PENDING) >= 97
    assert result.aborted is not None
    assert "check the API key" in result.aborted
    assert sum(isinstance(e, JobStopping) for e in events) == 1


async def test_exhausted_quota_stops_the_job_and_says_to_top_up(tmp_path: Path) -> None:
    events: list[Event] = []
    no_credit = error(ErrorClass.QUOTA_EXHAUSTED, http_status=429)
    client = FakeClient({f"prompt {k}": [no_credit] for k in range(100)})
    r = runner(tmp_path, client, concurrency=3, events=events, max_attempts=4)
    result = await run(r, [make_spec(k) for k in range(100)])
    assert len(client.calls) <= 3  # only what was already in flight; none of them retried
    failed = [o for o in result.outcomes if o.status is ItemStatus.FAILED]
    assert failed
    assert all(o.failure is not None and o.failure.error_class is ErrorClass.QUOTA_EXHAUSTED for o in failed)
    assert [o.status for o in result.outcomes].count(ItemStatus.PENDING) >= 97
    assert result.aborted is not None
    assert "credit ran out" in result.aborted
    assert f"batchgen retry {tmp_path / 'out' / 'job'}" in result.aborted
    assert not any(isinstance(e, ItemRetrying) for e in events)


async def test_auth_failure_cancels_another_items_pending_retry(tmp_path: Path) -> None:
    a_failed = asyncio.Event()
    client = FakeClient(
        {
            # A fails with a long Retry-After, so it is waiting when B's 401 arrives.
            # (A 503, not a 429: a 429 would rightly pause B as well.)
            "A": [error(ErrorClass.SERVER_ERROR, http_status=503, retry_after=1000.0)],
            "B": [a_failed, error(ErrorClass.AUTH, http_status=401)],
        }
    )

    def on_event(event: Event) -> None:
        if isinstance(event, ItemRetrying) and event.id == "a":
            a_failed.set()

    r = runner(tmp_path, client, concurrency=2, real_sleep=True)
    r.on_event = on_event
    result = await asyncio.wait_for(run(r, [make_spec(0, "a", "A"), make_spec(1, "b", "B")]), timeout=10)
    a, b = result.outcomes
    assert client.calls_for("A") == 1  # its retry was never sent
    assert a.status is ItemStatus.PENDING
    assert b.status is ItemStatus.FAILED
    assert b.failure is not None
    assert b.failure.error_class is ErrorClass.AUTH


async def test_a_reference_gone_before_sending_fails_the_item_without_a_request(
    tmp_path: Path, ref_png: Path
) -> None:
    spec = make_spec(0, "a", "p", references=[LocalReference(ref_png, "refs/style.png")])
    ref_png.unlink()
    client = FakeClient()
    result = await run(runner(tmp_path, client), [spec])
    (outcome,) = result.outcomes
    assert client.calls == []
    assert outcome.status is ItemStatus.FAILED
    assert outcome.failure is not None
    assert outcome.failure.error_class is ErrorClass.REFERENCE_ERROR
    assert (outcome.attempts, outcome.requests_sent) == (0, 0)


async def test_fewer_images_than_asked_keeps_what_came(tmp_path: Path) -> None:
    client = FakeClient(images_per_call=1)
    result = await run(runner(tmp_path, client), [make_spec(0, "a", "p", n=3)])
    (outcome,) = result.outcomes
    assert outcome.status is ItemStatus.SUCCEEDED
    assert outcome.files == ("images/a-1.png",)


async def test_a_429_slows_the_whole_job_not_just_its_item(tmp_path: Path) -> None:
    # No rate is configured; A's 429 must still make B, a different item, wait its turn.
    client = FakeClient(
        {"A": [error(ErrorClass.RATE_LIMITED, http_status=429, retry_after=30.0), OK], "B": [OK]}
    )
    fake = FakeTime()
    r = runner(tmp_path, client, concurrency=1, fake=fake, max_retry_after_s=60)
    result = await run(r, [make_spec(0, "a", "A"), make_spec(1, "b", "B")])
    assert [o.status for o in result.outcomes] == [ItemStatus.SUCCEEDED, ItemStatus.SUCCEEDED]
    assert fake.sleeps[0] == 30.0  # A's own backoff honours Retry-After
    assert len(fake.sleeps) == 2
    assert 0 < fake.sleeps[1] < 1  # B was spaced out although no rate limit is configured
    assert r.limiter.interval > 0


@pytest.mark.parametrize(("max_retry_after_s", "paused"), [(60, 30.0), (10, 10.0)])
async def test_a_429s_retry_after_holds_every_item_that_long_up_to_the_cap(
    tmp_path: Path, max_retry_after_s: float, paused: float
) -> None:
    # A's one attempt is refused with Retry-After: 30 and it does not retry; B, sent next, waits
    # what the relay asked (capped), not the limiter's own guess.
    client = FakeClient({"A": [error(ErrorClass.RATE_LIMITED, http_status=429, retry_after=30.0)], "B": [OK]})
    fake = FakeTime()
    r = runner(
        tmp_path, client, concurrency=1, fake=fake, max_attempts=1, max_retry_after_s=max_retry_after_s
    )
    result = await run(r, [make_spec(0, "a", "A"), make_spec(1, "b", "B")])
    assert [o.status for o in result.outcomes] == [ItemStatus.FAILED, ItemStatus.SUCCEEDED]
    assert fake.sleeps == [pytest.approx(paused)]


class GatedExecutor(ThreadPoolExecutor):
    """I/O threads that hold every file operation until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.gate = threading.Event()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        return super().submit(self._after_gate, fn, *args, **kwargs)

    def _after_gate(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.gate.wait(timeout=30)
        return fn(*args, **kwargs)


async def test_an_answered_request_frees_its_slot_while_its_images_are_written(tmp_path: Path) -> None:
    client = FakeClient()
    events: list[Event] = []
    io = GatedExecutor()
    r = runner(tmp_path, client, concurrency=1, events=events, io=io)
    try:
        task = asyncio.create_task(run(r, [make_spec(k) for k in range(4)]))
        for _ in range(50):  # every chance to send what it will while nothing can be written
            await asyncio.sleep(0)
        # One request at a time, but the second went out while the first answer waits for the disk;
        # the third waits for a slot to finish (at most `concurrency` items finishing).
        assert [prompt for prompt, _, _ in client.calls] == ["prompt 0", "prompt 1"]
        assert not any(isinstance(e, ItemFinished) for e in events)
        io.gate.set()
        result = await task
    finally:
        io.gate.set()
        io.shutdown()
    assert [o.status for o in result.outcomes] == [ItemStatus.SUCCEEDED] * 4
    assert [prompt for prompt, _, _ in client.calls] == [f"prompt {k}" for k in range(4)]


async def test_answers_wait_for_room_in_memory_until_earlier_images_are_written(tmp_path: Path) -> None:
    # Room for one answer: the first is read, frees its concurrency slot (so all four requests
    # go out) and waits for the disk; the other three bodies wait for room. A failed attempt
    # gives its place back, or its retry (and every other answer) would wait forever.
    client = FakeClient({"prompt 1": [error(ErrorClass.SERVER_ERROR), OK]})
    io = GatedExecutor()
    r = runner(tmp_path, client, concurrency=3, io=io, room=ImageRoom(1))
    try:
        task = asyncio.create_task(run(r, [make_spec(k) for k in range(4)]))
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(client.calls) == 4
        assert client.answered == ["prompt 0"]
        assert r.room.taken == 1
        io.gate.set()
        result = await asyncio.wait_for(task, timeout=10)
    finally:
        io.gate.set()
        io.shutdown()
    assert [o.status for o in result.outcomes] == [ItemStatus.SUCCEEDED] * 4
    assert client.calls_for("prompt 1") == 2
    assert r.room.taken == 0


async def test_every_answer_gives_its_place_back_whatever_becomes_of_it(tmp_path: Path) -> None:
    client = FakeClient(
        {"p1": [error(ErrorClass.SERVER_ERROR), OK], "p3": [error(ErrorClass.SAFETY_FILTER)], "p4": [LINKS]},
        link_scripts={"https://cdn.test/p4/0.png": [error(ErrorClass.DOWNLOAD_FAILED)]},
    )
    r = runner(tmp_path, client, room=ImageRoom(2))
    specs = [
        make_spec(0, "a", "p1"),
        make_spec(1, "b", "p2", n=2),
        make_spec(2, "c", "p3"),
        make_spec(3, "d", "p4"),
    ]
    result = await asyncio.wait_for(run(r, specs), timeout=10)
    statuses = [o.status for o in result.outcomes]
    assert statuses == [ItemStatus.SUCCEEDED, ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.FAILED]
    assert len(client.answered) == 5
    assert r.room.taken == 0


class TestLinks:
    """An answer with links: the images exist and were billed; fetching them is its own business."""

    async def test_a_link_that_fails_twice_is_fetched_a_third_time_and_never_made_again(
        self, tmp_path: Path
    ) -> None:
        link = "https://cdn.test/p/0.png"
        flaky = error(ErrorClass.DOWNLOAD_FAILED, should_retry=True)
        client = FakeClient({"p": [LINKS]}, link_scripts={link: [flaky, flaky, OK]})
        (outcome,) = (await run(runner(tmp_path, client), [make_spec(0, "a", "p")])).outcomes
        assert outcome.status is ItemStatus.SUCCEEDED
        assert (client.calls_for("p"), client.downloads) == (1, [link] * 3)
        assert (tmp_path / "out/job/images/a.png").read_bytes().startswith(b"\x89PNG")

    async def test_a_dead_link_fails_the_item_once_billed_with_its_links_kept(self, tmp_path: Path) -> None:
        dead = error(ErrorClass.DOWNLOAD_FAILED, http_status=404, should_retry=True)
        links = ["https://cdn.test/p/0.png", "https://cdn.test/p/1.png"]
        client = FakeClient({"p": [LINKS]}, link_scripts={links[0]: [dead]})
        r = runner(tmp_path, client, max_attempts=4)
        (outcome,) = (await run(r, [make_spec(0, "a", "p", n=2)])).outcomes
        assert client.calls_for("p") == 1  # one generation, whatever the link does
        assert client.downloads == [links[0]] * 3  # the download budget
        assert outcome.status is ItemStatus.FAILED
        assert outcome.failure is not None
        assert outcome.failure.error_class is ErrorClass.DOWNLOAD_FAILED
        assert outcome.failure.links == tuple(links)
        assert not outcome.failure.retryable
        assert "generated (and billed)" in outcome.failure.message
        assert outcome.estimated_cost == pytest.approx(2 * 0.039)  # two 1K images were made and billed
        assert not list((tmp_path / "out/job/images").glob("a*"))

    async def test_a_refused_link_is_not_fetched_again(self, tmp_path: Path) -> None:
        refused = error(ErrorClass.DOWNLOAD_FAILED, should_retry=False)
        client = FakeClient({"p": [LINKS]}, link_scripts={"https://cdn.test/p/0.png": [refused]})
        (outcome,) = (await run(runner(tmp_path, client), [make_spec(0, "a", "p")])).outcomes
        assert (outcome.status, len(client.downloads), client.calls_for("p")) == (ItemStatus.FAILED, 1, 1)

    async def test_a_stopping_job_still_fetches_what_it_paid_for(self, tmp_path: Path) -> None:
        link = "https://cdn.test/p/0.png"
        flaky = error(ErrorClass.DOWNLOAD_FAILED, should_retry=True)
        client = FakeClient({"p": [LINKS]}, link_scripts={link: [flaky, OK]})
        r = runner(tmp_path, client)

        def stop_on_first_fetch(url: str) -> None:
            r.abort("a budget ran out")

        original = client.download

        async def download(url: str):  # type: ignore[no-untyped-def]
            stop_on_first_fetch(url)
            return await original(url)

        client.download = download  # type: ignore[method-assign]
        (outcome,) = (await run(r, [make_spec(0, "a", "p")])).outcomes
        assert outcome.status is ItemStatus.SUCCEEDED
        assert client.downloads == [link, link]


async def test_a_full_disk_stops_the_job_instead_of_paying_for_images_it_cannot_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    client = FakeClient()
    r = runner(tmp_path, client, concurrency=1)
    monkeypatch.setattr(os, "fsync", disk_full)  # where a full disk shows when an image is written
    result = await run(r, [make_spec(k) for k in range(6)])
    monkeypatch.undo()
    assert result.aborted is not None
    assert result.aborted.startswith("cannot write the output:")
    assert "No space left on device" in result.aborted
    # The second request may have gone out while the first answer was being written; no more.
    assert len(client.calls) <= 2
    assert [o.status for o in result.outcomes] == [ItemStatus.PENDING] * 6
    assert list((tmp_path / "out/job/images").iterdir()) == []  # no half-written file either


async def test_max_cost_stops_a_running_job_once_unconfirmed_attempts_used_the_budget(
    tmp_path: Path,
) -> None:
    # Four 1K images at 0.039 fit under 0.16, but a timed-out attempt may have been billed too:
    # after three images and that attempt, a fourth image would take the spend to 0.195.
    client = FakeClient({"prompt 0": [error(ErrorClass.TIMEOUT, sent=True), OK]})
    events: list[Event] = []
    r = runner(tmp_path, client, concurrency=1, events=events, guards=Guards.from_limits(max_cost=0.16))
    result = await run(r, [make_spec(k) for k in range(4)])
    assert [o.status for o in result.outcomes] == [ItemStatus.SUCCEEDED] * 3 + [ItemStatus.PENDING]
    assert [client.calls_for(f"prompt {k}") for k in range(4)] == [2, 1, 1, 0]
    assert result.aborted is not None
    assert result.aborted.startswith("--max-cost 0.16 reached")
    assert [e.reason for e in events if isinstance(e, JobStopping)] == [result.aborted]
    assert r.guards.spent == pytest.approx(4 * 0.039)  # three images and one perhaps-billed attempt


async def test_an_attempt_perhaps_billed_counts_against_max_cost_before_its_item_ends(
    tmp_path: Path,
) -> None:
    # Item 0 is cut off after sending, then answered with a link that is slow to fetch, so it
    # ends last. The three after it must see its lost attempt as spent: 0.039 for it and 0.039
    # held for its image leave room for items 1 and 2 under 0.16, not for item 3.
    fetched = asyncio.Event()  # set once item 3 has asked the budget: refused, or sent

    class Events(list[Event]):
        def append(self, event: Event) -> None:
            super().append(event)
            if isinstance(event, JobStopping):
                fetched.set()

    class Sending(FakeClient):
        async def generate(
            self, body: Mapping[str, Any], idempotency_key: str, room: Room = no_wait
        ) -> Generation:
            if body["prompt"] == "prompt 3":
                fetched.set()
            return await super().generate(body, idempotency_key, room)

    client = Sending(
        {"prompt 0": [error(ErrorClass.TIMEOUT, sent=True), LINKS]},
        link_scripts={"https://cdn.test/prompt 0/0.png": [fetched, OK]},
    )
    events = Events()
    r = runner(tmp_path, client, concurrency=1, events=events, guards=Guards.from_limits(max_cost=0.16))
    result = await run(r, [make_spec(k) for k in range(4)])
    assert [client.calls_for(f"prompt {k}") for k in range(4)] == [2, 1, 1, 0]
    assert [o.status for o in result.outcomes] == [ItemStatus.SUCCEEDED] * 3 + [ItemStatus.PENDING]
    assert result.aborted is not None
    assert result.aborted.startswith("--max-cost 0.16 reached")
    assert r.guards.spent == pytest.approx(4 * 0.039)


async def test_max_cost_sends_no_retry_that_could_pass_it(tmp_path: Path) -> None:
    # One 1K image at 0.039 under 0.05: its first attempt is cut off after sending and may have
    # been billed, so a second could take the spend to 0.078.
    client = FakeClient({"prompt 0": [error(ErrorClass.TIMEOUT, sent=True), OK]})
    r = runner(tmp_path, client, concurrency=1, guards=Guards.from_limits(max_cost=0.05))
    result = await run(r, [make_spec(0)])
    assert client.calls_for("prompt 0") == 1
    assert result.aborted is not None
    assert result.aborted.startswith("--max-cost 0.05 reached")
    assert [o.status for o in result.outcomes] == [ItemStatus.PENDING]  # the next run tries again


class StuckInTheBody:
    """Takes room for its answer, then never finishes reading it."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()

    async def generate(
        self, body: Mapping[str, Any], idempotency_key: str, room: Room = no_wait
    ) -> Generation:
        await room()
        self.reading.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def download(self, url: str) -> GeneratedImage:
        raise AssertionError("no links here")


async def test_a_request_cancelled_while_its_body_is_read_gives_its_place_back(tmp_path: Path) -> None:
    client = StuckInTheBody()
    r = runner(tmp_path, client, concurrency=1, room=ImageRoom(1))  # type: ignore[arg-type]
    task = asyncio.create_task(run(r, [make_spec(0)]))
    await asyncio.wait_for(client.reading.wait(), timeout=10)
    assert r.room.taken == 1
    r.halt()
    result = await asyncio.wait_for(task, timeout=10)
    assert [o.status for o in result.outcomes] == [ItemStatus.PENDING]
    assert r.room.taken == 0


async def test_the_relays_throttle_is_not_a_failure_of_the_item_nor_of_the_service(tmp_path: Path) -> None:
    """Five 429s in a row that state the limit: the item is not charged an attempt (one attempt
    allowed, it still succeeds), the breaker (tripping after 2 failures) does not count them."""
    from batchgen.errors import RelayLimit

    throttle = error(ErrorClass.RATE_LIMITED, http_status=429, stated_limit=RelayLimit(2, 60.0))
    client = FakeClient({"A": [throttle] * 5 + [OK]})
    fake = FakeTime()
    r = runner(
        tmp_path,
        client,
        concurrency=1,
        fake=fake,
        max_attempts=1,
        guards=Guards(max_consecutive_failures=2, pause_s=60.0),
    )
    result = await run(r, [make_spec(0, "a", "A")])
    (outcome,) = result.outcomes
    assert outcome.status is ItemStatus.SUCCEEDED
    assert (outcome.attempts, outcome.requests_sent) == (1, 1)
    assert client.calls_for("A") == 6
    assert result.relay is not None
    assert (result.relay.requests, result.learned) == (2, RelayLimit(2, 60.0))
    assert r.limiter.interval == 0.0  # not slowed down as after a 429 that says nothing
    assert fake.now >= 4 * 60.0  # each throttle waited for a window to clear, not a backoff


async def test_a_probe_that_meets_the_throttle_reopens_the_breaker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from batchgen.errors import RelayLimit

    throttle = error(ErrorClass.RATE_LIMITED, http_status=429, stated_limit=RelayLimit(50, 60.0))
    boom = error(ErrorClass.SERVER_ERROR, http_status=500)
    client = FakeClient({"A": [boom, boom, throttle, OK], "B": [OK]})
    guards = Guards(max_consecutive_failures=2, pause_s=0.0)
    r = runner(tmp_path, client, concurrency=1, max_attempts=4, guards=guards)
    with caplog.at_level(logging.DEBUG, logger="batchgen.engine.item"):
        result = await run(r, [make_spec(0, "a", "A"), make_spec(1, "b", "B")])
    sends = [m for m in caplog.messages if m.startswith("a: sending attempt 3")]
    assert sends == ["a: sending attempt 3 (probe)", "a: sending attempt 3"]  # no second probe
    assert [o.status for o in result.outcomes] == [ItemStatus.SUCCEEDED, ItemStatus.SUCCEEDED]
    assert result.aborted is None
    assert result.outcomes[0].attempts == 3  # the two failures and the success; not the throttle
