"""The checks of a manifest's fields, of each item, and of the items together.

Errors and warnings go to a ``Problems``; what was checked comes back as a value: a ``Level``
of fields, an item's spec, or None where nothing good is left.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from batchgen.config import ApiSettings
from batchgen.manifest import fields, references, variants
from batchgen.manifest.catalog import Origin
from batchgen.manifest.defaults import DEFAULT_KEYS, Specs, derived_id, merge
from batchgen.manifest.fields import ITEM_KEYS, MAX_REFERENCES, check_id
from batchgen.manifest.problems import Problems
from batchgen.manifest.read import RawItem
from batchgen.manifest.references import LocalReference, Reference, UrlReference
from batchgen.manifest.spec import ItemSpec, Manifest, Sources, output_stems

CheckedItem = tuple[ItemSpec, Origin]  # an item's spec, and where it is for messages about it


@dataclass(frozen=True, slots=True)
class Level:
    """One level of fields, ``defaults:`` or one item, checked and normalised.

    ``fields`` holds the good ones; ``valid`` is False when any had an error (reported). No item
    is made from an invalid level: its problems would only repeat the level's own. The good
    fields still count: they say whether an item has a prompt at all.
    """

    fields: dict[str, Any]
    valid: bool


class ReferenceChecker:
    """Reference lists, checked against the files at hand; each file is inspected once."""

    def __init__(self, header: Manifest, problems: Problems, sources: Sources) -> None:
        self.root = header.path.parent
        self.problems = problems
        self.sources = sources
        self.max_bytes = header.limits.max_reference_bytes
        self.send_bytes = header.limits.reference_send_bytes
        self._inspected: dict[Path, str | None] = {}  # path as written: why it cannot serve, or None
        self._local: dict[Path, LocalReference] = {}
        self._sizes: dict[Path, int] = {}  # sizes of the local references, for the request size bound
        self._sent: dict[tuple[Reference, ...], int] = {}

    def check(self, value: Any, field: str, where: Origin | None) -> list[Reference] | None:
        """The references ``value`` lists, or None if any is bad (each one reported)."""
        entries = [value] if isinstance(value, str) else value
        if not isinstance(entries, list):
            self.problems.error("must be a list of paths or URLs", field, where)
            return None
        if len(entries) > MAX_REFERENCES:
            self.problems.error(
                f"has {len(entries)} references; the service takes at most {MAX_REFERENCES}",
                field,
                where,
            )
            return None
        found = [self._reference(entry, f"{field}[{k}]", where) for k, entry in enumerate(entries)]
        good = [ref for ref in found if ref is not None]
        return good if len(good) == len(found) else None

    def _reference(self, entry: Any, field: str, where: Origin | None) -> Reference | None:
        if not isinstance(entry, str) or not entry.strip():
            self.problems.error(f"must be a file path or URL, not {entry!r}", field, where)
            return None
        if entry.startswith("@"):
            found = references.item_reference(entry)
            if found is None:
                self.problems.error(
                    f"{entry}: an item reference is @ID or @ID#K (K counts the item's images from 1)",
                    field,
                    where,
                )
            return found
        if references.is_url(entry):
            if entry.startswith("data:") and not fields.DATA_URI.match(entry):
                self.problems.error("a data: URI must be data:image/<type>;base64,...", field, where)
                return None
            return UrlReference(entry)
        path = self.root / entry
        if path not in self._inspected:
            self._inspected[path] = references.inspect(path, self.root, self.max_bytes)
        problem = self._inspected[path]
        if problem:
            self.problems.error(f"{entry}: {problem}", field, where)
            return None
        if path not in self._local:
            resolved = path.resolve()
            self._local[path] = LocalReference(resolved, entry)
            st = resolved.stat()
            self._sizes[resolved] = st.st_size
            self.sources.sign(resolved, st)  # it is read later, as its item is sent
        return self._local[path]

    def sent_bytes(self, refs: tuple[Reference, ...]) -> int:
        """The most bytes ``refs`` can add to a request body, as they will be sent."""
        found = self._sent.get(refs)
        if found is None:
            found = self._sent[refs] = sum(self._sent_size(ref) for ref in refs)
        return found

    def _sent_size(self, ref: Reference) -> int:
        if isinstance(ref, UrlReference):
            return len(ref.url) + 4
        if not isinstance(ref, LocalReference):  # another item's image: shrunk to reference_max_mb
            return 4 * -(-self.send_bytes // 3) + 40
        # A local file is sent as it is, or re-encoded no larger than it was or reference_max_mb.
        size = min(self._sizes.get(ref.path, 0), self.send_bytes)
        return 4 * -(-size // 3) + 40


class LevelChecker:
    """The fields of a level, each by its check in ``fields``; shorthands folded into extra_fields."""

    def __init__(self, header: Manifest, problems: Problems, sources: Sources) -> None:
        self.problems = problems
        self.references = ReferenceChecker(header, problems, sources)
        self.reference_field = header.api.reference_field
        self.variants = header.variant_names

    def defaults(self, raw: dict[str, Any]) -> Level:
        """``defaults:``: any item field but the id."""
        if "id" in raw:
            self.problems.error("an id cannot have a default; each item has its own", "defaults.id")
            raw = {k: v for k, v in raw.items() if k != "id"}
        return self._level(raw, DEFAULT_KEYS, "defaults.", None)

    def item(self, raw: dict[str, Any], where: Origin) -> Level:
        """An item's fields but its id."""
        return self._level(raw, ITEM_KEYS, "", where)

    def _level(self, raw: dict[str, Any], known: tuple[str, ...], prefix: str, where: Origin | None) -> Level:
        """The level's fields, checked and normalised, and whether all of them were good."""
        self.problems.unknown_keys(raw, known, prefix, where)
        out: dict[str, Any] = {}
        valid = True
        for field, value in raw.items():
            if field == "references":
                refs = self.references.check(value, prefix + field, where)
                if refs is None:
                    valid = False
                else:
                    out[field] = refs
            elif field in fields.CHECKS or field == "variants":
                check = fields.CHECKS.get(field) or partial(variants.check_choice, known=self.variants)
                normal, error = check(value)
                if error:
                    self.problems.error(error, prefix + field, where)
                    valid = False
                else:
                    out[field] = normal
            else:
                valid = False  # unknown: reported above
        extra = out.setdefault("extra_fields", {})
        for short in ("aspect_ratio", "image_size"):
            if short in out:
                value = out.pop(short)
                if short in extra and extra[short] != value:
                    message = f"conflicts with extra_fields.{short} ({extra[short]!r}); set one of them"
                    self.problems.error(message, prefix + short, where)
                    valid = False
                extra[short] = value
        size, image_size, ratio = out.get("size"), extra.get("image_size"), extra.get("aspect_ratio")
        for field, message in fields.contradictions(size, image_size, ratio):
            self.problems.warn(message, prefix + field, where)
        if self.reference_field in extra and "references" in out:
            message = "conflicts with references; list every reference there"
            self.problems.error(message, f"{prefix}extra_fields.{self.reference_field}", where)
            valid = False
        return Level(out, valid)


