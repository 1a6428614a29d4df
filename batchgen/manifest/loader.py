"""Reading a manifest file as YAML data, refusing what a manifest never needs.

Safe loading only, plus: a size cap before parsing; no anchors or aliases
(alias bombs); no tags beyond the plain ones; no duplicate keys (the second
would silently win); and no YAML 1.1 sexagesimal numbers, so an unquoted
``aspect_ratio: 16:9`` stays the string ``"16:9"`` instead of becoming 969.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node

from batchgen.errors import ManifestError, Problem

MAX_MANIFEST_BYTES = 32 * 1024 * 1024

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")
) | {"!"}


class _ManifestLoader(yaml.SafeLoader):
    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
            raise _Refused("YAML anchors and aliases are not allowed", event.start_mark)
        tag = getattr(event, "tag", None) if isinstance(event, ScalarEvent | CollectionStartEvent) else None
        if tag is not None and tag not in _PLAIN_TAGS:
            raise _Refused(f"YAML tag {tag} is not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise _Refused("a mapping key must be a plain value", key_node.start_mark)
            if key in seen:
                raise _Refused(f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _without_sexagesimal() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}
    for first, pairs in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = [(tag, rx) for tag, rx in pairs if tag not in (_INT, _FLOAT, _TIMESTAMP)]
        if kept:
            resolvers[first] = kept
    return resolvers


_ManifestLoader.yaml_implicit_resolvers = _without_sexagesimal()
_ManifestLoader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_ManifestLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path, *, max_bytes: int = MAX_MANIFEST_BYTES) -> dict[str, Any]:
    """The manifest at ``path`` as a mapping, or ManifestError naming file and line."""
    name = str(path)

    def fail(message: str, line: int | None = None) -> ManifestError:
        return ManifestError([Problem(name, message, line=line)])

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise fail("is a directory, not a manifest file")
    if not stat.S_ISREG(st.st_mode):
        raise fail("is not a regular file")
    if st.st_size > max_bytes:
        raise fail(f"is {st.st_size} bytes, over the {max_bytes}-byte manifest cap")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from exc
    if len(raw) > max_bytes:
        raise fail(f"is over the {max_bytes}-byte manifest cap")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_ManifestLoader)
    except _Refused as exc:
        raise fail(exc.message, exc.mark.line + 1 if exc.mark else None) from None
    except ConstructorError as exc:
        mark = exc.problem_mark
        raise fail(f"YAML {exc.problem}", mark.line + 1 if mark else None) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        raise fail(f"invalid YAML: {what}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise fail(f"invalid YAML: {exc}") from None
    if data is None:
        raise fail("is empty; a manifest needs at least `items:`")
    if not isinstance(data, dict):
        raise fail(f"must be a YAML mapping at the top level, not a {type(data).__name__}")
    return data
