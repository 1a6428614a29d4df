"""The manifest's JSON Schema (draft 2020-12), made from the validator's own tables.

Editors use it to complete and check manifests as they are typed (the
``# yaml-language-server: $schema=...`` line of each manifest under jobs/), so it
must never accept what ``batchgen validate`` refuses, nor refuse what it accepts.
That is why nothing here lists a key or a bound: this module owns only how the
tables are put together. Which keys exist, what each takes and the help shown
beside it come from the modules that validate them: ``read.TOP_FIELDS`` and
``read.API_FIELDS``, ``fields.ITEM_FIELDS``, ``config.LIMIT_RULES``,
``variants.VARIANT_FIELDS`` and ``catalog.BLOCK_FIELDS``; a key added to one of them appears in both.

What the validator decides with the files at hand (references and CSV files, the
placeholders a CSV header allows, unique ids, the size of a request) no schema can
say: ``batchgen validate`` still does. The shipped copy is regenerated with

    python -m batchgen.manifest.schema > batchgen/manifest/manifest.schema.json
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from batchgen.config import LIMIT_NAMES, LIMIT_RULES, Limits
from batchgen.manifest.catalog import BLOCK_FIELDS, BLOCK_KEYS
from batchgen.manifest.defaults import DEFAULT_KEYS
from batchgen.manifest.fields import ITEM_FIELDS, ITEM_KEYS, VARIANT_NAME, Key
from batchgen.manifest.read import API_FIELDS, API_KEYS, TOP_FIELDS, TOP_KEYS
from batchgen.manifest.variants import VARIANT_FIELDS, VARIANT_KEYS
from batchgen.output.variants import THUMB_NAME

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ITEM_REF = "#/$defs/item"
BLOCK_REF = "#/$defs/block"
# A template string with a {placeholder}: its value is known only once a row fills it in.
PLACEHOLDER = {"type": "string", "pattern": r"\{[^{}]+\}"}
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean"}


def document() -> dict[str, Any]:
    """The whole schema, as a fresh dict the caller may change."""
    return {
        "$schema": DIALECT,
        "title": "batchgen manifest",
        "description": (
            "A batchgen job: prompts, sizes and reference images for an OpenAI-compatible images"
            " endpoint. `batchgen validate` also checks what a schema cannot: files, CSV rows,"
            " unique ids, request sizes."
        ),
        "type": "object",
        "properties": _top(),
        "additionalProperties": False,
        "allOf": [_something_to_make(), *_required_item_fields()],
        "$defs": {"item": _item(), "block": _block()},
    }


def text() -> str:
    """The schema as the shipped file holds it: the same bytes for the same tables."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def _described(key: Key, **more: Any) -> dict[str, Any]:
    """A key's schema from its table entry; a deep copy, so no caller can change the table."""
    return {"description": key.help, **copy.deepcopy(dict(key.json)), **more}


def _properties(table: Mapping[str, Key], names: Iterable[str]) -> dict[str, Any]:
    """The schemas of the keys ``names`` (the validator's own list of them) from ``table``."""
    return {name: _described(table[name]) for name in names}


def _top() -> dict[str, Any]:
    """The top-level keys, with what the nested mappings and lists hold."""
    nested: dict[str, dict[str, Any]] = {
        "defaults": {"properties": _properties(ITEM_FIELDS, DEFAULT_KEYS), "additionalProperties": False},
        "limits": {"properties": _limits(), "additionalProperties": False},
        "api": {"properties": _properties(API_FIELDS, API_KEYS), "additionalProperties": False},
        "items": {"items": {"$ref": ITEM_REF}},
        "variants": {
            "propertyNames": {"pattern": VARIANT_NAME.pattern, "not": {"const": THUMB_NAME}},
            "additionalProperties": _variant(),
        },
        # One block written without the list is taken as a list of one.
        "generate": {
            "anyOf": [
                {"type": "null"},
                {"$ref": BLOCK_REF},
                {"type": "array", "items": {"$ref": BLOCK_REF}},
            ]
        },
    }
    return {name: _described(TOP_FIELDS[name], **nested.get(name, {})) for name in TOP_KEYS}


