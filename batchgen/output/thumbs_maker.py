"""The thumbnail maker: a process of its own that makes the thumbnails a run hands it.

Over its pipe the run writes an image path (relative to the job folder) per line, and reads a
line per image the maker finished, made or not. ``start`` is the run's end of the pipe;
``serve`` the maker's, run as ``python -m batchgen.output.thumbs FOLDER``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

# The maker's entry point: thumbs, which hands ``serve`` its ``from_disk`` (this module cannot
# import thumbs, which imports it). tests/test_container.py finds the maker by this name.
ENTRY = "batchgen.output.thumbs"

# Makers still running: kept referenced until seen to end, so that none is reported as leaked
# (a Popen dropped while its process runs warns) and each ended one is reaped.
_running: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    _running[:] = [worker for worker in _running if worker.poll() is None]


def start(folder: Path, finished: Callable[[], None]) -> subprocess.Popen[bytes]:
    """The maker of ``folder``'s thumbnails, started; ``finished`` is called, from a thread of
    its own, for each image the maker says it finished. OSError when it cannot start."""
    _reap()
    # The batchgen the parent runs, whatever the environment says.
    here = str(Path(__file__).resolve().parent.parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", ENTRY, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,  # a line per image finished, while this process listens
        # Nothing of the caller's: a pipe it left open would keep whoever reads the run's
        # output (a CI step, `| tee`) waiting until the last thumbnail; a Ctrl-C or a
        # closed terminal that stops the run does not stop the thumbnails of what it made.
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    _running.append(worker)
    threading.Thread(
        target=_listen, args=(worker, finished), name="batchgen-thumbs-done", daemon=True
    ).start()
    return worker


def _listen(worker: subprocess.Popen[bytes], finished: Callable[[], None]) -> None:
    assert worker.stdout is not None
    with contextlib.suppress(OSError, ValueError), worker.stdout as told:
        for _ in told:
            finished()


def serve(folder: Path, from_disk: Callable[[Path, str], object]) -> None:
    """The maker's process: an image path per line on stdin, each made with ``from_disk``, until
    the end of it or SIGTERM (which ends the current thumbnail cleanly: ``thumbs.write``
    removes its temp file).

    A thread reads the pipe as it comes, so that the run writing into it never waits for the
    thumbnails and can hand over the rest of its list the moment it ends.
    """

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(AttributeError, OSError):
        os.nice(19)  # a whole process: the scheduler, not the GIL, decides who waits
    todo: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def read() -> None:
        try:
            for line in sys.stdin.buffer:
                todo.put(line.rstrip(b"\n").decode())
        finally:
            todo.put(None)

    threading.Thread(target=read, name="batchgen-thumbs-reader", daemon=True).start()
    told = True  # the run listens for a line per image finished, until it ends
    while (image := todo.get()) is not None and folder.is_dir():  # a removed job: nothing to do
        with contextlib.suppress(OSError):  # the image is safe; the gallery shows it in full instead
            from_disk(folder, image)
        if told:
            try:
                sys.stdout.buffer.write(b"\n")
                sys.stdout.buffer.flush()
            except OSError:  # the run has ended
                told = False
