"""Item fields, one pure check each: a value in, the normalised value or an error out.

Warnings (things the service accepts but may ignore) are judged on the
finished item, once defaults are applied, by ``item_warnings``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchgen import relay

MAX_N = 10
MAX_PROMPT_CHARS = 32_000
MAX_REFERENCES = 14
RESPONSE_FORMATS = ("b64_json", "url")
ID_RULE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
ID_HELP = "must be 1-100 of A-Z a-z 0-9 . _ -, not start with '.', and contain no '..'"
# ID_RULE and the "no '..'" that ``check_id`` adds, as one pattern: what a JSON Schema can carry.
ID_PATTERN = r"^(?!.*\.\.)" + ID_RULE.pattern.removeprefix("^")
DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,")
VARIANT_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
VARIANT_NAME_HELP = "must be 1-32 of a-z 0-9 _ -"

Checked = tuple[Any, str | None]  # (normalised value, error message or None)


def prompt_slug(prompt: str) -> str:
    """The readable part of an id made for an item without one: the prompt's first words."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40].strip("-") or "item"


def check_id(value: str) -> str | None:
    """Why ``value`` cannot name an item or a job, or None."""
    if not ID_RULE.fullmatch(value) or ".." in value:  # fullmatch: `$` also matches before a final newline
        return f"{value!r} {ID_HELP}"
    return None


