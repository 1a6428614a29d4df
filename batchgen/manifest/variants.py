"""The manifest's ``variants:`` section, and an item's ``variants:`` list (docs/variants.md).

``VARIANT_FIELDS`` is the table of a variant's keys that the checks here and the JSON Schema
(``schema``) both read. A mistake is reported with the variant's name and field; the variants
that are good come back as the ``Variant`` records the derivation stage renders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import features

from batchgen.manifest.fields import VARIANT_NAME as NAME
from batchgen.manifest.fields import VARIANT_NAME_HELP as NAME_HELP
from batchgen.manifest.fields import Checked, Key
from batchgen.manifest.problems import Problems
from batchgen.output.variants import (
    DEFAULT_BACKGROUND,
    FITS,
    FORMATS,
    THUMB_NAME,
    Variant,
)

SIZE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
MAX_SIDE = 16384
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
LOSSLESS = ("png",)

VARIANT_FIELDS: Mapping[str, Key] = {
    "size": Key(
        "The box WxH the variant fills, as fit says (with fit); or give width and/or height instead.",
        {"type": "string", "pattern": SIZE.pattern},
    ),
    "fit": Key(
        "With size: pad (the whole image inside, centred, padded with background), crop (fills the"
        " box, centre crop) or contain (the whole image inside, no padding).",
        {"enum": list(FITS), "default": "contain"},
    ),
    "width": Key(
        "Without size: the width, the aspect kept (with height too: the whole image inside both).",
        {"type": "integer", "minimum": 1, "maximum": MAX_SIDE},
    ),
    "height": Key(
        "Without size: the height, the aspect kept.",
        {"type": "integer", "minimum": 1, "maximum": MAX_SIDE},
    ),
    "format": Key(
        "The file format (avif only where the installed Pillow writes it).",
        {"enum": list(FORMATS)},
        required=True,
    ),
    "quality": Key(
        "1-100, for jpeg, webp and avif (png is lossless).",
        {"type": "integer", "minimum": 1, "maximum": 100},
    ),
    "background": Key(
        "#rrggbb: what pad fills with, and what transparency is flattened onto for JPEG.",
        {"type": "string", "pattern": COLOUR.pattern, "default": DEFAULT_BACKGROUND},
    ),
    "metadata": Key(
        "XMP with the item's id, prompt, model, size and job in the file; false writes none.",
        {"type": "boolean", "default": True},
    ),
}
VARIANT_KEYS = tuple(VARIANT_FIELDS)


def writable(fmt: str) -> bool:
    """Whether the installed Pillow writes ``fmt``."""
    return fmt != "avif" or bool(features.check("avif"))


def section(raw: Any, problems: Problems) -> dict[str, Variant]:
    """The good variants of a manifest's ``variants:`` mapping; every mistake reported."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.error(f"must be a mapping of names to variants, not {type(raw).__name__}", "variants")
        return {}
    found: dict[str, Variant] = {}
    for name, spec in raw.items():
        where = f"variants.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            problems.error(f"the name {name!r} {NAME_HELP}", "variants")
        elif name == THUMB_NAME:
            problems.error("is reserved for the gallery's thumbnails; name the variant otherwise", where)
        elif not isinstance(spec, dict):
            problems.error(f"must be a mapping (size, format, ...), not {type(spec).__name__}", where)
        elif (variant := _variant(name, spec, problems)) is not None:
            found[name] = variant
    return found


def _variant(name: str, raw: dict[str, Any], problems: Problems) -> Variant | None:
    where = f"variants.{name}"
    before = len(problems.errors)
    problems.unknown_keys(raw, VARIANT_KEYS, f"{where}.")
    box = _box(raw, where, problems)
    fmt = raw.get("format")
    if fmt is None:
        problems.error(f"is required: one of {', '.join(FORMATS)}", f"{where}.format")
    elif fmt not in FORMATS:
        problems.error(f"must be one of {', '.join(FORMATS)}, not {fmt!r}", f"{where}.format")
    elif not writable(fmt):
        problems.error(
            f"{fmt}: the installed Pillow cannot write it; choose another format", f"{where}.format"
        )
    quality = raw.get("quality")
    if quality is not None:
        error = _quality(quality, fmt)
        if error:
            problems.error(error, f"{where}.quality")
    background = raw.get("background", DEFAULT_BACKGROUND)
    if not isinstance(background, str) or not COLOUR.match(background):
        problems.error(f'must be a colour "#rrggbb", not {background!r}', f"{where}.background")
    metadata = raw.get("metadata", True)
    if not isinstance(metadata, bool):
        problems.error(f"must be true or false, not {metadata!r}", f"{where}.metadata")
    if len(problems.errors) > before or box is None or not isinstance(fmt, str):
        return None
    width, height, fit = box
    return Variant(name, fmt, width, height, fit, quality, background.lower(), metadata)


def _box(raw: dict[str, Any], where: str, problems: Problems) -> tuple[int | None, int | None, str] | None:
    """(width, height, fit) from ``size`` and ``fit``, or from ``width``/``height``."""
    size, fit = raw.get("size"), raw.get("fit")
    if size is not None:
        match = SIZE.match(size) if isinstance(size, str) else None
        if match is None or max(int(match[1]), int(match[2])) > MAX_SIDE:
            problems.error(
                f"must be WxH in pixels (each side 1-{MAX_SIDE}), like 2000x2000, not {size!r}",
                f"{where}.size",
            )
            return None
        if "width" in raw or "height" in raw:
            problems.error("give size, or width/height, not both", f"{where}.size")
            return None
        if fit is not None and fit not in FITS:
            problems.error(f"must be one of {', '.join(FITS)}, not {fit!r}", f"{where}.fit")
            return None
        return int(match[1]), int(match[2]), fit or "contain"
    if fit is not None:
        problems.error("goes with size WxH; width or height alone keep the aspect", f"{where}.fit")
        return None
    sides = {key: raw.get(key) for key in ("width", "height") if raw.get(key) is not None}
    if not sides:
        problems.error("is required: size WxH (with fit), or width and/or height", f"{where}.size")
        return None
    for key, value in sides.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
            problems.error(
                f"must be a whole number of pixels from 1 to {MAX_SIDE}, not {value!r}", f"{where}.{key}"
            )
            return None
    return sides.get("width"), sides.get("height"), "contain"


def _quality(value: Any, fmt: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        return f"must be a whole number from 1 to 100, not {value!r}"
    if fmt in LOSSLESS:
        return f"{fmt} is lossless: quality does not apply (remove it)"
    return None


def check_choice(value: Any, known: Sequence[str]) -> Checked:
    """An item's ``variants:`` list against the names the job's ``variants:`` section gives
    (a variant with a mistake of its own is reported there, not again for each item)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None, "must be a list of variant names, like [amazon, web]; [] for none"
    unknown = [v for v in value if v not in known]
    if unknown:
        have = ", ".join(known) or "none: the manifest has no variants section"
        return None, f"names {', '.join(map(repr, unknown))}, not a variant of this job (it has {have})"
    if len(set(value)) != len(value):
        return None, "names a variant twice"
    return tuple(value), None
