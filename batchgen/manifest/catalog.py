"""Catalog expansion: ``rows`` (a CSV file or a list) times a ``matrix``, through a ``template``.

    generate:
      - rows: catalog/products.csv        # or [{sku: A1, color: red}, ...]
        matrix:
          view: [front, back]
          shape: [{name: square, ratio: "1:1"}, {name: tall, ratio: "4:5"}]
        template:
          id: "{sku}-{view}-{shape.name}"
          prompt: "Studio photo of the {color} {name}, {view} view"
          aspect_ratio: "{shape.ratio}"
          references: ["catalog/refs/{sku}.png"]

Every string in the template (lists and extra_fields included) may use
``{column}``, ``{matrix_key}`` or ``{matrix_key.field}``; ``{{`` and ``}}`` are
literal braces. Placeholders are checked once, against the CSV header and the
matrix, before any row is read. Rows come in file order, matrix combinations
in the order written, so expansion is deterministic.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import re
import stat
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from batchgen.manifest.fields import Key, prompt_slug

MAX_CSV_BYTES = 256 * 1024 * 1024
MATRIX_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The keys of a block, read by ``expand`` and by ``schema``. The template's own keys are the item
# fields (fields.ITEM_FIELDS): its items are checked as hand-written ones are.
BLOCK_FIELDS: Mapping[str, Key] = {
    "rows": Key(
        "A CSV file next to the manifest (UTF-8, a header line), or a list of mappings: the values"
        " of {column} placeholders, one row at a time.",
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "object"}},
            ]
        },
        required=True,
    ),
    "matrix": Key(
        "Names to lists of choices, all plain values or all mappings ({name.field}); every row is"
        " made in every combination, in the order written.",
        {
            "type": ["object", "null"],
            "propertyNames": {"pattern": MATRIX_KEY.pattern},
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "anyOf": [{"items": {"type": "object"}}, {"items": {"not": {"type": "object"}}}],
            },
        },
    ),
    "template": Key(
        "Item fields; any string in it may use {column}, {matrix_key} or {matrix_key.field};"
        " {{ and }} are literal braces.",
        {"type": "object", "minProperties": 1},
        required=True,
    ),
}
BLOCK_KEYS = tuple(BLOCK_FIELDS)

Report = Callable[[str, str, "Origin | None"], None]  # (message, field, where)


Read = Callable[[Path, os.stat_result], None]  # told of each file read, with its stat from before


class Origin(NamedTuple):
    """Where a problem is: an item of the manifest, or a row of a generate block.

    A NamedTuple, not a dataclass: a 100,000-item catalog makes one per item.
    """

    position: int  # the item's index in the job
    id: str = ""
    label: str | None = None  # replaces "items[index]" in messages
    file: str | None = None  # replaces the manifest's name (a CSV file)
    line: int | None = None

    def named(self, item_id: str) -> Origin:
        return self._replace(id=item_id)


@dataclass(frozen=True)
class Generated:
    item: dict[str, Any]
    where: Origin


# A compiled string: literal text and placeholder names, alternating.
_Parts = tuple[tuple[str, str | None], ...]
_FORMATTER = string.Formatter()


def expand(
    block: Any,
    number: int,
    root: Path,
    manifest: str,
    error: Report,
    first_index: int,
    read: Read = lambda path, st: None,
) -> Iterator[Generated]:
    """The items of generate block ``number``; problems go to ``error`` and end the block, and
    ``read`` is told of each file the block reads, with its stat before it was read."""
    prefix = f"generate[{number}]"
    template = _template(block, prefix, error)
    if template is None:
        return
    matrix = _matrix(block.get("matrix"), f"{prefix}.matrix", error)
    source = _rows(block.get("rows"), f"{prefix}.rows", root, error, read)
    if matrix is None or source is None:
        return
    columns, rows, rows_file = source
    names = _names(columns, matrix)
    clash = set(columns) & set(matrix)
    if clash:
        error(f"matrix keys {sorted(clash)} are also columns; rename one", f"{prefix}.matrix", None)
        return
    used: set[str] = set()
    compiled = _compile(template, f"{prefix}.template", names, used, error)
    if compiled is None:
        return
    index = first_index
    combos = [dict(zip(matrix, values, strict=True)) for values in itertools.product(*matrix.values())]
    # In header order, not the set's: a row missing several columns names the same one every run.
    row_columns = [column for column in columns if column in used and names[column] == (column, None)]
    for row_label, line, row in rows:
        cells, missing = _cells(row, row_columns)
        if missing:  # once per row, not once per matrix combination
            error(
                missing,
                "rows",
                Origin(index, label=f"{prefix} {row_label}", file=rows_file or manifest, line=line),
            )
            index += len(combos)
            continue
        for combo in combos:
            suffix = "".join(f", {k}={_label(v)}" for k, v in combo.items())
            where = Origin(
                index, label=f"{prefix} {row_label}{suffix}", file=rows_file or manifest, line=line
            )
            item = _fill(compiled, {**cells, **_choices(combo, names, used)})
            if "id" not in item and isinstance(item.get("prompt"), str):
                item["id"] = _stable_id(item)
            yield Generated(item, where)
            index += 1


def _template(block: Any, prefix: str, error: Report) -> dict[str, Any] | None:
    """The block's template; None after reporting why ``block`` is not a block."""
    if not isinstance(block, dict):
        error("must be a mapping with rows and template", prefix, None)
        return None
    for key in block:
        if key not in BLOCK_KEYS:
            error(
                f"unknown field {key!r}; a generate block has {', '.join(BLOCK_KEYS)}",
                f"{prefix}.{key}",
                None,
            )
            return None
    template = block.get("template")
    if not isinstance(template, dict) or not template:
        error("is required: a mapping of item fields", f"{prefix}.template", None)
        return None
    return template