def _variant() -> dict[str, Any]:
    """One channel variant: a box (size, with fit) or one or two sides, and a format. Every format
    is listed, avif too: the shipped file is the same everywhere, and ``validate`` says where the
    installed Pillow cannot write one."""
    properties = _properties(VARIANT_FIELDS, VARIANT_KEYS)
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(name for name in VARIANT_KEYS if VARIANT_FIELDS[name].required),
        "additionalProperties": False,
        "anyOf": [{"required": ["size"]}, {"required": ["width"]}, {"required": ["height"]}],
        "dependentSchemas": {
            "size": {"not": {"anyOf": [{"required": ["width"]}, {"required": ["height"]}]}},
            "fit": {"required": ["size"]},
        },
        "if": {"properties": {"format": {"const": "png"}}, "required": ["format"]},
        "then": {"not": {"required": ["quality"]}},
    }


def _limits() -> dict[str, Any]:
    """``limits:``: each limit's type and bounds as ``check_limit`` applies them, and its default."""
    defaults = Limits()
    return {name: _limit(name, getattr(defaults, name)) for name in LIMIT_NAMES}


def _limit(name: str, default: Any) -> dict[str, Any]:
    rule = LIMIT_RULES[name]
    kind = _JSON_TYPES[rule.kind]
    out: dict[str, Any] = {
        "description": rule.help,
        "type": [kind, "null"] if rule.nullable else kind,
        "default": _plain(default),
    }
    if rule.kind is not bool:
        out["exclusiveMinimum" if rule.low_open else "minimum"] = _plain(rule.low)
        out["maximum"] = _plain(rule.high)
    return out


def _plain(value: Any) -> Any:
    """300.0 written as 300: the same number to JSON Schema, and what a person would write."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _item() -> dict[str, Any]:
    return {
        "description": "One request: a prompt, and whatever it does not take from defaults.",
        "type": "object",
        "properties": _properties(ITEM_FIELDS, ITEM_KEYS),
        "additionalProperties": False,
    }


def _block() -> dict[str, Any]:
    """A generate block. Its template holds item fields, any text of which may be a placeholder:
    the items it makes are checked as hand-written ones are, once the rows have filled them in."""
    template = {name: _templated(ITEM_FIELDS[name]) for name in ITEM_KEYS}
    nested = {"template": {"properties": template, "additionalProperties": False}}
    return {
        "description": "Rows times a matrix, through a template: one item per row and combination.",
        "type": "object",
        "properties": {name: _described(BLOCK_FIELDS[name], **nested.get(name, {})) for name in BLOCK_KEYS},
        "required": sorted(name for name in BLOCK_KEYS if BLOCK_FIELDS[name].required),
        "additionalProperties": False,
    }


def _templated(key: Key) -> dict[str, Any]:
    if not key.text:
        return _described(key)
    return {"description": key.help, "anyOf": [copy.deepcopy(dict(key.json)), PLACEHOLDER]}


def _something_to_make() -> dict[str, Any]:
    """A job needs a non-empty list of items or at least one generate block (``_Builder.items``)."""
    return {
        "anyOf": [
            {"required": ["items"], "properties": {"items": {"type": "array", "minItems": 1}}},
            {
                "required": ["generate"],
                "properties": {"generate": {"type": ["object", "array"], "minItems": 1}},
            },
        ]
    }


def _required_item_fields() -> list[dict[str, Any]]:
    """An item or template must set each required field (the prompt) unless defaults set it.

    The validator asks it of the item with its defaults applied, so the schema asks it of
    every item and template only when ``defaults`` does not have it.
    """
    rules = []
    for name in sorted(n for n in ITEM_KEYS if ITEM_FIELDS[n].required):
        need = {"required": [name]}
        rules.append(
            {
                "if": {
                    "required": ["defaults"],
                    "properties": {"defaults": {"type": "object", "required": [name]}},
                },
                "else": {
                    "properties": {
                        "items": {"items": need},
                        "generate": {
                            "properties": {"template": need},
                            "items": {"properties": {"template": need}},
                        },
                    }
                },
            }
        )
    return rules


def main() -> None:
    """``python -m batchgen.manifest.schema``: print the schema, to regenerate the shipped file."""
    sys.stdout.write(text())


if __name__ == "__main__":
    main()
