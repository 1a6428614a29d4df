"""What an item takes from ``defaults:``, and from the service's own defaults for what neither sets."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from batchgen import relay
from batchgen.manifest.fields import ITEM_KEYS, prompt_slug
from batchgen.manifest.references import Reference
from batchgen.manifest.spec import ItemSpec

DEFAULT_KEYS = tuple(k for k in ITEM_KEYS if k != "id")  # an id cannot have a default


def merge(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """An item's checked fields over the defaults' ones; extra fields are merged key by key."""
    merged = {**defaults, **own}
    merged["extra_fields"] = {**inherited_extra(defaults, own), **own.get("extra_fields", {})}
    return merged


def inherited_extra(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults' extra fields an item keeps: the most specific level wins, across ``size`` and
    the shorthands alike. An item's own ``size: 4K`` drops an inherited ``image_size``, and its
    own ``WxH`` an inherited ``aspect_ratio`` too, so they are not sent to override it."""
    inherited = dict(defaults.get("extra_fields", {}))
    size = own.get("size")
    if size is not None:
        own_extra = own.get("extra_fields", {})
        if "image_size" not in own_extra:
            inherited.pop("image_size", None)
        if relay.WXH.match(size) and "aspect_ratio" not in own_extra:
            inherited.pop("aspect_ratio", None)
    return inherited


def derived_id(prompt: str) -> str:
    """A stable id for an item without one: readable words of the prompt, and a hash."""
    return f"{prompt_slug(prompt)}-{hashlib.sha256(prompt.encode()).hexdigest()[:8]}"


class Specs:
    """Makes item specs from merged fields. Items with equal extra fields or references share
    one copy of them: a 100,000-item catalog has only a few different ones."""

    def __init__(self) -> None:
        self._extras: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self._references: dict[tuple[Reference, ...], tuple[Reference, ...]] = {}

    def make(self, index: int, item_id: str | None, merged: dict[str, Any]) -> ItemSpec:
        """The spec of ``merged`` (checked, with a prompt); without ``item_id``, one from the prompt."""
        prompt = merged["prompt"]
        return ItemSpec(
            index=index,
            id=item_id or derived_id(prompt),
            prompt=prompt,
            model=merged.get("model", relay.DEFAULT_MODEL),
            size=merged.get("size", relay.DEFAULT_SIZE),
            n=merged.get("n", 1),
            response_format=merged.get("response_format", "b64_json"),
            extra_fields=self._extra(merged["extra_fields"]),
            references=self._reference_tuple(merged.get("references", ())),
            variants=merged.get("variants"),
        )

    def _extra(self, extra: dict[str, Any]) -> Mapping[str, Any]:
        try:
            key = tuple(extra.items())
            hash(key)
        except TypeError:  # a nested value: this item keeps its own
            return MappingProxyType(extra)
        found = self._extras.get(key)
        if found is None:
            found = self._extras[key] = MappingProxyType(extra)
        return found

    def _reference_tuple(self, refs: Any) -> tuple[Reference, ...]:
        key = tuple(refs)
        return self._references.setdefault(key, key)