def _matrix(raw: Any, field: str, error: Report) -> dict[str, list[Any]] | None:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        error("must be a mapping of names to lists", field, None)
        return None
    for key, values in raw.items():
        if not isinstance(key, str) or not MATRIX_KEY.match(key):
            error(f"matrix key {key!r} must be a name like view or shape", field, None)
            return None
        if not isinstance(values, list) or not values:
            error("must be a non-empty list", f"{field}.{key}", None)
            return None
        kinds = {type(v) is dict for v in values}
        if len(kinds) > 1:
            error("must be all plain values or all mappings", f"{field}.{key}", None)
            return None
    return dict(raw)


_Row = tuple[str, int | None, dict[str, Any]]


def _rows(
    raw: Any, field: str, root: Path, error: Report, read: Read
) -> tuple[list[str], list[_Row], str | None] | None:
    if isinstance(raw, str):
        return _csv(root / raw, raw, field, root, error, read)
    if not isinstance(raw, list) or not raw:
        error("is required: a CSV file name, or a non-empty list of mappings", field, None)
        return None
    columns: dict[str, None] = {}
    rows: list[_Row] = []
    for k, row in enumerate(raw):
        if not isinstance(row, dict) or not all(isinstance(key, str) for key in row):
            error("must be a mapping of column names to values", f"{field}[{k}]", None)
            return None
        columns.update(dict.fromkeys(row))
        rows.append((f"rows[{k}]", None, row))
    return list(columns), rows, None


def _csv(
    path: Path, written: str, field: str, root: Path, error: Report, read: Read
) -> tuple[list[str], list[_Row], str] | None:
    try:
        real = path.resolve(strict=True)
        st = real.stat()
        read(real, st)
    except OSError:
        error(f"{written}: file not found", field, None)
        return None
    if not real.is_relative_to(root.resolve()):
        error(f"{written}: resolves outside the manifest's folder tree", field, None)
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CSV_BYTES:
        error(f"{written}: must be a regular file of at most {MAX_CSV_BYTES} bytes", field, None)
        return None
    try:
        text = real.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        error(f"{written}: is not UTF-8 text (byte {exc.start})", field, None)
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    name = str(path)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        error(f"{written}: is empty; it needs a header line", field, None)
        return None
    except csv.Error as exc:
        error(f"{written}: line 1: {exc}", field, None)
        return None
    if len(set(header)) != len(header) or "" in header:
        error(f"{written}: the header has empty or repeated column names: {header}", field, None)
        return None
    rows: list[_Row] = []
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank lines, including a trailing one
            line = reader.line_num
            if len(record) > len(header):
                error(
                    f"has {len(record)} fields but the header has {len(header)}",
                    "rows",
                    Origin(0, file=name, line=line, label=f"row {len(rows) + 1}"),
                )
                return None
            rows.append((f"row {len(rows) + 1}", line, dict(zip(header, record, strict=False))))
    except csv.Error as exc:
        error(f"{written}: line {reader.line_num}: {exc}", field, None)
        return None
    return header, rows, name


