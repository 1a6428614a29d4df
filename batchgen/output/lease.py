"""One run per job folder in a bucket: a lock object with a lease, renewed while the run lives.

A bucket has no flock, and a pod that dies never says so: the lock (``.lock`` in the job's
folder) says who holds it and until when, and is written only by conditional writes (create
if absent, replace only the version read), so two runs can never both believe they hold it.
A holder renews it every third of its lease; one that stops renewing loses it when the lease
runs out. The holder is named by a token kept in the spool: a run from the same work dir (its
last run died, or lost the store and could not release it) takes the lock back at once.
Expiry is judged by the clocks of the machines involved: they are assumed to agree to well
within a lease (docs/storage.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from types import TracebackType

import orjson

from batchgen.errors import JobLockedError, StoreError, UsageError
from batchgen.output.bucket import Bucket

log = logging.getLogger(__name__)

LOCK_OBJECT = ".lock"
OWNER_FILE = ".lock-owner"  # in the spool: who this work dir is, to the lock


def owner_token(spool: Path) -> str:
    """This work dir's name for itself, made once and kept."""
    path = spool / OWNER_FILE
    with contextlib.suppress(OSError):
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_hex(16)
    path.write_text(token + "\n")
    return token


class BucketLock:
    """``async with BucketLock(bucket, token, lease_s)``: held for the block, or JobLockedError."""

    def __init__(self, bucket: Bucket, token: str, lease_s: float) -> None:
        if not lease_s > 0:
            raise UsageError(f"--lock-lease must be more than 0 seconds, not {lease_s:g}")
        self.bucket = bucket
        self.token = token
        self.lease_s = lease_s
        self._e_tag: str | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.lost = False  # another run took it while this one could not renew it

    def _body(self) -> bytes:
        return orjson.dumps(
            {
                "owner": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "expires_at": time.time() + self.lease_s,
                "lease_s": self.lease_s,
            }
        )

    async def acquire(self) -> None:
        """Take the lock, or raise JobLockedError saying who holds it and for how long."""
        for _ in range(3):  # another run may come and go between our read and our write
            e_tag = await self.bucket.put_if(LOCK_OBJECT, self._body(), None)
            if e_tag is not None:
                self._e_tag = e_tag
                return
            found = await self.bucket.get(LOCK_OBJECT)
            if found is None:
                continue
            data, current = found
            holder = _holder(data)
            expires = holder.get("expires_at", 0)
            left = (expires if isinstance(expires, int | float) else 0) - time.time()
            if holder.get("owner") != self.token and left > 0:
                raise JobLockedError(
                    f"{self.bucket} is in use by another batchgen run (host {holder.get('host', '?')},"
                    f" pid {holder.get('pid', '?')}); its lease runs out in {left:.0f} s unless renewed:"
                    " wait for that run to finish, or for its lease to expire"
                )
            if holder.get("owner") != self.token:
                log.warning(
                    "%s: taking over a lock whose lease ran out (host %s)",
                    self.bucket,
                    holder.get("host", "?"),
                )
            e_tag = await self.bucket.put_if(LOCK_OBJECT, self._body(), current)
            if e_tag is not None:
                self._e_tag = e_tag
                return
        raise JobLockedError(f"{self.bucket}: another batchgen run is taking the lock at the same moment")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                e_tag = await self.bucket.put_if(LOCK_OBJECT, self._body(), self._e_tag)
            except StoreError as exc:
                log.warning("cannot renew the lock: %s", exc)
                continue
            if e_tag is None:
                self.lost = True
                log.error("%s: another run took the lock after this one could not renew it", self.bucket)
                return
            self._e_tag = e_tag

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self.lost or self._e_tag is None:
            return
        try:
            # Replace our version with an expired one, conditionally, so a lock another run took
            # meanwhile is never deleted; then delete it.
            body = orjson.dumps({"owner": self.token, "expires_at": 0})
            if await self.bucket.put_if(LOCK_OBJECT, body, self._e_tag) is not None:
                await self.bucket.delete(LOCK_OBJECT)
        except StoreError as exc:
            log.warning("cannot release the lock (the next run from this work dir takes it back): %s", exc)

    async def __aenter__(self) -> BucketLock:
        await self.acquire()
        self._renewer = asyncio.create_task(self._renew())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


def _holder(data: bytes) -> dict[str, object]:
    try:
        holder = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}
