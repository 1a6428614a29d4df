"""Running a manifest end to end: load, resolve settings, send, store, report."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import config, manifest, pricing
from .client import HttpImageClient, ImageClient
from .errors import ManifestError, Problem
from .outcomes import Event
from .plan import plan_item
from .references import ReferenceLoader
from .report import build_report
from .retry import RetryPolicy
from .runner import Runner, Sleep
from .simulator import Simulator, SimulatorConfig
from .store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    overrides: config.Overrides = field(default_factory=config.Overrides)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)


@dataclass(frozen=True)
class JobOutput:
    report: dict[str, Any]
    folder: Path


def load_all(paths: list[Path]) -> list[manifest.Manifest]:
    """Every manifest validated before any is run: one bad file means nothing is sent."""
    loaded: list[manifest.Manifest] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            loaded.append(manifest.load(path))
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    return loaded


async def run_manifest(
    job: manifest.Manifest,
    options: RunOptions,
    environ: Mapping[str, str],
    *,
    on_event: Callable[[Event], None] = lambda event: None,
    client: ImageClient | None = None,
    sleep: Sleep | None = None,
) -> JobOutput:
    """Send every item of ``job`` and write its images and report; returns the report."""
    for warning in job.warnings:
        log.warning("%s", warning)
    settings = config.resolve(job.api, job.limits, options.overrides, environ)
    store = JobStore(settings.output_dir / job.job)
    store.prepare()
    prices = pricing.PriceTable.default()
    async with _client(settings, options, client) as active:
        runner = Runner(
            job=job.job,
            client=active,
            store=store,
            policy=RetryPolicy.from_limits(settings.limits),
            references=ReferenceLoader(settings.limits.max_reference_bytes),
            concurrency=settings.limits.concurrency,
            on_event=on_event,
            sleep=sleep,
        )
        run = await runner.run(
            job.items, partial(plan_item, reference_field=settings.reference_field, prices=prices)
        )
    report = build_report(
        job=job.job,
        manifest=str(job.path),
        outcomes=run.outcomes,
        aborted=run.aborted,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )
    store.write_json("report.json", report)
    return JobOutput(report, store.root)


@contextlib.asynccontextmanager
async def _client(
    settings: config.RunSettings, options: RunOptions, given: ImageClient | None
) -> AsyncIterator[ImageClient]:
    if given is not None:
        yield given
        return
    async with contextlib.AsyncExitStack() as stack:
        base_url = settings.base_url
        if options.overrides.simulate:
            sim = await stack.enter_async_context(Simulator(options.simulator))
            base_url = sim.base_url
            log.info("simulating the service at %s", base_url)
        http = HttpImageClient(base_url, settings.api_key, timeout_s=settings.limits.timeout_s)
        yield await stack.enter_async_context(http)
