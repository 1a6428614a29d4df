"""A manifest file, validated into item specs: every mistake found, none sent (README "The manifest")."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from batchgen.config import (
    BASE_URL_PATTERN,
    ENV_NAME,
    LIMIT_NAMES,
    ApiSettings,
    Limits,
    check_base_url,
    check_limit,
)
from batchgen.errors import ManifestError, Problem
from batchgen.manifest import catalog, fields, provider, references
from batchgen.manifest.catalog import Where
from batchgen.manifest.fields import ID_HELP, ID_PATTERN, ITEM_KEYS, MAX_REFERENCES, Key, check_id
from batchgen.manifest.loader import read_yaml
from batchgen.manifest.references import LocalReference, Reference, UrlReference

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
        "A price table file next to the manifest (a copy of batchgen/plan/prices.json with your relay's"
        " prices), for the cost estimates.",
        {"type": ["string", "null"], "minLength": 1},
    ),
    "items": Key("The requests, one mapping each, with at least a prompt.", {"type": ["array", "null"]}),
    "generate": Key(
        "Catalog blocks, one or a list: rows (a CSV file or a list) times a matrix, through a template.",
        {"type": ["object", "array", "null"]},
    ),
}
TOP_KEYS = tuple(TOP_FIELDS)
DEFAULT_KEYS = tuple(k for k in ITEM_KEYS if k != "id")  # an id cannot have a default
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


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One validated item: defaults applied, shorthands folded into extra_fields."""

    index: int
    id: str
    prompt: str
    model: str
    size: str
    n: int
    response_format: str
    extra_fields: Mapping[str, Any]
    references: tuple[Reference, ...]

    @property
    def image_size(self) -> str | None:
        value = self.extra_fields.get("image_size")
        return value if isinstance(value, str) else None

    @property
    def aspect_ratio(self) -> str | None:
        value = self.extra_fields.get("aspect_ratio")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Manifest:
    path: Path
    job: str
    items: tuple[ItemSpec, ...]
    limits: Limits
    api: ApiSettings
    warnings: tuple[Problem, ...]
    prices: Path | None = None  # the manifest's own price table, if it names one
    # Every file the items are made from (the manifest, its CSVs, its local references, its price
    # table), each with its signature taken before it was read: what a re-run compares to know
    # that nothing changed since (see ``unchanged``).
    sources: tuple[tuple[str, Signature], ...] = ()


Signature = tuple[int, int, int, int]  # size, modification and change times (ns), inode


