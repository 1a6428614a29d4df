"""The check of what arrived (docs/real-service.md, "What arrived: the size check"): an item's
images against the shape its request asked for. A paid image that is not what was asked for is
kept and flagged, never retried: it was billed, and whether to pay again is the user's call."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from batchgen.outcomes import Flag
from batchgen.output.store import StoredFile
from batchgen.plan.plan import PlannedRequest

log = logging.getLogger(__name__)


def check(request: PlannedRequest, stored: Sequence[StoredFile], folder: str) -> tuple[Flag, ...]:
    """The flags ``stored`` (the item's images, as written in the job folder ``folder``, named as
    messages name it) earn; a warning for each flagged item. An image whose header could not be
    read is not judged."""
    wrong = [f for f in stored if f.pixels is not None and request.shape.mismatch(*f.pixels)]
    if not wrong:
        return ()
    got = ", ".join(f"{f.width}x{f.height}" for f in wrong)
    log.warning(
        "%s: %s: asked for %s, got %s; kept (it was billed): `batchgen redo %s --flag %s` makes it again",
        *(request.id, Flag.SIZE_MISMATCH.value, request.shape, got, folder, Flag.SIZE_MISMATCH.value),
    )
    return (Flag.SIZE_MISMATCH,)
