"""Gallery thumbnails: ``images/<stem>.<ext>`` -> ``thumbs/<stem>.webp``, long side 384 px.

This module owns the ``thumbs/`` folder of a job: where an image's thumbnail lives, how it is
put in place whole (``thumbnail`` makes it: upright, transparency kept, never upscaled, WebP),
and which images still lack one. Making one blocks and is CPU-bound: during a run they are
made by a process of its own (``Background`` feeds it, ``thumbs_maker`` is it) as each image
is written, finishing after the run if it must, and ``batchgen report`` backfills what is
still missing. A thumbnail is only ever looked at and can always be made again: no fsync, and
an image that cannot be read gets none (the gallery then shows the image itself).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import IO

from batchgen.output import thumbs_maker
from batchgen.output.thumbnail import LONG_SIDE as LONG_SIDE
from batchgen.output.thumbnail import make

# tests/conftest.py waits here for the makers its tests started.
from batchgen.output.thumbs_maker import _reap as _reap
from batchgen.output.thumbs_maker import _running as _running

log = logging.getLogger(__name__)

FOLDER = "thumbs"
_TEMP_PREFIX = ".batchgen-"
_TEMP_SUFFIX = ".tmp"


def thumb_path(image: str) -> str:
    """``images/a-1.png`` -> ``thumbs/a-1.webp``: the first folder replaced, the last extension.

    The same rule as ``thumbOf`` in gallery.html, which finds the thumbnails by it.
    """
    parts = PurePosixPath(image).parts
    inside = PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath(image)
    return str(PurePosixPath(FOLDER) / inside.with_suffix(".webp"))


def write(folder: Path, image: str, data: bytes) -> str | None:
    """Make the thumbnail of ``data`` (the bytes of ``folder/image``) and rename it into place.

    Returns its path relative to ``folder``, or None when ``data`` is not a readable image.
    An OSError from writing propagates, and leaves no temporary file behind.
    """
    thumb = make(data)
    if thumb is None:
        return None
    relative = thumb_path(image)
    target = folder / relative
    if not folder.is_dir():  # the job folder was removed meanwhile: never made again for a thumbnail
        raise FileNotFoundError(errno.ENOENT, "the job folder is gone", str(folder))
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f"{_TEMP_PREFIX}{secrets.token_hex(8)}{_TEMP_SUFFIX}")
    try:
        temp.write_bytes(thumb)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return relative


def missing(folder: Path, images: Iterable[str]) -> list[str]:
    """Those of ``images`` (paths relative to ``folder``) that exist and have no thumbnail.

    One listing per folder involved (``images/`` and ``thumbs/``), not a stat per image.
    """
    listings: dict[str, frozenset[str]] = {}

    def present(relative: str) -> bool:
        parent, _, name = relative.rpartition("/")
        if parent not in listings:
            try:
                listings[parent] = frozenset(os.listdir(folder / parent))
            except OSError:
                listings[parent] = frozenset()
        return name in listings[parent]

    return [i for i in dict.fromkeys(images) if present(i) and not present(thumb_path(i))]


def from_disk(folder: Path, image: str) -> str | None:
    """``write`` for the image as it is on disk now: made again if a new version of the image
    was renamed over it while its thumbnail was being made, so that a slow maker never leaves
    the thumbnail of a picture that is gone."""
    while True:
        before = _identity(folder / image)
        made = write(folder, image, (folder / image).read_bytes())
        if made is None or _identity(folder / image) == before:
            return made


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def forget(folder: Path, images: Iterable[str]) -> None:
    """Remove the thumbnails of ``images``: they are about to be replaced by new versions."""
    for image in images:
        with contextlib.suppress(FileNotFoundError):
            (folder / thumb_path(image)).unlink()


def backfill(folder: Path, images: Iterable[str], workers: int = 4) -> int:
    """Make the thumbnails that ``images`` lack, reading each from disk; how many were made.

    An image that cannot be read, or whose thumbnail cannot be written, is skipped.
    """
    todo = missing(folder, images)
    if not todo:
        return 0

    def one(image: str) -> bool:
        try:
            return from_disk(folder, image) is not None
        except OSError:
            return False

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batchgen-thumbs") as pool:
        return sum(pool.map(one, todo))


class Background:
    """Thumbnails made by a process of its own, from the images on disk, while the run leaves the
    CPU to it, and finished after the run when it did not.

    Writing an image never waits for its thumbnail: its path goes on a queue, and one thread
    hands the paths to the maker over a pipe. A process, not a thread: a low-priority thread
    that the OS preempts while it holds the GIL keeps the event loop waiting. Neither is nice 19
    enough on a small machine: measured on 2 cores with 3 MB images at zero latency, a maker
    working beside a CPU-bound run cut its throughput by a third (86 -> 55 items/s). So the
    thread hands the maker an image only while this process used less than ``busy_share`` of a
    core over the last ``tick_s``, and never more than ``OUTSTANDING`` at a time (the maker
    tells it each one it finished). Against a real service a run mostly waits, and thumbnails
    are made as the images arrive; a run that keeps the CPU busy gets them at its end.

    The run does not wait for them (``close``): the maker is handed the rest and finishes it
    after the run, in a session of its own, and the gallery shows the image itself until its
    thumbnail is there. Any it could not make (a machine shut down first, a container stopped)
    ``batchgen report`` makes.
    """

    TICK_S = 0.1
    BUSY_SHARE = 0.5
    OUTSTANDING = 2

    def __init__(
        self,
        folder: Path,
        backlog: int = 50_000,
        *,
        tick_s: float = TICK_S,
        busy_share: float = BUSY_SHARE,
        cpu_share: Callable[[], float] | None = None,
    ) -> None:
        self.folder = folder
        self.handed = 0  # images handed to the maker
        self.made = 0  # of those, how many it said it finished (made, or could not be)
        self._tick_s = tick_s
        self._busy_share = busy_share
        self._cpu_share = cpu_share or _CpuShare()
        self._added: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=backlog)
        self._lock = threading.Lock()
        self._finished = threading.Condition()
        self._worker: subprocess.Popen[bytes] | None = None
        self._feeder: threading.Thread | None = None
        self._closed = False  # by close()

    def add(self, image: str) -> None:
        """Queue ``image`` (relative to the job folder); a full backlog leaves it for later.
        Called from the I/O threads."""
        with self._lock:
            if self._closed:
                return
            if self._feeder is None:
                self._feeder = threading.Thread(target=self._feed, name="batchgen-thumbs", daemon=True)
                self._feeder.start()
            try:
                self._queue.put_nowait(image)
            except queue.Full:
                return
            self._added.append(image)

    def wait_made(self, count: int, timeout: float) -> bool:
        """Whether the maker said it finished ``count`` images within ``timeout`` seconds."""
        with self._finished:
            return self._finished.wait_for(lambda: self.made >= count, timeout=timeout)

    def _one_made(self) -> None:
        with self._finished:
            self.made += 1
            self._finished.notify_all()

    def _feed(self) -> None:
        pending: collections.deque[str] = collections.deque()
        ending = False
        decided = time.monotonic()
        pipe = None
        with contextlib.suppress(OSError):  # the maker is gone: the rest is left for `report`
            while not ending:
                with contextlib.suppress(queue.Empty):
                    first = self._queue.get(timeout=self._tick_s)
                    for image in (first, *_drain(self._queue)):
                        if image is None:
                            ending = True
                        else:
                            pending.append(image)
                if ending or not pending or time.monotonic() - decided < self._tick_s:
                    continue
                decided = time.monotonic()
                if self._cpu_share() >= self._busy_share:
                    continue  # the run needs the CPU: its thumbnails wait
                if pipe is None and (pipe := self._pipe()) is None:
                    return  # no maker: `batchgen report` makes them
                while pending and self.handed - self.made < self.OUTSTANDING:
                    pipe.write(pending.popleft().encode() + b"\n")
                    self.handed += 1
                pipe.flush()
            # The end of the run: the maker gets the rest at once, and makes it after the run.
            if pending and pipe is None:
                pipe = self._pipe()
            if pipe is not None:
                pipe.write(b"".join(image.encode() + b"\n" for image in pending))
                self.handed += len(pending)
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()

    def _pipe(self) -> IO[bytes] | None:
        """The maker's stdin, the maker started when it is first handed an image: its start (an
        interpreter, Pillow) costs a few hundred milliseconds of CPU that a busy run should not share."""
        try:
            self._worker = thumbs_maker.start(self.folder, self._one_made)
        except OSError as exc:
            log.warning("cannot start the thumbnail maker (%s): `batchgen report` makes them later", exc)
            return None
        return self._worker.stdin

    def close(self, wait_s: float = 0.0, hand_over_s: float = 5.0) -> int:
        """Hand the maker the rest of the list and let it finish on its own, after waiting at
        most ``wait_s`` for it; how many thumbnails it had still to make then.

        Handing over takes milliseconds (the maker reads its pipe as fast as it is written);
        at most ``hand_over_s`` for a maker that gets no CPU at all, and what it was not
        handed then is left for ``batchgen report``.
        """
        with self._lock:
            feeder, self._closed = self._feeder, True  # no new ones from here on
        if feeder is None:
            return 0
        # A feeder that stopped (no maker, or it died) reads the queue no more: once the backlog
        # is full, a put that waited for room would wait for ever.
        if feeder.is_alive():
            deadline = time.monotonic() + hand_over_s
            with contextlib.suppress(queue.Full):  # it stopped meanwhile
                self._queue.put(None, timeout=hand_over_s)  # the end of the list, after every image queued
            feeder.join(timeout=max(0.0, deadline - time.monotonic()))
        worker = self._worker
        if worker is not None and wait_s > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=wait_s)
        return len(missing(self.folder, self._added))


class _CpuShare:
    """How much of one core this process (all its threads) used since the last call."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.monotonic()

    def __call__(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        share = (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        return share


def _drain(source: queue.Queue[str | None]) -> Iterator[str | None]:
    while True:
        try:
            yield source.get_nowait()
        except queue.Empty:
            return


if __name__ == "__main__":
    thumbs_maker.serve(Path(sys.argv[1]), from_disk)