class ItemChecker:
    """Each raw item made into a spec, the defaults applied, or None with its problems reported."""

    def __init__(self, levels: LevelChecker, defaults: Level, api: ApiSettings) -> None:
        self.levels = levels
        self.problems = levels.problems
        self.defaults = defaults
        self.reference_field = api.reference_field
        self.max_request_bytes = api.max_request_bytes
        self.specs = Specs()

    def check(self, entry: RawItem) -> CheckedItem | None:
        data, where = entry
        if not isinstance(data, dict):
            self.problems.error(
                f"must be a mapping with at least a prompt, not {type(data).__name__}", None, where
            )
            return None
        item_id = self._id(data.get("id"), where)
        if item_id is not None:
            where = where.named(item_id)
        own = self.levels.item({k: v for k, v in data.items() if k != "id"}, where)
        merged = merge(self.defaults.fields, own.fields)
        if merged.get("prompt") is None:
            if "prompt" not in data:
                self.problems.error("is required", "prompt", where)
            return None
        if not (self.defaults.valid and own.valid):
            return None
        spec = self.specs.make(where.position, item_id, merged)
        here = where if where.id else where.named(spec.id)
        warnings = fields.item_warnings(spec.model, spec.size, spec.extra_fields, self.reference_field)
        for field, message in warnings:
            self.problems.warn(message, field, here)
        self._check_request_size(spec, here)
        return spec, here

    def _id(self, value: Any, where: Origin) -> str | None:
        """The item's own id; None if it has none, or a bad one (reported)."""
        if value is None:
            return None
        if not isinstance(value, str):
            self.problems.error(f'must be a string (quote it: id: "{value}")', "id", where)
            return None
        problem = check_id(value)
        if problem:
            self.problems.error(problem, "id", where)
            return None
        return value

    def _check_request_size(self, spec: ItemSpec, where: Origin) -> None:
        """The largest body this item can make, references as they will be sent, against
        api.max_request_mb: a body the proxy in front would refuse is never sent."""
        if not spec.references:
            return
        # Worst case for the rest: every prompt character escaped, and room for the other fields.
        bound = self.levels.references.sent_bytes(spec.references) + 6 * len(spec.prompt) + 4096
        if bound > self.max_request_bytes:
            self.problems.error(
                f"the request would be up to {bound / 1048576:.1f} MB with its references, over"
                f" api.max_request_mb ({self.max_request_bytes / 1048576:g}); send fewer or smaller"
                " references, or lower limits.reference_max_mb",
                "references",
                where,
            )


def clashes(checked: Iterable[CheckedItem], problems: Problems) -> None:
    """Items that share an id or an image file name."""
    # Output names, folded to lower case: two ids that differ only in case
    # would overwrite each other on macOS and Windows file systems.
    taken: dict[str, ItemSpec] = {}
    seen_ids: dict[str, ItemSpec] = {}
    for spec, here in checked:
        other = seen_ids.get(spec.id.casefold())
        if other is not None:
            if other.id != spec.id:
                message = f"has an id that differs only in case ({other.id}) from items[{other.index}]"
            elif spec.id == derived_id(spec.prompt):
                message = (
                    f"has no id and the same prompt as items[{other.index}]:"
                    " give them ids, or use n for variants"
                )
            else:
                message = f"has the same id as items[{other.index}]"
            problems.error(message, "id", here)
            continue
        seen_ids[spec.id.casefold()] = spec
        for stem in output_stems(spec.id, spec.n):
            other = taken.get(stem.casefold())
            if other is not None:
                problems.error(
                    f"its image images/{stem} would overwrite one of items[{other.index}] (id {other.id})",
                    "id",
                    here,
                )
            taken[stem.casefold()] = spec
