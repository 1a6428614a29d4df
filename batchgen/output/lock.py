"""One run per job folder: an flock, which the kernel drops when its holder dies, even by kill -9."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import ModuleType, TracebackType

from batchgen.errors import JobLockedError, UsageError
from batchgen.output import paths


class JobLock:
    def __init__(self, folder: Path) -> None:
        self.path = folder / paths.LOCK
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        fcntl = _fcntl()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise JobLockedError(
                f"{self.path.parent} is in use by another batchgen run (pid {holder});"
                " wait for it to finish, or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl = _fcntl()
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return "unknown"
    return text or "unknown"


def _fcntl() -> ModuleType:
    """The module with flock, imported when a job folder is locked, not when batchgen starts:
    so that ``--help``, ``validate``, ``schema`` and ``completion`` work on any system."""
    try:
        import fcntl
    except ImportError:
        raise UsageError(
            "running a job needs Linux or macOS (job folders are locked with flock);"
            " on Windows, use WSL or the container image"
        ) from None
    return fcntl
