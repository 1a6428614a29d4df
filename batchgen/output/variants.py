"""The derived files of a job folder: what a variant is, where its files go, and its record.

A variant is an image made from each paid original (docs/variants.md): a channel's size, framing
and format, or the gallery's thumbnail (the built-in ``thumb``). Its files live at
``variants/<name>/<stem>.<ext>`` (``thumbs/<stem>.webp`` for ``thumb``), and what was made from
which original, with which spec, is recorded per item in ``derived/<id>.json`` (``Record``):
the next run compares it to know what to make again, and never has to ask the relay for anything.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from batchgen.output import durable

FOLDER = "variants"
THUMBS = "thumbs"
RECORDS = "derived"
THUMB_NAME = "thumb"
# Bumped when rendering changes what a spec makes: every variant is then made again.
RENDERER = 1
FORMATS = ("jpeg", "webp", "png", "avif")
EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "png": "png", "avif": "avif"}
FITS = ("pad", "crop", "contain")
DEFAULT_QUALITY = {"jpeg": 90, "webp": 82, "avif": 70}
DEFAULT_BACKGROUND = "#ffffff"
UPSCALE_FLAG = 1.25  # enlarged more than this: recorded, so nobody ships a blown-up 1K as 2K


@dataclass(frozen=True, slots=True)
class Variant:
    """How to make one variant. ``width``/``height``: the box (``fit`` says how the image goes in
    it), or one side alone with the other ``None`` (the aspect kept)."""

    name: str
    format: str
    width: int | None = None
    height: int | None = None
    fit: str = "contain"
    quality: int | None = None
    background: str = DEFAULT_BACKGROUND
    metadata: bool = True
    enlarge: bool = True  # False: never larger than the original (the thumbnail)
    effort: int = 2  # WebP's method (0-6): below Pillow's 4, trading a little size for speed

    @property
    def ext(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def folder(self) -> str:
        return THUMBS if self.name == THUMB_NAME else f"{FOLDER}/{self.name}"

    def path(self, image: str) -> str:
        """``images/a-1.png`` -> ``variants/<name>/a-1.<ext>``: the same stem, in the variant's folder."""
        return f"{self.folder}/{PurePosixPath(image).stem}.{self.ext}"

    def fingerprint(self, meta: Mapping[str, str]) -> str:
        """What the file depends on besides the original: the spec, the renderer, and the
        metadata it carries (none when ``metadata`` is false)."""
        what = [RENDERER, _fields(self), dict(meta) if self.metadata else None]
        return hashlib.sha256(orjson.dumps(what, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


@functools.cache
def _fields(variant: Variant) -> dict[str, Any]:
    """``asdict``, once per variant: it copies deeply, and each item's fingerprint needs it."""
    return asdict(variant)


# The gallery's preview: long side 384, never enlarged, WebP; gallery.html finds it by ``thumb_path``.
THUMB = Variant(THUMB_NAME, "webp", 384, 384, "contain", 80, metadata=False, enlarge=False)


def thumb_path(image: str) -> str:
    """``images/a-1.png`` -> ``thumbs/a-1.webp``: the rule ``thumbOf`` in gallery.html follows."""
    return THUMB.path(image)


def record_path(item_id: str) -> str:
    return f"{RECORDS}/{item_id}.json"


@dataclass(frozen=True, slots=True)
class VariantFile:
    """One variant file as made: from which original, by which spec, and what it came to."""

    spec: str  # the spec's fingerprint
    source: str  # the original's sha256
    path: str
    bytes: int
    sha256: str
    scale: float  # how much the original was enlarged (>1) or reduced (<1)

    @property
    def upscaled(self) -> bool:
        return self.scale > UPSCALE_FLAG


@dataclass
class Record:
    """``derived/<id>.json``: per original (its path) and variant name, the file made from it.
    Written by the worker that made them (``derive.derive_item``), read by the next one."""

    made: dict[str, dict[str, VariantFile]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "images": {image: {n: asdict(m) for n, m in sorted(v.items())} for image, v in self.made.items()},
        }

    @classmethod
    def from_json(cls, data: object) -> Record:
        """The record in ``data``; an empty one for anything else (everything is then made again)."""
        if not isinstance(data, dict) or data.get("format") != 1:
            return cls()
        try:
            images = data["images"]
            return cls({str(i): {str(n): VariantFile(**m) for n, m in v.items()} for i, v in images.items()})
        except (KeyError, TypeError, AttributeError):
            return cls()


def tidy(root: os.PathLike[str] | str) -> None:
    """Remove the temporary files a killed worker left in the derived folders (one listing each)."""
    folder = os.fspath(root)
    try:
        subs = [f"{FOLDER}/{n}" for n in os.listdir(os.path.join(folder, FOLDER))]
    except OSError:
        subs = []
    for sub in (THUMBS, RECORDS, *subs):
        with contextlib.suppress(OSError):  # a folder not made yet
            durable.sweep(Path(folder, sub))


def forget(root: os.PathLike[str] | str, item_id: str, images: Iterable[str]) -> None:
    """Remove what was derived from ``images`` (an item's originals, about to be replaced by a
    redo): a thumbnail or variant of the old picture never stands beside the new one."""
    folder = os.fspath(root)
    record = os.path.join(folder, record_path(item_id))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record)
    stems = {PurePosixPath(image).stem for image in images}
    try:
        names = [f"{FOLDER}/{n}" for n in os.listdir(os.path.join(folder, FOLDER))]
    except OSError:
        names = []
    for sub in (THUMBS, *names):
        for stem in stems:
            for ext in {*EXTENSIONS.values()}:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, sub, f"{stem}.{ext}"))
