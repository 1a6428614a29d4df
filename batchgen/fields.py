"""Item fields, one pure check each: a value in, the normalised value or an error out.

Warnings (things the service accepts but may ignore) are judged on the
finished item, once defaults are applied, by ``item_warnings``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import provider

MAX_N = 10
MAX_PROMPT_CHARS = 32_000

Checked = tuple[Any, str | None]  # (normalised value, error message or None)


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
        return None, f"must be a model id like {provider.DEFAULT_MODEL!r}, not {value!r}"
    return value, None


def check_size(value: Any) -> Checked:
    size = _text(value)
    if size is None or not (size in provider.SIZES or provider.WXH.match(size)):
        return None, f"must be one of {', '.join(provider.SIZES)} or WxH, not {value!r}"
    return size, None


def check_n(value: Any) -> Checked:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_N:
        return None, f"must be a whole number from 1 to {MAX_N}, not {value!r}"
    return value, None


def check_response_format(value: Any) -> Checked:
    if value not in ("b64_json", "url"):
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


CHECKS: Mapping[str, Callable[[Any], Checked]] = {
    "prompt": check_prompt,
    "model": check_model,
    "size": check_size,
    "n": check_n,
    "response_format": check_response_format,
    "extra_fields": check_extra_fields,
    "aspect_ratio": check_shorthand,
    "image_size": check_shorthand,
}


def item_warnings(
    model: str, size: str, extra: Mapping[str, Any], reference_field: str
) -> list[tuple[str, str]]:
    """(field, message) for what the service takes but may ignore or answer oddly."""
    found = []
    if model not in provider.KNOWN_MODELS:
        found.append(("model", f"{model!r} is not one of {', '.join(provider.KNOWN_MODELS)}; sent as is"))
    if size not in provider.SIZES:
        found.append(
            ("size", f"{size} is not a size the service knows; it answers at its default resolution")
        )
    for key in extra:
        if key in provider.REFERENCE_LIKE_FIELDS and key != reference_field:
            found.append(
                (
                    f"extra_fields.{key}",
                    f"looks like reference images, but references are sent (and read) under"
                    f" extra_fields.{reference_field}; the service ignores {key} and generates without"
                    " them. List them under references: instead",
                )
            )
        elif key not in provider.KNOWN_EXTRA_FIELDS and key != reference_field:
            found.append((f"extra_fields.{key}", "not a field the service documents; passed through as is"))
    image_size = extra.get("image_size")
    if image_size is not None and image_size not in provider.IMAGE_SIZES:
        found.append(
            ("image_size", f"{image_size!r} is not one of {', '.join(provider.IMAGE_SIZES)}; may be ignored")
        )
    ratio = extra.get("aspect_ratio")
    extreme_ok = ratio in provider.EXTREME_RATIOS and model == "nano-banana-2"
    if ratio is not None and ratio not in provider.ASPECT_RATIOS and not extreme_ok:
        found.append(("aspect_ratio", f"{ratio!r} is not a ratio {model} is known to take; may be ignored"))
    return found


def contradictions(size: str | None, image_size: Any, ratio: Any) -> list[tuple[str, str]]:
    """(field, message) where one level (defaults, or one item) says two different things.

    Across levels there is no contradiction: the more specific level wins.
    """
    if size is None:
        return []
    found = []
    klass = provider.SIZES.get(size)
    if klass is not None and image_size is not None and image_size != klass:
        found.append(
            (
                "image_size",
                f"{image_size} disagrees with size {size} set beside it; the service goes by image_size",
            )
        )
    shape = provider.WXH.match(size)
    if shape and ratio in provider.ASPECT_RATIOS + provider.EXTREME_RATIOS:
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
