"""Gallery thumbnails: ``images/<stem>.<ext>`` -> ``thumbs/<stem>.webp``, long side 384 px.

This module owns the ``thumbs/`` folder of a job: where an image's thumbnail lives, how it is
made (Pillow: upright, transparency kept, never upscaled, WebP) and put in place whole, and
which images still lack one. Everything here blocks and is CPU-bound (Pillow releases the GIL
while it decodes, resizes and encodes): during a run they are made by a process of its own
(``Background``) as each image is written, finishing after the run if it must, and ``batchgen
report`` backfills what is still missing. A thumbnail is only ever looked at and can always be
made again: no fsync, and an image that cannot be read gets none (the gallery then shows the
image itself).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import IO

from PIL import ExifTags, Image

log = logging.getLogger(__name__)

LONG_SIDE = 384
FOLDER = "thumbs"
QUALITY = 80
# WebP effort 0-6. Measured at 384 x 384: 2 encodes in ~10 ms, Pillow's default 4 in ~20 ms and
# 6 in ~55 ms for 1-2% fewer bytes; 0 and 1 save 2-3 ms and make files 8-10% larger.
METHOD = 2
# Resize in two steps: an integer box reduction (for JPEG: DCT scaling while decoding) to at
# least twice the final size, then Lanczos. Far faster than Lanczos from the full image, and
# Pillow documents the result as indistinguishable from it from 3.0 up; 2.0 is its default.
REDUCING_GAP = 2.0
# The EXIF orientations, as ImageOps.exif_transpose applies them; here applied after resizing,
# to the thumbnail rather than to the full image.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_TEMP_PREFIX = ".batchgen-"
_TEMP_SUFFIX = ".tmp"


def thumb_path(image: str) -> str:
    """``images/a-1.png`` -> ``thumbs/a-1.webp``: the first folder replaced, the last extension.

    The same rule as ``thumbOf`` in gallery.html, which finds the thumbnails by it.
    """
    parts = PurePosixPath(image).parts
    inside = PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath(image)
    return str(PurePosixPath(FOLDER) / inside.with_suffix(".webp"))


def make(data: bytes) -> bytes | None:
    """The WebP thumbnail of the image in ``data``, or None when Pillow cannot read it.

    Long side ``LONG_SIDE`` (never upscaled), aspect kept, upright by its EXIF orientation,
    RGBA when the image has any transparency, RGB otherwise; an animation gives its first
    frame. None too for more pixels than ``Image.MAX_IMAGE_PIXELS``, where Pillow warns of a
    possible decompression bomb (89 million; a 4096 x 4096 image has 17).
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and opened.width * opened.height > limit:
                return None  # what Pillow warns may be a decompression bomb: not worth the memory
            return _thumbnail(opened)
    except (
        OSError,  # UnidentifiedImageError, truncated or corrupt data
        ValueError,  # broken headers and chunks show up as these three
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        # Under -W error (the tests) Pillow's warnings are raised: a possible bomb, corrupt EXIF.
        Image.DecompressionBombWarning,
        UserWarning,
    ):
        return None


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


def _thumbnail(opened: Image.Image) -> bytes:
    width, height = opened.size
    scale = min(1.0, LONG_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0:
        # JPEG (and MPO) decode at 1/2, 1/4 or 1/8 scale, still at least REDUCING_GAP times the
        # final size: far faster. Other formats ignore it.
        opened.draft(None, (int(size[0] * REDUCING_GAP), int(size[1] * REDUCING_GAP)))
    upright = _UPRIGHT.get(_orientation(opened))
    # A colour profile describes RGB data; one for CMYK or grey would be wrong once converted.
    icc = opened.info.get("icc_profile") if opened.mode in ("RGB", "RGBA", "P", "PA") else None
    picture = _rgb_or_rgba(opened)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    if upright is not None:
        picture = picture.transpose(upright)
    out = io.BytesIO()
    picture.save(out, format="WEBP", quality=QUALITY, method=METHOD, icc_profile=icc or None)
    return out.getvalue()


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 when there is none or it cannot be read."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, TypeError, IndexError):
        return 1  # a broken EXIF block: the pixels are still worth a thumbnail
    return value if isinstance(value, int) else 1


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in _SIXTEEN_BIT:
        # convert() would clip 0-65535 to 0-255 (nearly all white): scale down instead.
        return image.convert("I").point(lambda value: value / 256).convert("L").convert("RGB")
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


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

    def _start(self) -> subprocess.Popen[bytes] | None:
        """The maker, started when it is first handed an image: its start (an interpreter,
        Pillow) costs a few hundred milliseconds of CPU that a busy run should not share."""
        _reap()
        # The batchgen the parent runs, whatever the environment says.
        here = str(Path(__file__).resolve().parent.parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p),
        }
        try:
            self._worker = subprocess.Popen(
                [sys.executable, "-m", "batchgen.output.thumbs", str(self.folder)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # a line per image finished, while this process listens
                # Nothing of the caller's: a pipe it left open would keep whoever reads the run's
                # output (a CI step, `| tee`) waiting until the last thumbnail; a Ctrl-C or a
                # closed terminal that stops the run does not stop the thumbnails of what it made.
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            log.warning("cannot start the thumbnail maker (%s): `batchgen report` makes them later", exc)
            return None
        _running.append(self._worker)
        threading.Thread(target=self._listen, name="batchgen-thumbs-done", daemon=True).start()
        return self._worker

    def _listen(self) -> None:
        assert self._worker is not None
        assert self._worker.stdout is not None
        with contextlib.suppress(OSError, ValueError), self._worker.stdout as told:
            for _ in told:
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
        worker = self._start()
        return None if worker is None else worker.stdin

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


# Makers still running: kept referenced until seen to end, so that none is reported as leaked
# (a Popen dropped while its process runs warns) and each ended one is reaped.
_running: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    _running[:] = [worker for worker in _running if worker.poll() is None]


def _serve(folder: Path) -> None:
    """The thumbnail maker's process: an image path per line on stdin, made until the end of it
    or SIGTERM (which ends the current thumbnail cleanly: ``write`` removes its temp file).

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


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
