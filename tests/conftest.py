from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import yaml
from aioresponses import aioresponses

from batchgen.sim.images import png as _png
from batchgen.sim.settings import SimulatorConfig
from batchgen.sim.simulator import Simulator

CANARY_KEY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"

# Retries in tests: no real backoff, no honouring a simulator's Retry-After of seconds.
FAST_LIMITS = {"retry_base_s": 0.001, "retry_cap_s": 0.002, "max_retry_after_s": 0.0}


def png_bytes(width: int = 8, height: int = 8, hue: int = 1) -> bytes:
    return _png(width, height, hue, 0)


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Path]:
    """Write a manifest (a dict, dumped as YAML, or raw text) into a fresh folder."""
    counter = iter(range(1000))

    def write(data: dict[str, Any] | str, name: str | None = None, folder: Path | None = None) -> Path:
        folder = folder or tmp_path / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (name or f"job{next(counter)}.yaml")
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def ref_png(tmp_path: Path) -> Path:
    path = tmp_path / "jobs" / "refs" / "style.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes())
    return path


class ThreadedSimulator:
    """The simulator on its own loop in a thread, for code that runs its own asyncio.run()."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = Simulator(config)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Simulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.__aenter__(), self.loop).result(timeout=10)
        return self.sim

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.__aexit__(None, None, None), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def threaded_simulator() -> Iterator[Callable[..., Simulator]]:
    started: list[ThreadedSimulator] = []

    def start(**config: Any) -> Simulator:
        runner = ThreadedSimulator(SimulatorConfig(**config))
        started.append(runner)
        return runner.__enter__()

    yield start
    for runner in started:
        runner.__exit__(None, None, None)


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's new ``stream_writer``
    argument (pnuckowski/aioresponses#289, open). aiohttp only reads its
    ``output_size`` when, as here, the request was already sent."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


_NEEDS_COMPAT = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters


class MockedApi(aioresponses):  # type: ignore[misc]
    def add(self, *args: Any, **kwargs: Any) -> None:
        if _NEEDS_COMPAT:
            kwargs.setdefault("response_class", _CompatResponse)
        super().add(*args, **kwargs)


@pytest.fixture
def mocked() -> Iterator[MockedApi]:
    """aioresponses, working with the aiohttp we ship with."""
    with MockedApi() as m:
        yield m


def assert_png_whole(path: Path) -> None:
    """Every chunk complete with a good CRC, image data that inflates, IEND last."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, kinds, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert len(body) == length, f"{path}: chunk {kind!r} cut short"
        assert zlib.crc32(kind + body) == crc, f"{path}: chunk {kind!r} has a bad CRC"
        kinds.append(kind)
        if kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND", path
    zlib.decompress(idat)


@contextlib.contextmanager
def batchgen_logger_kept() -> Iterator[None]:
    """The CLI sets up the 'batchgen' logger for its process; tests must not leave that to the next."""
    logger = logging.getLogger("batchgen")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def _restore_batchgen_logger() -> Iterator[None]:
    with batchgen_logger_kept():
        yield


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the environment, and no base URL there to override the test's own."""
    monkeypatch.delenv("BATCHGEN_BASE_URL", raising=False)
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")


@pytest.fixture
def sim(threaded_simulator: Callable[..., Simulator]) -> Simulator:
    """A simulator with default settings, in its own thread."""
    return threaded_simulator()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per module (tests/browser.py); each test gets a context of its own. Not one
    per session: Playwright's sync API keeps an event loop running in this thread while it
    lives, and the async tests of the modules after it could not start theirs."""
    from .browser import CHROMIUM, FLAGS, playwright_api

    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in a context of its own; the test fails if the page's own script threw."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []
