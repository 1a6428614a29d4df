"""One benchmark contender, run in a child process of its own: ``python contenders.py NAME JSON``.

Prints one JSON line: items, seconds, items/s, and (batchgen only) event-loop lag samples.
The parent reads the child's peak RSS from the OS when it exits.

- batchgen: the library, as the CLI runs it (plan, retries, journal, atomic writes, report).
- bare: one aiohttp session, a semaphore, stdlib json.loads and base64.b64decode, write the file.
- openai: the loop a user writes with the official SDK: AsyncOpenAI().images.generate, a semaphore,
  base64-decode, write the file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


class Heartbeat:
    """How late a 5 ms timer fires: the event loop's lag while the work runs."""

    def __init__(self, every: float = 0.005) -> None:
        self.every = every
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.every
            await asyncio.sleep(self.every)
            self.lags.append(max(0.0, loop.time() - due))

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()


async def run_batchgen(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    import yaml

    from batchgen import config, manifest
    from batchgen.job import jobs, memory

    memory.tune_allocator()  # as `batchgen run` does

    folder = out / "jobs"
    folder.mkdir()
    limits = {"concurrency": cfg["concurrency"], "timeout_s": 600, "max_consecutive_failures": 100_000}
    if cfg.get("rpm"):
        limits["requests_per_minute"] = cfg["rpm"]
    data: dict[str, Any] = {"job": "bench", "defaults": {"size": cfg.get("size", "2K")}, "limits": limits}
    if cfg.get("variants"):
        data["variants"] = cfg["variants"]
    if cfg.get("catalog"):  # how a big job is written: a CSV through a generate block
        rows = "".join(f"sku-{k:06d},product {k}\n" for k in range(cfg["items"]))
        (folder / "products.csv").write_text("sku,name\n" + rows)
        data["generate"] = [
            {"rows": "products.csv", "template": {"id": "{sku}", "prompt": "Studio photo of {name}"}}
        ]
    else:
        data["items"] = [{"id": f"item-{k:06d}", "prompt": f"product {k}"} for k in range(cfg["items"])]
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    job = manifest.load(path)
    options = jobs.RunOptions(overrides=config.Overrides(base_url=cfg["base_url"], output_dir=out / "output"))
    from batchgen.outcomes import Event, ItemFinished

    finished: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, ItemFinished):
            finished.append(time.perf_counter() - started)

    waits: list[float] = []
    in_bucket: list[float] = []  # seconds from the start to the last image in the bucket
    beat = Heartbeat()
    beat.start()
    started = time.perf_counter()
    started_mono = time.monotonic()
    if cfg.get("bucket"):  # the same run, its output a bucket (the S3 server's address is in the environment)
        from batchgen.job import remote

        bucket = remote.RemoteOutput(cfg["bucket"], work_dir=out / "spool")
        result = await remote.run_manifest(
            job,
            options,
            bucket,
            {**os.environ, "BATCHGEN_API_KEY": "bench"},
            on_event=on_event,
            stats=lambda s: (waits.extend(s.waits_s), in_bucket.append(s.last_image_at - started_mono)),
        )
    else:
        result = await jobs.run_manifest(job, options, {"BATCHGEN_API_KEY": "bench"}, on_event=on_event)
    whole = time.perf_counter() - started
    beat.stop()
    # Measured to the last image written, as the bare loop is; the command then waits for the
    # derivations it still has (thumbnails, variants): that tail is reported beside.
    written = max(finished, default=whole)
    found = {
        "items": result.report.counts.succeeded,
        "seconds": written,
        "tail_s": whole - written,
        "lags": beat.lags,
        "finished": finished,
        "upload_waits": waits,  # per image: seconds from written in the spool to in the bucket
        "last_in_bucket": in_bucket[0] if in_bucket else None,
    }
    if cfg.get("rederive"):  # the job again with one variant's spec changed: nothing to send
        data["variants"] = {n: {**v, "quality": 50} for n, v in data["variants"].items()}
        path.write_text(yaml.safe_dump(data))
        job = manifest.load(path)
        again = time.perf_counter()
        result = await jobs.run_manifest(job, options, {"BATCHGEN_API_KEY": "bench"})
        found["rederive"] = {
            "seconds": time.perf_counter() - again,
            "requests_sent": result.report.requests_sent,
            "items": result.report.counts.skipped,
            "made_again": sum(1 for i in result.report.items if i.variants),
        }
    return found


async def run_bare(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    import aiohttp

    url = cfg["base_url"] + "/images/generations"
    sem = asyncio.Semaphore(cfg["concurrency"])
    done = 0
    finished: list[float] = []

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(k: int) -> None:
            nonlocal done
            async with sem:
                body = {
                    "model": "nano-banana-2",
                    "prompt": f"product {k}",
                    "size": "2K",
                    "n": 1,
                    "response_format": "b64_json",
                }
                async with session.post(url, json=body, headers={"Authorization": "Bearer bench"}) as resp:
                    data = json.loads(await resp.read())
                image = base64.b64decode(data["data"][0]["b64_json"])
                (out / f"{k}.png").write_bytes(image)
                done += 1
                finished.append(time.perf_counter())

        return await _timed(cfg, one, lambda: done, finished)


async def run_openai(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=cfg["base_url"], api_key="bench", max_retries=0, timeout=600)
    sem = asyncio.Semaphore(cfg["concurrency"])
    done = 0
    finished: list[float] = []

    async def one(k: int) -> None:
        nonlocal done
        async with sem:
            result = await client.images.generate(
                model="nano-banana-2",
                prompt=f"product {k}",
                size="2K",
                response_format="b64_json",  # type: ignore[arg-type]
            )
            image = base64.b64decode(result.data[0].b64_json or "")  # type: ignore[index]
            (out / f"{k}.png").write_bytes(image)
            done += 1
            finished.append(time.perf_counter())

    try:
        return await _timed(cfg, one, lambda: done, finished)
    finally:
        await client.close()


async def _timed(
    cfg: dict[str, Any], one: Callable[[int], Awaitable[None]], done: Callable[[], int], finished: list[float]
) -> dict[str, Any]:
    started = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(cfg["items"])))
    seconds = time.perf_counter() - started
    return {"items": done(), "seconds": seconds, "lags": [], "finished": [t - started for t in finished]}


CONTENDERS = {"batchgen": run_batchgen, "bare": run_bare, "openai": run_openai}


def main() -> None:
    name, cfg = sys.argv[1], json.loads(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        result = asyncio.run(CONTENDERS[name](cfg, Path(tmp)))
    result["items_per_s"] = result["items"] / result["seconds"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
