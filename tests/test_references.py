"""Reference images read at send time: what is cached, and when a cached one is read again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchgen.manifest.references import LocalReference, ReferenceLoader

from .conftest import png_bytes


def edit_in_place(path: Path, data: bytes) -> None:
    """Another picture of the same size, and a modification time one second later: an editor's save."""
    before = path.stat()
    assert len(data) == before.st_size  # so that only the time tells the edit apart
    path.write_bytes(data)
    later = before.st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))


@pytest.mark.parametrize("read", ["load", "digest"])
def test_an_edited_reference_is_read_again(tmp_path: Path, read: str) -> None:
    first, second = png_bytes(hue=1), png_bytes(hue=2)
    assert first != second
    path = tmp_path / "style.png"
    path.write_bytes(first)
    ref = LocalReference(path, "style.png")
    loader = ReferenceLoader(20_000_000)

    def current(reader: ReferenceLoader) -> str:
        return reader.load(ref).uri if read == "load" else reader.digest(ref)

    before = current(loader)
    assert current(loader) == before  # cached: the same answer while the file is unchanged
    edit_in_place(path, second)
    after = current(loader)
    assert after != before
    assert after == current(ReferenceLoader(20_000_000))  # what a loader that never saw the old one reads