def _names(columns: list[str], matrix: dict[str, list[Any]]) -> dict[str, tuple[str, str | None]]:
    """Every placeholder name the template may use: name -> (source key, mapping field)."""
    names: dict[str, tuple[str, str | None]] = {c: (c, None) for c in columns}
    for key, values in matrix.items():
        if isinstance(values[0], dict):
            shared = set.intersection(*(set(v) for v in values))
            names.update({f"{key}.{f}": (key, f) for f in shared})
        else:
            names[key] = (key, None)
    return names


def _compile(template: Any, field: str, names: dict[str, Any], used: set[str], error: Report) -> Any:
    """The template with every string parsed into parts; None after reporting a bad placeholder."""
    if isinstance(template, str):
        try:
            parsed = list(_FORMATTER.parse(template))
        except ValueError as exc:
            error(f"{exc} (write {{{{ and }}}} for literal braces)", field, None)
            return None
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in parsed:
            if name is not None and (spec or conversion or name not in names):
                known = ", ".join(sorted(names)) or "none"
                what = "format specs are not supported" if name in names else "unknown placeholder"
                error(f"{what}: {{{name}}}; known: {known}", field, None)
                return None
            if name is not None:
                used.add(name)
            parts.append((literal, name))
        return tuple(parts)
    if isinstance(template, list):
        items = [_compile(v, f"{field}[{k}]", names, used, error) for k, v in enumerate(template)]
        return None if any(i is None for i in items) else items
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            compiled = _compile(value, f"{field}.{key}", names, used, error)
            if compiled is None:
                return None
            out[key] = compiled
        return out
    return _Literal(template)  # a number or boolean, used as is


def _cells(row: dict[str, Any], used_columns: list[str]) -> tuple[dict[str, str], str | None]:
    """The row's values for the columns the template uses, or why one has none."""
    cells: dict[str, str] = {}
    for column in used_columns:
        cell = row.get(column)
        if cell is None:
            return cells, f"has no value for column {column!r}"
        text = _show(cell).strip()
        if not text:
            return cells, f"column {column!r} is empty"
        cells[column] = text
    return cells, None


def _choices(
    combo: dict[str, Any], names: dict[str, tuple[str, str | None]], used: set[str]
) -> dict[str, str]:
    """The placeholder values one matrix combination gives."""
    values: dict[str, str] = {}
    for name in used:
        key, part = names[name]
        if key in combo:
            values[name] = _show(combo[key][part] if part is not None else combo[key])
    return values


@dataclass(frozen=True)
class _Literal:
    value: Any


def _fill(compiled: Any, values: dict[str, str]) -> Any:
    if isinstance(compiled, _Literal):
        return compiled.value
    if isinstance(compiled, tuple):
        return "".join(literal + (values[name] if name is not None else "") for literal, name in compiled)
    if isinstance(compiled, list):
        return [_fill(v, values) for v in compiled]
    return {key: _fill(value, values) for key, value in compiled.items()}


def _label(value: Any) -> str:
    """A matrix choice in a message: a mapping by its name (or first value), not as a dict."""
    if isinstance(value, dict):
        return _show(value.get("name", next(iter(value.values()))))
    return _show(value)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _stable_id(item: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()[:10]
    return f"{prompt_slug(str(item['prompt']))}-{digest}"
