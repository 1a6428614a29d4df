"""A manifest's data taken apart: the header (version, job, limits, api, prices) checked here,
and its raw items, hand-written and generated, handed on one at a time."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from batchgen import relay
from batchgen.config import (
    BASE_URL_PATTERN,
    ENV_NAME,
    LIMIT_NAMES,
    ApiSettings,
    Limits,
    check_base_url,
    check_limit,
)
from batchgen.manifest import catalog, variants
from batchgen.manifest.catalog import Origin
from batchgen.manifest.fields import ID_HELP, ID_PATTERN, Key, check_id
from batchgen.manifest.problems import Problems
from batchgen.manifest.spec import Manifest, Sources
from batchgen.output.variants import THUMB_NAME

# The keys of each mapping the validator knows, from the tables ``schema`` reads too (see fields.Key).
# Nested mappings (defaults, limits, api, items, generate) hold their own tables: their keys here
# give only what the top level accepts in their place (null: as if absent).
TOP_FIELDS: Mapping[str, Key] = {
    "version": Key("The manifest format: 1, the only one there is.", {"const": 1, "default": 1}),
    "job": Key(
        "Names the job and its folder, output/<job>/; default: the file's name without .yaml."
        " 1-100 of A-Z a-z 0-9 . _ -, no leading '.', no '..'.",
        {"type": "string", "pattern": ID_PATTERN},
    ),
    "defaults": Key(
        "Any item field except id; a field an item sets replaces it (references included),"
        " extra_fields are merged key by key, the item winning.",
        {"type": ["object", "null"]},
    ),
    "limits": Key("How hard and how long to push.", {"type": ["object", "null"]}),
    "api": Key(
        "Where requests go; never the key itself, which comes from the variable api_key_env names.",
        {"type": ["object", "null"]},
    ),
    "prices": Key(
        "A price table file next to the manifest (a copy of batchgen/prices.json with your relay's"
        " prices), for the cost estimates.",
        {"type": ["string", "null"], "minLength": 1},
    ),
    "variants": Key(
        "Names (1-32 of a-z 0-9 _ -, not thumb) to the channel variants made from every image:"
        " size and fit or width/height, format, quality, background, metadata.",
        {"type": ["object", "null"]},
    ),
    "items": Key("The requests, one mapping each, with at least a prompt.", {"type": ["array", "null"]}),
    "generate": Key(
        "Catalog blocks, one or a list: rows (a CSV file or a list) times a matrix, through a template.",
        {"type": ["object", "array", "null"]},
    ),
}
TOP_KEYS = tuple(TOP_FIELDS)
REFERENCE_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_REQUEST_MB = 1024
_API_DEFAULTS = ApiSettings()
API_FIELDS: Mapping[str, Key] = {
    "base_url": Key(
        "The OpenAI-compatible endpoint, up to /v1; --base-url and BATCHGEN_BASE_URL override it.",
        {"type": "string", "pattern": BASE_URL_PATTERN, "default": _API_DEFAULTS.base_url},
    ),
    "api_key_env": Key(
        "The environment variable that holds the API key.",
        {"type": "string", "pattern": ENV_NAME.pattern, "default": _API_DEFAULTS.api_key_env},
    ),
    "reference_field": Key(
        "The extra_fields key the relay reads reference images from; jobs/check/reference-key.yaml"
        " checks it with one cheap request.",
        {"type": "string", "pattern": REFERENCE_FIELD_NAME.pattern, "default": _API_DEFAULTS.reference_field},
    ),
    "max_request_mb": Key(
        "A request body that could be larger (references as they will be sent) is refused before"
        " anything is sent: the proxy in front would refuse it.",
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_REQUEST_MB,
            "default": _API_DEFAULTS.max_request_mb,
        },
    ),
}
API_KEYS = tuple(API_FIELDS)


class RawItem(NamedTuple):
    """One raw item, not yet checked, and where it came from (``where.position``: its index)."""

    data: Any
    where: Origin


def header(data: dict[str, Any], path: Path, problems: Problems, sources: Sources) -> Manifest:
    """The manifest without its items: what is good of it, with the rest reported."""
    problems.unknown_keys(data, TOP_KEYS, "")
    version = data.get("version", 1)
    if version != 1:
        problems.error(f"must be 1 (the only manifest version there is), not {version!r}", "version")
    job = data.get("job", path.stem)
    if not isinstance(job, str) or check_id(job):
        problems.error(f"job name {job!r} {ID_HELP}", "job")
    limits = _limits(section(data, "limits", problems), problems)
    api = _api(section(data, "api", problems), problems)
    prices = _prices(data.get("prices"), path.parent, problems, sources)
    raw = data.get("variants")
    derived = variants.section(raw, problems)
    names = tuple(str(n) for n in raw if n != THUMB_NAME) if isinstance(raw, dict) else ()
    return Manifest(path, str(job), (), limits, api, (), prices, variants=derived, variant_names=names)


def section(data: dict[str, Any], key: str, problems: Problems) -> dict[str, Any]:
    """The mapping under ``key``; empty if absent, null, or not a mapping (reported)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.error(f"must be a mapping, not {type(value).__name__}", key)
        return {}
    return value


