"""What a re-run does with each item, given what the journal says about it (SPEC §5)."""

from __future__ import annotations

import enum
import os
from pathlib import Path

from .journal import Entry


class Mode(enum.StrEnum):
    RUN = "run"  # send what is not done with this exact request
    ONLY_FAILED = "only_failed"  # send pending items and retryable failures
    ALL_FAILED = "all_failed"  # ... and refusals and invalid requests too
    FORCE = "force"  # send everything


class Action(enum.StrEnum):
    SEND = "send"
    SKIP = "skip"  # done by an earlier run: report it as skipped
    KEEP = "keep"  # failed earlier and not to be resent: report that failure
    FETCH = "fetch"  # made and billed earlier, but its link failed: fetch it, do not make it again


def decide(entry: Entry | None, fingerprint: str, files_intact: bool, mode: Mode) -> Action:
    """Pure: the journal's last word on an item, and this run's request, to an action."""
    if mode is Mode.FORCE or entry is None:
        return Action.SEND
    if entry.status == "succeeded":
        if not files_intact:
            return Action.SEND  # someone deleted or truncated its images
        if mode is Mode.RUN and entry.fingerprint != fingerprint:
            return Action.SEND  # the prompt, size or a reference changed
        return Action.SKIP
    if entry.refetchable:
        if mode is not Mode.RUN or entry.fingerprint == fingerprint:
            return Action.FETCH  # with --all-failed, made again should the links be dead
        return Action.SEND  # the request changed since: that image is not the one wanted now
    if mode in (Mode.RUN, Mode.ALL_FAILED) or entry.resent_by_retry:
        return Action.SEND
    return Action.KEEP


def files_intact(folder: Path, entry: Entry | None) -> bool:
    """Every file the journal recorded is there with its size.

    Size, not a hash: files are written atomically, so a damaged one is a
    missing or truncated one, and re-hashing gigabytes on every run would
    make re-runs of large catalogs slow.
    """
    if entry is None or not entry.files:
        return False
    for f in entry.files:
        try:
            if os.stat(folder / f.path).st_size != f.bytes:
                return False
        except OSError:
            return False
    return True
