"""What a re-run does with each item, given what the journal says about it.

docs/nightly.md describes the same rules for users.
"""

from __future__ import annotations

import enum

from batchgen.output.journal import Entry


class Mode(enum.StrEnum):
    RUN = "run"  # send what is not done with this exact request
    ONLY_FAILED = "only_failed"  # send pending items and retryable failures
    ALL_FAILED = "all_failed"  # ... and refusals and invalid requests too
    FORCE = "force"  # send everything
    REDO = "redo"  # send only the items a person named (as FORCE); leave every other item as it is


class Action(enum.StrEnum):
    SEND = "send"
    SKIP = "skip"  # done by an earlier run: report it as skipped
    KEEP = "keep"  # failed earlier and not to be resent: report that failure
    FETCH = "fetch"  # made and billed earlier, but its link failed: fetch it, do not make it again
    LEAVE = "leave"  # never finished, and this run is not the one to send it: report it pending


def decide(entry: Entry | None, fingerprint: str, files_intact: bool, mode: Mode) -> Action:
    """Pure: the journal's last word on an item, and this run's request, to an action."""
    if mode is Mode.REDO:  # an item the redo does not name
        if entry is None or (entry.succeeded and not files_intact):
            return Action.LEAVE
        return Action.SKIP if entry.succeeded else Action.KEEP
    if mode is Mode.FORCE or entry is None:
        return Action.SEND
    if entry.succeeded:
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