def items(data: dict[str, Any], root: Path, problems: Problems, sources: Sources) -> Iterator[RawItem]:
    """The raw items: those under ``items``, then those the ``generate`` blocks make. A block's
    are made as they are asked for, so a 100,000-row catalog is never held whole, and its
    problems are reported among those of the items before and after them."""
    raw, blocks = data.get("items"), data.get("generate")
    if blocks is not None and not isinstance(blocks, list):
        blocks = [blocks]  # a single block written without the list
    if raw is None and not blocks:
        problems.error("the manifest has no items (and no generate blocks)", "items")
        return
    raw = [] if raw is None else raw
    if not isinstance(raw, list):
        problems.error(f"must be a list of items, not {type(raw).__name__}", "items")
        return
    if not raw and not blocks:
        problems.error("the list is empty; a job needs at least one item", "items")
    for index, entry in enumerate(raw):
        yield RawItem(entry, Origin(index))
    index = len(raw)
    for number, block in enumerate(blocks or []):
        for made in catalog.expand(block, number, root, problems.file, problems.error, index, sources.sign):
            yield RawItem(made.item, made.where)
            index = made.where.position + 1


def _prices(value: Any, root: Path, problems: Problems, sources: Sources) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not (root / value).is_file():
        problems.error(f"must name a price table file next to the manifest; {value!r} is not one", "prices")
        return None
    sources.sign(root / value)
    return root / value


def _limits(raw: dict[str, Any], problems: Problems) -> Limits:
    problems.unknown_keys(raw, LIMIT_NAMES, "limits.")
    good: dict[str, Any] = {}
    for name in LIMIT_NAMES:
        if name in raw:
            value, error = check_limit(name, raw[name])
            if error:
                problems.error(error, f"limits.{name}")
            else:
                good[name] = value
    return Limits(**good)


def _api(raw: dict[str, Any], problems: Problems) -> ApiSettings:
    for secret in ("api_key", "key", "token"):
        if secret in raw:
            problems.error(
                "the API key never lives in a manifest; put it in the environment"
                " variable that api.api_key_env names",
                f"api.{secret}",
            )
            raw = {k: v for k, v in raw.items() if k != secret}
    problems.unknown_keys(raw, API_KEYS, "api.")
    api = ApiSettings()
    if "base_url" in raw:
        error = check_base_url(raw["base_url"])
        if error:
            problems.error(error, "api.base_url")
        else:
            api = ApiSettings(raw["base_url"], api.api_key_env, api.reference_field)
    env = raw.get("api_key_env", api.api_key_env)
    if not isinstance(env, str) or not ENV_NAME.match(env):
        problems.error(f"must be an environment variable name, not {env!r}", "api.api_key_env")
        env = api.api_key_env
    field = raw.get("reference_field", api.reference_field)
    if not isinstance(field, str) or not REFERENCE_FIELD_NAME.match(field):
        problems.error(
            f"must be a field name like {relay.REFERENCE_KEY!r}, not {field!r}", "api.reference_field"
        )
        field = api.reference_field
    cap = raw.get("max_request_mb", api.max_request_mb)
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap <= MAX_REQUEST_MB:
        problems.error(
            f"must be a number of megabytes above 0 and at most {MAX_REQUEST_MB}, not {cap!r}",
            "api.max_request_mb",
        )
        cap = api.max_request_mb
    return ApiSettings(api.base_url, env, field, float(cap))