def signature(st: os.stat_result) -> Signature:
    """What tells a file from its edited self without reading it: an edit changes the change time
    (which no user can set back), a replacement the inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def load(path: Path) -> Manifest:
    """Read and validate the manifest at ``path``; ManifestError lists every problem."""
    builder = _Builder(path)
    builder.sign(path)  # before reading it: an edit made while it is read is not taken for it
    return builder.build(read_yaml(path))


def load_header(path: Path) -> Manifest | None:
    """The manifest without its items (job, api, limits, prices): what a run needs before it knows
    whether the items must be expanded at all. None if the header has a problem (``load`` says which)."""
    builder = _Builder(path)
    header = builder.header(read_yaml(path))
    return None if builder.problems else header


class _Builder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = str(path)
        self.root = path.parent
        self.problems: list[Problem] = []
        self.warnings: dict[str, tuple[Problem, int]] = {}
        self.inspected: dict[Path, str | None] = {}
        self.locations: dict[int, Where] = {}
        self.extras: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self.ref_tuples: dict[tuple[Reference, ...], tuple[Reference, ...]] = {}
        self.local_refs: dict[Path, LocalReference] = {}
        self.ref_bytes: dict[Path, int] = {}  # sizes of the local references, for the request size bound
        self.sources: dict[str, Signature] = {}  # absolute path: signature, before it was read
        self.ref_bounds: dict[tuple[Reference, ...], int] = {}
        self.max_reference_bytes = Limits().max_reference_bytes
        self.send_bytes = Limits().reference_send_bytes
        self.max_request_bytes = ApiSettings().max_request_bytes

    def sign(self, path: Path, st: os.stat_result | None = None) -> None:
        with contextlib.suppress(OSError):
            self.sources.setdefault(os.path.abspath(path), signature(st or os.stat(path)))

    def problem(self, message: str, field: str | None, where: Where | None) -> Problem:
        if where is None:
            return Problem(self.file, message, field=field)
        return Problem(
            where.file or self.file, message, where.position, where.id or None, field, where.line, where.label
        )

    def error(self, message: str, field: str | None = None, item: Where | None = None) -> None:
        self.problems.append(self.problem(message, field, item))

    def warn(self, message: str, field: str | None = None, item: Where | None = None) -> None:
        # One line per distinct warning, not one per item of a 5,000-item catalog.
        key = f"{field}: {message}"
        first, count = self.warnings.get(key, (self.problem(message, field, item), 0))
        self.warnings[key] = (first, count + 1)

    def build(self, data: dict[str, Any]) -> Manifest:
        header = self.header(data)
        defaults = self.fields(self.mapping(data, "defaults"), "defaults.", None, header.api.reference_field)
        items = self.items(data.get("items"), data.get("generate"), defaults, header.api.reference_field)
        if self.problems:
            raise ManifestError(self.problems)
        warnings = tuple(
            dataclasses.replace(p, message=p.message + (f" (and {n - 1} more)" if n > 1 else ""))
            for p, n in self.warnings.values()
        )
        sources = tuple(self.sources.items())
        return dataclasses.replace(header, items=items, warnings=warnings, sources=sources)

    def header(self, data: dict[str, Any]) -> Manifest:
        """Everything but the items."""
        self.unknown_keys(data, TOP_KEYS, "")
        version = data.get("version", 1)
        if version != 1:
            self.error(f"must be 1 (the only manifest version there is), not {version!r}", "version")
        job = data.get("job", self.path.stem)
        if not isinstance(job, str) or check_id(job):
            self.error(f"job name {job!r} {ID_HELP}", "job")
        limits = self.limits(self.mapping(data, "limits"))
        self.max_reference_bytes = limits.max_reference_bytes
        self.send_bytes = limits.reference_send_bytes
        api = self.api(self.mapping(data, "api"))
        self.max_request_bytes = api.max_request_bytes
        prices = self.prices(data.get("prices"))
        return Manifest(self.path, str(job), (), limits, api, (), prices)

    def prices(self, value: Any) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str) or not (self.root / value).is_file():
            self.error(f"must name a price table file next to the manifest; {value!r} is not one", "prices")
            return None
        self.sign(self.root / value)
        return self.root / value

    def mapping(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(f"must be a mapping, not {type(value).__name__}", key)
            return {}
        return value

    def unknown_keys(
        self,
        data: dict[str, Any],
        known: tuple[str, ...],
        prefix: str,
        item: Where | None = None,
    ) -> None:
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
                self.error(f"unknown field {key!r}{hint}", f"{prefix}{key}" if prefix else str(key), item)

    def limits(self, raw: dict[str, Any]) -> Limits:
        self.unknown_keys(raw, LIMIT_NAMES, "limits.")
        good: dict[str, Any] = {}
        for name in LIMIT_NAMES:
            if name in raw:
                value, error = check_limit(name, raw[name])
                if error:
                    self.error(error, f"limits.{name}")
                else:
                    good[name] = value
        return Limits(**good)

    def api(self, raw: dict[str, Any]) -> ApiSettings:
        for secret in ("api_key", "key", "token"):
            if secret in raw:
                self.error(
                    "the API key never lives in a manifest; put it in the environment"
                    " variable that api.api_key_env names",
                    f"api.{secret}",
                )
                raw = {k: v for k, v in raw.items() if k != secret}
        self.unknown_keys(raw, API_KEYS, "api.")
        api = ApiSettings()
        if "base_url" in raw:
            error = check_base_url(raw["base_url"])
            if error:
                self.error(error, "api.base_url")
            else:
                api = ApiSettings(raw["base_url"], api.api_key_env, api.reference_field)
        env = raw.get("api_key_env", api.api_key_env)
        if not isinstance(env, str) or not ENV_NAME.match(env):
            self.error(f"must be an environment variable name, not {env!r}", "api.api_key_env")
            env = api.api_key_env
        field = raw.get("reference_field", api.reference_field)
        if not isinstance(field, str) or not REFERENCE_FIELD_NAME.match(field):
            self.error(f"must be a field name like 'reference_images', not {field!r}", "api.reference_field")
            field = api.reference_field
        cap = raw.get("max_request_mb", api.max_request_mb)
        if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap <= MAX_REQUEST_MB:
            self.error(
                f"must be a number of megabytes above 0 and at most {MAX_REQUEST_MB}, not {cap!r}",
                "api.max_request_mb",
            )
            cap = api.max_request_mb
        return ApiSettings(api.base_url, env, field, float(cap))

    def items(self, raw: Any, blocks: Any, defaults: dict[str, Any], ref_field: str) -> tuple[ItemSpec, ...]:
        if blocks is not None and not isinstance(blocks, list):
            blocks = [blocks]  # a single block written without the list
        if raw is None and not blocks:
            self.error("the manifest has no items (and no generate blocks)", "items")
            return ()
        raw = [] if raw is None else raw
        if not isinstance(raw, list):
            self.error(f"must be a list of items, not {type(raw).__name__}", "items")
            return ()
        if not raw and not blocks:
            self.error("the list is empty; a job needs at least one item", "items")
        specs: list[ItemSpec] = []
        for index, entry in enumerate(raw):
            spec = self.item(index, entry, defaults, ref_field, Where(index))
            if spec is not None:
                specs.append(spec)
        index = len(raw)
        for number, block in enumerate(blocks or []):
            read = self.sign
            for made in catalog.expand(block, number, self.root, self.file, self.error, index, read):
                spec = self.item(made.where.position, made.item, defaults, ref_field, made.where)
                if spec is not None:
                    specs.append(spec)
                index = made.where.position + 1
        self.check_unique(specs)
        return tuple(specs)

    def item(
        self, index: int, entry: Any, defaults: dict[str, Any], ref_field: str, where: Where
    ) -> ItemSpec | None:
        self.locations[index] = where
        if not isinstance(entry, dict):
            self.error(f"must be a mapping with at least a prompt, not {type(entry).__name__}", None, where)
            return None
        item_id = entry.get("id")
        if item_id is not None:
            if not isinstance(item_id, str):
                self.error(f'must be a string (quote it: id: "{item_id}")', "id", where)
                item_id = None
            elif check_id(item_id):
                self.error(f"{item_id!r} {ID_HELP}", "id", where)
                item_id = None
            else:
                where = where.named(item_id)
        own = self.fields({k: v for k, v in entry.items() if k != "id"}, "", where, ref_field)
        merged = {**defaults, **own}
        merged["extra_fields"] = {**inherited_extra(defaults, own), **own.get("extra_fields", {})}
        prompt = merged.get("prompt")
        if prompt is None:
            if "prompt" not in entry:
                self.error("is required", "prompt", where)
            return None
        if "_invalid" in merged:
            return None
        spec = ItemSpec(
            index=index,
            id=item_id or _derived_id(prompt),
            prompt=prompt,
            model=merged.get("model", provider.DEFAULT_MODEL),
            size=merged.get("size", provider.DEFAULT_SIZE),
            n=merged.get("n", 1),
            response_format=merged.get("response_format", "b64_json"),
            extra_fields=self.shared(merged["extra_fields"]),
            references=self.shared_refs(merged.get("references", ())),
        )
        here = where if where.id else where.named(spec.id)
        self.check_extra(spec, here, ref_field)
        self.check_request_size(spec, here)
        return spec

    def check_request_size(self, spec: ItemSpec, where: Where) -> None:
        """The largest body this item can make, references as they will be sent, against
        api.max_request_mb: a body the proxy in front would refuse is never sent."""
        if not spec.references:
            return
        refs = self.ref_bounds.get(spec.references)
        if refs is None:
            refs = self.ref_bounds[spec.references] = sum(self.sent_size(r) for r in spec.references)
        # Worst case for the rest: every prompt character escaped, and room for the other fields.
        bound = refs + 6 * len(spec.prompt) + 4096
        if bound > self.max_request_bytes:
            self.error(
                f"the request would be up to {bound / 1048576:.1f} MB with its references, over"
                f" api.max_request_mb ({self.max_request_bytes / 1048576:g}); send fewer or smaller"
                " references, or lower limits.reference_max_mb",
                "references",
                where,
            )

    def sent_size(self, ref: Reference) -> int:
        if isinstance(ref, UrlReference):
            return len(ref.url) + 4
        # A local file is sent as it is, or re-encoded no larger than it was or reference_max_mb.
        size = min(self.ref_bytes.get(ref.path, 0), self.send_bytes)
        return 4 * -(-size // 3) + 40

    def shared(self, extra: dict[str, Any]) -> Mapping[str, Any]:
        """One read-only mapping for every item with the same extra fields (a catalog's are few)."""
        try:
            key = tuple(extra.items())
            hash(key)
        except TypeError:  # a nested value: this item keeps its own
            return MappingProxyType(extra)
        found = self.extras.get(key)
        if found is None:
            found = self.extras[key] = MappingProxyType(extra)
        return found

    def shared_refs(self, refs: Any) -> tuple[Reference, ...]:
        key = tuple(refs)
        return self.ref_tuples.setdefault(key, key)

    def fields(self, raw: dict[str, Any], prefix: str, item: Where | None, ref_field: str) -> dict[str, Any]:
        """Check one level (defaults or an item) and normalise what it sets.

        A level with any error carries ``_invalid``, so the items it feeds are
        not checked further (their problems would only repeat this one).
        """
        known = ITEM_KEYS if item is not None else DEFAULT_KEYS
        if item is None and "id" in raw:
            self.error("an id cannot have a default; each item has its own", "defaults.id")
            raw = {k: v for k, v in raw.items() if k != "id"}
        self.unknown_keys(raw, known, prefix, item)
        out: dict[str, Any] = {}

        def bad(field: str, message: str) -> None:
            self.error(message, prefix + field, item)
            out["_invalid"] = True

        for field, value in raw.items():
            if field == "references":
                refs = self.references(value, prefix + field, item)
                if refs is None:
                    out["_invalid"] = True
                else:
                    out[field] = refs
            elif field in fields.CHECKS:
                normal, error = fields.CHECKS[field](value)
                if error:
                    bad(field, error)
                else:
                    out[field] = normal
            else:
                out["_invalid"] = True  # unknown: reported above
        extra = out.setdefault("extra_fields", {})
        for short in ("aspect_ratio", "image_size"):
            if short in out:
                value = out.pop(short)
                if short in extra and extra[short] != value:
                    bad(short, f"conflicts with extra_fields.{short} ({extra[short]!r}); set one of them")
                extra[short] = value
        size, image_size, ratio = out.get("size"), extra.get("image_size"), extra.get("aspect_ratio")
        for field, message in fields.contradictions(size, image_size, ratio):
            self.warn(message, prefix + field, item)
        if ref_field in extra and "references" in out:
            bad(f"extra_fields.{ref_field}", "conflicts with references; list every reference there")
        return out

    def references(self, value: Any, field: str, item: Where | None) -> list[Reference] | None:
        entries = [value] if isinstance(value, str) else value
        if not isinstance(entries, list):
            self.error("must be a list of paths or URLs", field, item)
            return None
        if len(entries) > MAX_REFERENCES:
            self.error(
                f"has {len(entries)} references; the service takes at most {MAX_REFERENCES}",
                field,
                item,
            )
            return None
        refs: list[Reference] = []
        ok = True
        for k, entry in enumerate(entries):
            where = f"{field}[{k}]"
            if not isinstance(entry, str) or not entry.strip():
                self.error(f"must be a file path or URL, not {entry!r}", where, item)
                ok = False
            elif references.is_url(entry):
                if entry.startswith("data:") and not fields.DATA_URI.match(entry):
                    self.error("a data: URI must be data:image/<type>;base64,...", where, item)
                    ok = False
                refs.append(UrlReference(entry))
            else:
                path = self.root / entry
                if path not in self.inspected:
                    self.inspected[path] = references.inspect(path, self.root, self.max_reference_bytes)
                problem = self.inspected[path]
                if problem:
                    self.error(f"{entry}: {problem}", where, item)
                    ok = False
                else:
                    if path not in self.local_refs:
                        resolved = path.resolve()
                        self.local_refs[path] = LocalReference(resolved, entry)
                        st = resolved.stat()
                        self.ref_bytes[resolved] = st.st_size
                        self.sign(resolved, st)  # it is read later, as its item is sent
                    refs.append(self.local_refs[path])
        return refs if ok else None

    def check_extra(self, spec: ItemSpec, where: Where, ref_field: str) -> None:
        for field, message in fields.item_warnings(spec.model, spec.size, spec.extra_fields, ref_field):
            self.warn(message, field, where)

    def check_unique(self, specs: list[ItemSpec]) -> None:
        # Output names, folded to lower case: two ids that differ only in case
        # would overwrite each other on macOS and Windows file systems.
        taken: dict[str, ItemSpec] = {}
        seen_ids: dict[str, ItemSpec] = {}
        for spec in specs:
            here = self.locations.get(spec.index, Where(spec.index)).named(spec.id)
            other = seen_ids.get(spec.id.casefold())
            if other is not None:
                if other.id != spec.id:
                    message = f"has an id that differs only in case ({other.id}) from items[{other.index}]"
                elif spec.id == _derived_id(spec.prompt):
                    message = (
                        f"has no id and the same prompt as items[{other.index}]:"
                        " give them ids, or use n for variants"
                    )
                else:
                    message = f"has the same id as items[{other.index}]"
                self.error(message, "id", here)
                continue
            seen_ids[spec.id.casefold()] = spec
            for stem in output_stems(spec.id, spec.n):
                other = taken.get(stem.casefold())
                if other is not None:
                    self.error(
                        f"its image images/{stem} would overwrite one of items[{other.index}]"
                        f" (id {other.id})",
                        "id",
                        here,
                    )
                taken[stem.casefold()] = spec


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
        if provider.WXH.match(size) and "aspect_ratio" not in own_extra:
            inherited.pop("aspect_ratio", None)
    return inherited


def output_stems(item_id: str, n: int) -> tuple[str, ...]:
    """File names (without extension) of an item's images."""
    return (item_id,) if n == 1 else tuple(f"{item_id}-{k}" for k in range(1, n + 1))


def _derived_id(prompt: str) -> str:
    """A stable id for an item without one: readable words of the prompt, and a hash."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40].strip("-") or "item"
    return f"{slug}-{hashlib.sha256(prompt.encode()).hexdigest()[:8]}"