def _text(value: Any) -> str | None:
    """YAML reads 512 as an int; sizes are text to the service."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else None


def check_prompt(value: Any) -> Checked:
    if not isinstance(value, str) or not value.strip():
        return None, f"must be non-empty text, not {value!r} (quote it if YAML read it as another type)"
    if len(value) > MAX_PROMPT_CHARS:
        return None, f"is {len(value)} characters; at most {MAX_PROMPT_CHARS}"
    return value, None


def check_model(value: Any) -> Checked:
    if not isinstance(value, str) or not value.strip():
        return None, f"must be a model id like {relay.DEFAULT_MODEL!r}, not {value!r}"
    return value, None


def check_size(value: Any) -> Checked:
    size = _text(value)
    if size is None or not (size in relay.SIZES or relay.WXH.match(size)):
        return None, f"must be one of {', '.join(relay.SIZES)} or WxH, not {value!r}"
    return size, None


def check_n(value: Any) -> Checked:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_N:
        return None, f"must be a whole number from 1 to {MAX_N}, not {value!r}"
    return value, None


def check_response_format(value: Any) -> Checked:
    if value not in RESPONSE_FORMATS:
        return None, f"must be b64_json or url, not {value!r}"
    return value, None


def check_extra_fields(value: Any) -> Checked:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None, "must be a mapping of field names to values"
    return dict(value), None


def check_shorthand(value: Any) -> Checked:
    """``aspect_ratio`` / ``image_size``: unusual values only warn, but they must be text."""
    text = _text(value)
    if text is None or not text.strip():
        return None, f'must be text like "16:9" or "2K", not {value!r}'
    return text, None


@dataclass(frozen=True)
class Key:
    """One key of a manifest mapping, in a table its owning module keeps.

    The validator reads the table to know which keys exist (and, here, which check each
    gets); ``schema`` reads the same table for the JSON Schema, so a key added to a table
    appears in both. ``json`` says in JSON Schema what the check accepts, as far as JSON
    Schema can say it; the check function stays the judge, with its own messages.
    """

    help: str  # what an editor shows beside the key
    json: Mapping[str, Any]
    check: Callable[[Any], Checked] | None = None  # None: its owner checks it, with more context
    required: bool = False  # refused without it (an item: unless defaults set it)
    text: bool = False  # a generate template may build the value from {placeholders}


_TEXT = r"\S"  # a pattern for "not empty once stripped"
_SHORTHAND = {"anyOf": [{"type": "string", "pattern": _TEXT}, {"type": "integer"}]}
_REFERENCE = {
    "type": "string",
    "pattern": _TEXT,
    "if": {"pattern": "^data:"},
    "then": {"pattern": DATA_URI.pattern},
}

# Every item field, in the order messages list them ("known: id, prompt, ...").
ITEM_FIELDS: Mapping[str, Key] = {
    "id": Key(
        "Names the output files: 1-100 of A-Z a-z 0-9 . _ -, no leading '.', no '..'; unique, also"
        " ignoring case. Without one, an id is made from the prompt, stable across runs.",
        {"type": ["string", "null"], "pattern": ID_PATTERN},
        text=True,
    ),
    "prompt": Key(
        "The text of the request (required, in each item or in defaults).",
        {"type": "string", "pattern": _TEXT, "maxLength": MAX_PROMPT_CHARS},
        check_prompt,
        required=True,
        text=True,
    ),
    "model": Key(
        f"The model id; another than {' or '.join(relay.MODELS)} is sent as is, with a warning.",
        {
            "type": "string",
            "pattern": _TEXT,
            "default": relay.DEFAULT_MODEL,
            "examples": list(relay.MODELS),
        },
        check_model,
        text=True,
    ),
    "size": Key(
        f"One of {', '.join(relay.SIZES)}; another WxH is sent as is with a warning (the service"
        " answers it at its default resolution).",
        {
            "anyOf": [
                {"enum": [*relay.SIZES, *(int(s) for s in relay.SIZES if s.isdigit())]},
                {"type": "string", "pattern": relay.WXH.pattern},
            ],
            "default": relay.DEFAULT_SIZE,
        },
        check_size,
        text=True,
    ),
    "n": Key(
        f"Images per request, 1-{MAX_N}; files are <id>-1.png, <id>-2.png, ...",
        {"type": "integer", "minimum": 1, "maximum": MAX_N, "default": 1},
        check_n,
    ),
    "response_format": Key(
        "How the service answers; either kind of answer is handled.",
        {"enum": list(RESPONSE_FORMATS), "default": RESPONSE_FORMATS[0]},
        check_response_format,
        text=True,
    ),
    "aspect_ratio": Key(
        "Shorthand for extra_fields.aspect_ratio; an unusual ratio only warns.",
        {**_SHORTHAND, "examples": [*relay.ASPECT_RATIOS, *relay.EXTREME_RATIOS]},
        check_shorthand,
        text=True,
    ),
    "image_size": Key(
        "Shorthand for extra_fields.image_size; it beats what size implies.",
        {**_SHORTHAND, "examples": list(relay.IMAGE_SIZES)},
        check_shorthand,
        text=True,
    ),
    "references": Key(
        f"Up to {MAX_REFERENCES} reference images: URLs and data: URIs are sent as written; anything"
        " else is a file path relative to the manifest's folder (PNG, JPEG, WebP or GIF). @ID (or"
        " @ID#K) is the image of another item of the job, which is made first (docs/chains.md).",
        {"anyOf": [_REFERENCE, {"type": "array", "maxItems": MAX_REFERENCES, "items": _REFERENCE}]},
    ),
    "extra_fields": Key(
        "Any provider field, sent verbatim; unknown keys and unusual values only warn.",
        {"type": "object"},
        check_extra_fields,
    ),
    # Checked against the job's variants (manifest/variants.py); never part of the request.
    "variants": Key(
        "The job's variants this item gets, by name; default: all of them; [] none.",
        {"type": "array", "items": {"type": "string", "pattern": VARIANT_NAME.pattern}, "uniqueItems": True},
    ),
}

ITEM_KEYS = tuple(ITEM_FIELDS)
CHECKS: Mapping[str, Callable[[Any], Checked]] = {
    name: key.check for name, key in ITEM_FIELDS.items() if key.check is not None
}


def item_warnings(
    model: str, size: str, extra: Mapping[str, Any], reference_field: str
) -> list[tuple[str, str]]:
    """(field, message) for what the service takes but may ignore or answer oddly."""
    found = []
    if model not in relay.MODELS:
        found.append(("model", f"{model!r} is not one of {', '.join(relay.MODELS)}; sent as is"))
    if size not in relay.SIZES:
        found.append(
            ("size", f"{size} is not a size the service knows; it answers at its default resolution")
        )
    for key in extra:
        if key in relay.REFERENCE_LIKE_KEYS and key != reference_field:
            found.append(
                (
                    f"extra_fields.{key}",
                    f"looks like reference images, but references are sent (and read) under"
                    f" extra_fields.{reference_field}; the service ignores {key} and generates without"
                    " them. List them under references: instead",
                )
            )
        elif key not in relay.EXTRA_FIELDS and key != reference_field:
            found.append((f"extra_fields.{key}", "not a field the service documents; passed through as is"))
    image_size = extra.get("image_size")
    sizes = relay.model_sizes(model)
    if image_size is not None and image_size not in sizes:
        found.append(("image_size", f"{image_size!r} is not one of {', '.join(sizes)}; may be ignored"))
    ratio = extra.get("aspect_ratio")
    if ratio is not None and ratio not in relay.model_ratios(model):
        found.append(("aspect_ratio", f"{ratio!r} is not a ratio {model} is known to take; may be ignored"))
    return found


def contradictions(size: str | None, image_size: Any, ratio: Any) -> list[tuple[str, str]]:
    """(field, message) where one level (defaults, or one item) says two different things.

    Across levels there is no contradiction: the more specific level wins.
    """
    if size is None:
        return []
    found = []
    klass = relay.SIZES.get(size)
    if klass is not None and image_size is not None and image_size != klass:
        found.append(
            (
                "image_size",
                f"{image_size} disagrees with size {size} set beside it; the service goes by image_size",
            )
        )
    shape = relay.WXH.match(size)
    if shape and ratio in relay.ASPECT_RATIOS + relay.EXTREME_RATIOS:
        w, h = (int(x) for x in str(ratio).split(":"))
        if abs(int(shape.group(1)) / int(shape.group(2)) - w / h) > 0.02:
            found.append(
                (
                    "aspect_ratio",
                    f"{ratio} disagrees with size {size} set beside it; set one of them"
                    " (which wins without image_size is the service's call)",
                )
            )
    return found
