"""Reading manifest YAML: what a manifest never needs is refused with file and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchgen.errors import ManifestError
from batchgen.manifest.loader import read_yaml

ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
items: *g
"""


def load_text(tmp_path: Path, text: str | bytes) -> dict[str, object]:
    path = tmp_path / "m.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return read_yaml(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ALIAS_BOMB, "m.yaml:1: YAML anchors and aliases are not allowed"),
        ("defaults: &d {size: 1K}\nitems: []\n", "m.yaml:1: YAML anchors and aliases are not allowed"),
        ("items: !!python/object/apply:os.system ['echo hi']\n", "m.yaml:1: YAML tag"),
        ("items:\n  - prompt: !custom hi\n", "m.yaml:2: YAML tag !custom is not allowed"),
        ("job: a\njob: b\nitems: []\n", "m.yaml:2: duplicate key 'job'"),
        ("items: [\n", "m.yaml:2: invalid YAML"),
        ("", "m.yaml: is empty"),
        ("# only a comment\n", "m.yaml: is empty"),
        ("- a\n- b\n", "m.yaml: must be a YAML mapping at the top level, not a list"),
        ("just text\n", "m.yaml: must be a YAML mapping at the top level, not a str"),
        (b"items: \xff\xfe\n", "m.yaml: is not UTF-8 text"),
    ],
)
def test_hostile_yaml_is_refused_with_file_and_line(tmp_path: Path, text: str | bytes, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_text(tmp_path, text)
    (problem,) = caught.value.problems
    assert str(problem).startswith(str(tmp_path / expected)), str(problem)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("r: 16:9", "16:9"),  # YAML 1.1 would read 969
        ("r: 4:5", "4:5"),
        ("r: 1:1", "1:1"),
        ("r: 21:9", "21:9"),
        ("r: 2024-05-01", "2024-05-01"),  # not a date object
        ("r: 512", 512),
        ("r: 0x10", 16),
        ("r: 1.5", 1.5),
        ("r: 1e3", 1000.0),
        ("r: true", True),
        ("r: '16:9'", "16:9"),
    ],
)
def test_scalars_read_as_a_manifest_author_means_them(tmp_path: Path, text: str, value: object) -> None:
    assert load_text(tmp_path, text + "\n") == {"r": value}


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    assert load_text(tmp_path, "\ufeffjob: a\n".encode()) == {"job": "a"}


def test_manifest_over_the_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("items: []\n" + "#" * 2000 + "\n")
    with pytest.raises(ManifestError, match="over the 1000-byte manifest cap"):
        read_yaml(path, max_bytes=1000)


def test_missing_file_and_directory_and_fifo(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match="is a directory"):
        read_yaml(tmp_path)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ManifestError, match="is not a regular file"):
        read_yaml(fifo)  # must not block opening it
