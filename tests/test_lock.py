"""One run per job folder, and a holder killed with -9 leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.errors import JobLockedError
from batchgen.output.lock import JobLock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    with JobLock(tmp_path), pytest.raises(JobLockedError, match=f"pid {os.getpid()}"):
        JobLock(tmp_path).__enter__()
    with JobLock(tmp_path):  # released on exit
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from batchgen.output.lock import JobLock\n"
        f"lock = JobLock(Path({str(tmp_path)!r})).__enter__(); print('held', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(JobLockedError, match=f"pid {holder.pid}"):
                JobLock(tmp_path).__enter__()
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
    with JobLock(tmp_path):
        pass
