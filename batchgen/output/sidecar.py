"""An item's sidecar, ``images/<id>.json``: what was asked for its images and what came back.

For people and scripts that look at one image: the request as sent (each reference image
described by its file and digest or its URL, never its bytes), the model, the service's
timestamp, the attempts and latency, and every file with its digest, size, type and pixel size. Written
next to the images each time they are made (``to_json``), kept in ``history/`` with them by
a redo, and read back by ``read``/``load``, which take whatever a sidecar of an older
batchgen holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from batchgen.output import paths
from batchgen.output.store import StoredFile


@dataclass(frozen=True, slots=True)
class Sidecar:
    id: str
    # The body as sent: the provider's format (model, prompt, size, n, response_format,
    # extra_fields), not batchgen's, so it stays a mapping.
    request: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    model: str = ""
    created: int | None = None  # the service's timestamp; None when it gave none (or a link was fetched)
    attempts: int = 0
    latency_s: float = 0.0
    files: tuple[StoredFile, ...] = ()
    estimated_cost: float = 0.0

    @property
    def path(self) -> str:
        return paths.sidecar(self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "request": dict(self.request),
            "model": self.model,
            "created": self.created,
            "attempts": self.attempts,
            "latency_s": self.latency_s,
            "files": [_file_json(f) for f in self.files],
            "estimated_cost": self.estimated_cost,
        }

    @classmethod
    def from_json(cls, data: object) -> Sidecar | None:
        """The sidecar in ``data``; None unless it is a JSON object. What a field lacks, or holds
        of the wrong kind, reads as its default: a sidecar is for looking at, and an odd one
        never stops a report."""
        if not isinstance(data, dict):
            return None
        request, created = data.get("request"), data.get("created")
        return cls(
            id=_text(data.get("id")),
            request=request if isinstance(request, dict) else {},
            model=_text(data.get("model")),
            created=created if isinstance(created, int) and not isinstance(created, bool) else None,
            attempts=int(_number(data.get("attempts"))),
            latency_s=float(_number(data.get("latency_s"))),
            files=_files(data.get("files")),
            estimated_cost=float(_number(data.get("estimated_cost"))),
        )


def read(folder: Path, item_id: str) -> Sidecar | None:
    """The sidecar of ``item_id`` in the job folder ``folder``; None if there is none to read."""
    return load(f"{folder}/{paths.sidecar(item_id)}")


def load(path: Path | str) -> Sidecar | None:
    """The sidecar in the file ``path`` (in ``images/`` or ``history/``); None if it cannot be read."""
    try:
        # A string path, one open and read, no Path.read_bytes: `batchgen report` reads one per item.
        fd = os.open(path, os.O_RDONLY)
        try:
            data = _read_all(fd)
        finally:
            os.close(fd)
        return Sidecar.from_json(orjson.loads(data))
    except (OSError, orjson.JSONDecodeError):
        return None


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _file_json(f: StoredFile) -> dict[str, Any]:
    line: dict[str, Any] = {"path": f.path, "sha256": f.sha256, "bytes": f.bytes, "mime": f.mime}
    if f.pixels is not None:  # none in sidecars written before sizes were recorded
        line["width"], line["height"] = f.pixels
    return line


def _files(value: object) -> tuple[StoredFile, ...]:
    if not isinstance(value, list):
        return ()
    try:
        return tuple(
            StoredFile(
                str(f["path"]),
                str(f["sha256"]),
                int(f["bytes"]),
                str(f["mime"]),
                _pixel(f.get("width")),
                _pixel(f.get("height")),
            )
            for f in value
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return ()


def _pixel(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _number(value: object) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return 0
