"""The manifest schema: shipped as generated, met by every example, and in agreement with the validator.

An editor checks a manifest against the schema as it is typed; ``batchgen validate`` checks it
before anything is sent. Were they to disagree, the editor would flag a good manifest or pass a
bad one, so each case below goes through both and they must give the same answer.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import batchgen
from batchgen import manifest
from batchgen.errors import ManifestError
from batchgen.manifest import schema
from batchgen.manifest.loader import read_yaml

REPO = Path(__file__).resolve().parent.parent
SHIPPED = Path(batchgen.__file__).parent / "manifest" / "manifest.schema.json"
MANIFESTS = sorted((REPO / "jobs").glob("*.yaml")) + sorted((REPO / "jobs" / "check").glob("*.yaml"))
SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
VALIDATOR = Draft202012Validator(schema.document())


def item(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "prompt": "a red tote bag", **fields}


def job(*items: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"items": list(items), **top}


def block(**fields: Any) -> dict[str, Any]:
    """A generate block that makes two items, with ``fields`` replacing or adding keys."""
    return {
        "rows": [{"sku": "A1", "name": "tote", "size": "2K"}, {"sku": "B2", "name": "cap", "size": "4K"}],
        "template": {"id": "{sku}", "prompt": "Studio photo of the {name}"},
        **fields,
    }


def template(**fields: Any) -> dict[str, Any]:
    return block(template={"id": "{sku}", "prompt": "Studio photo of the {name}", **fields})


def test_the_shipped_file_is_the_generated_schema() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == schema.text(), (
        "batchgen/manifest/manifest.schema.json is stale; regenerate it with"
        " `.venv/bin/python -m batchgen.manifest.schema > batchgen/manifest/manifest.schema.json`"
    )


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(schema.document())
    assert schema.document()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_text_is_deterministic_json() -> None:
    assert schema.text() == schema.text()
    assert schema.text().endswith("}\n")
    assert json.loads(schema.text()) == schema.document()


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_manifest_meets_the_schema(path: Path) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(read_yaml(path))
    ]
    assert errors == []


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_manifest_names_the_schema_on_its_first_line(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    found = SCHEMA_LINE.match(first)
    assert found, f"{path}: the first line should be `# yaml-language-server: $schema=<path>`"
    assert (path.parent / found.group(1)).resolve() == SHIPPED.resolve()


def test_the_examples_are_all_found() -> None:
    assert {p.name for p in MANIFESTS} >= {"demo.yaml", "catalog.yaml", "reference-key.yaml"}


# Each case goes through the schema and through manifest.load, in a folder that holds
# refs/style.png, catalog.csv (sku, name) and prices.json. Left out, because a schema cannot say
# them (it sees one document, not the files beside it, and cannot compare two values):
# - reference files: missing, not an image, too large, outside the manifest's folder tree;
# - rows files: missing, not UTF-8, a bad header, empty cells, lines with too many fields;
# - template placeholders the CSV header or the matrix does not have, format specs, lone braces;
#   matrix keys that are also columns; a template's text once rows fill it in (id: "{sku}..x");
# - ids: the same twice (also ignoring case), two items without ids and the same prompt, image
#   names that would collide (a-1 beside a with n: 2);
# - a request over api.max_request_mb once its references are counted;
# - prices: a file that does not exist; job: a default from a file name outside the id rule;
# - aspect_ratio or image_size beside a different extra_fields value of the same key, and
#   references beside extra_fields.<api.reference_field> (the field is a setting);
# - what the loader refuses before either sees data (anchors, tags, duplicate keys, size);
# - where JSON has no word for the difference: n: 2.0 and aspect_ratio: 2.0 (refused by the
#   validator, which tells YAML's float from an int) and version: true (taken as 1 by the
#   validator, refused by the schema); base_url oddities (leading spaces, an empty user name).
_CHANNELS = {
    "amazon": {"size": "2000x2000", "fit": "pad", "background": "#FFFFFF", "format": "jpeg", "quality": 90},
    "web": {"width": 1200, "format": "webp", "quality": 82},
    "square": {"size": "1080x1080", "fit": "crop", "format": "png", "metadata": False},
    "tall": {"height": 800, "format": "jpeg"},
    "box": {"width": 800, "height": 600, "format": "webp"},
}
GOOD: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {"items": [{"prompt": "a tote bag"}]}),
    ("variants", job(item(variants=["web"]), item(id="b", variants=[]), variants=_CHANNELS)),
    (
        "variants chosen in defaults",
        {**job(item(), variants=_CHANNELS), "defaults": {"variants": ["amazon"]}},
    ),
    ("variants: null", job(item(), variants=None)),
    ("an id", job(item())),
    ("a null id is no id", job(item(id=None))),
    (
        "every item field",
        job(
            item(
                model="nano-banana-pro",
                size="2K",
                n=2,
                response_format="url",
                aspect_ratio="4:5",
                image_size="2K",
                references=["https://cdn.example.com/a.png"],
                extra_fields={"seed": 7},
            )
        ),
    ),
    (
        "defaults",
        job(
            item(),
            defaults={"model": "nano-banana-2", "size": "2K", "aspect_ratio": "4:5", "n": 2},
        ),
    ),
    ("the prompt from defaults", {"defaults": {"prompt": "a tote bag"}, "items": [{"id": "a"}]}),
    ("a known WxH", job(item(size="1024x1792"))),
    ("another WxH only warns", job(item(size="800x600"))),
    ("512 as a number", job(item(size=512))),
    ("another model only warns", job(item(model="some-other-model"))),
    ("an unusual ratio only warns", job(item(aspect_ratio="7:5"))),
    ("an image size as a number", job(item(image_size=512))),
    ("unknown extra fields only warn", job(item(extra_fields={"seed": 7, "style": {"x": 1}}))),
    ("14 references", job(item(references=[f"https://x.test/{k}.png" for k in range(14)]))),
    ("one reference without a list", job(item(references="https://x.test/a.png"))),
    ("a data: URI", job(item(references=["data:image/png;base64,iVBORw0KGgo="]))),
    ("a local reference", job(item(references=["refs/style.png"]), defaults={"references": []})),
    ("n at its bounds", job(item(n=1), item(id="b", n=10))),
    (
        "nulls stand for absent keys",
        job(item(), version=1, job="x", defaults=None, limits=None, api=None, prices=None, generate=None),
    ),
    (
        "every limit",
        job(
            item(),
            limits={
                "concurrency": 16,
                "requests_per_minute": 120,
                "max_attempts": 5,
                "timeout_s": 60,
                "retry_base_s": 0,
                "retry_cap_s": 30,
                "max_retry_after_s": 60,
                "max_reference_mb": 10,
                "max_consecutive_failures": 5,
                "grace_s": 0,
                "retry_after_send": False,
                "max_unconfirmed_per_item": 1,
                "reference_max_side": 1024,
                "reference_max_mb": 2.5,
            },
        ),
    ),
    ("a whole float for a whole limit", job(item(), limits={"concurrency": 8.0})),
    ("no rate limit", job(item(), limits={"requests_per_minute": None})),
    (
        "every api field",
        job(
            item(),
            api={
                "base_url": "http://localhost:8080/v1",
                "api_key_env": "MY_KEY",
                "reference_field": "image_urls",
                "max_request_mb": 64,
            },
        ),
    ),
    ("an IPv6 base URL", job(item(), api={"base_url": "https://[::1]:8443/v1"})),
    ("an upper-case scheme", job(item(), api={"base_url": "HTTPS://relay.example/v1"})),
    ("a price table", job(item(), prices="prices.json")),
    ("a job name", job(item(), job="spring-catalog_2.v1")),
    (
        "generate: rows and a matrix",
        {
            "generate": [
                block(
                    matrix={
                        "view": ["front", "back"],
                        "shape": [{"name": "square", "ratio": "1:1"}, {"name": "tall", "ratio": "4:5"}],
                    },
                    template={
                        "id": "{sku}-{view}-{shape.name}",
                        "prompt": "the {name}, {view} view",
                        "aspect_ratio": "{shape.ratio}",
                        "n": 2,
                        "references": ["refs/style.png"],
                        "extra_fields": {"seed": 3},
                    },
                )
            ]
        },
    ),
    ("generate: rows from a CSV file", {"generate": [block(rows="catalog.csv")]}),
    ("generate: one block without the list", {"generate": block()}),
    ("generate: a null matrix", {"generate": [block(matrix=None)]}),
    ("generate: a size from a row", {"generate": [template(size="{size}")]}),
    ("generate beside items", job(item(id="own"), generate=[block()])),
    ("an empty item list beside generate", {"items": [], "generate": [block()]}),
    ("no blocks beside items", job(item(), generate=[])),
    (
        "a template without a prompt, which defaults give",
        {"defaults": {"prompt": "a tote bag"}, "generate": [block(template={"id": "{sku}"})]},
    ),
]

BAD: list[tuple[str, dict[str, Any]]] = [
    ("an unknown top key", job(item(), colour="red")),
    ("an unknown item key", job(item(promt="x"))),
    ("an id in defaults", job(item(), defaults={"id": "x"})),
    ("an unknown key in defaults", job(item(), defaults={"sise": "2K"})),
    ("defaults not a mapping", job(item(), defaults=["2K"])),
    ("a bad value in defaults", job(item(), defaults={"n": 0})),
    ("size 3K", job(item(size="3K"))),
    ("size in lower case", job(item(size="2k"))),
    ("size a number other than 512", job(item(size=1024))),
    ("size a half WxH", job(item(size="1024x"))),
    ("n=0", job(item(n=0))),
    ("n=11", job(item(n=11))),
    ("n as text", job(item(n="2"))),
    ("n true", job(item(n=True))),
    ("n a fraction", job(item(n=1.5))),
    ("the prompt missing", {"items": [{"id": "a"}]}),
    ("the prompt empty", job(item(prompt=""))),
    ("the prompt blank", job(item(prompt="   "))),
    ("the prompt a number", job(item(prompt=5))),
    ("the prompt null", job(item(prompt=None))),
    ("the prompt too long", job(item(prompt="x" * 32_001))),
    ("an id with ..", job(item(id="a..b"))),
    ("an id with a leading dot", job(item(id=".hidden"))),
    ("an id with a slash", job(item(id="a/b"))),
    ("an id of 101 characters", job(item(id="a" * 101))),
    ("an id that is a number", job(item(id=7))),
    ("15 references", job(item(references=[f"https://x.test/{k}.png" for k in range(15)]))),
    ("a reference that is a number", job(item(references=[3]))),
    ("a blank reference", job(item(references=["  "]))),
    ("a data: URI that is no image", job(item(references=["data:text/plain,hi"]))),
    ("references null", job(item(references=None))),
    ("references a mapping", job(item(references={"a": "b"}))),
    ("limits.concurrency 0", job(item(), limits={"concurrency": 0})),
    ("limits.concurrency as text", job(item(), limits={"concurrency": "8"})),
    ("limits.concurrency true", job(item(), limits={"concurrency": True})),
    ("limits.concurrency a fraction", job(item(), limits={"concurrency": 2.5})),
    ("limits.concurrency too high", job(item(), limits={"concurrency": 1025})),
    ("limits.timeout_s 0", job(item(), limits={"timeout_s": 0})),
    ("limits.requests_per_minute 0", job(item(), limits={"requests_per_minute": 0})),
    ("limits.retry_after_send as text", job(item(), limits={"retry_after_send": "yes"})),
    ("limits.retry_base_s negative", job(item(), limits={"retry_base_s": -1})),
    ("limits.reference_max_side too small", job(item(), limits={"reference_max_side": 32})),
    ("an unknown limit", job(item(), limits={"concurency": 8})),
    ("limits not a mapping", job(item(), limits="fast")),
    ("api.base_url not a string", job(item(), api={"base_url": 42})),
    ("api.base_url not http", job(item(), api={"base_url": "ftp://relay.example/v1"})),
    ("api.base_url without a host", job(item(), api={"base_url": "https:///v1"})),
    ("api.base_url with credentials", job(item(), api={"base_url": "https://me:pw@relay.example/v1"})),
    ("api.base_url relative", job(item(), api={"base_url": "relay.example/v1"})),
    ("the API key in the manifest", job(item(), api={"api_key": "sk-123"})),
    ("an unknown api key", job(item(), api={"baseurl": "https://relay.example/v1"})),
    ("api.api_key_env not a name", job(item(), api={"api_key_env": "1KEY"})),
    ("api.reference_field with a space", job(item(), api={"reference_field": "image urls"})),
    ("api.max_request_mb 0", job(item(), api={"max_request_mb": 0})),
    ("api.max_request_mb too high", job(item(), api={"max_request_mb": 2048})),
    ("api not a mapping", job(item(), api="https://relay.example/v1")),
    ("an empty aspect ratio", job(item(aspect_ratio=""))),
    ("an aspect ratio as a list", job(item(aspect_ratio=[16, 9]))),
    ("an aspect ratio true", job(item(aspect_ratio=True))),
    ("an aspect ratio as a fraction", job(item(aspect_ratio=1.5))),
    ("an empty image size", job(item(image_size=" "))),
    ("extra_fields a list", job(item(extra_fields=[1]))),
    ("extra_fields text", job(item(extra_fields="seed=7"))),
    ("response_format png", job(item(response_format="png"))),
    ("an empty model", job(item(model=""))),
    ("a model that is a number", job(item(model=2))),
    ("version 2", job(item(), version=2)),
    ("version as text", job(item(), version="1")),
    ("a job name with ..", job(item(), job="../etc")),
    ("a job name that is a number", job(item(), job=5)),
    ("prices a number", job(item(), prices=3)),
    ("prices empty", job(item(), prices="")),
    ("no items", {"job": "x"}),
    ("an empty item list", {"items": []}),
    ("null items", {"items": None}),
    ("items a mapping", {"items": {"a": item()}}),
    ("an item that is text", {"items": ["just a prompt"]}),
    ("generate: no template", {"generate": [{"rows": [{"sku": "A1"}]}]}),
    ("generate: an empty template", {"generate": [block(template={})]}),
    ("generate: no rows", {"generate": [{"template": {"prompt": "p"}}]}),
    ("generate: empty rows", {"generate": [block(rows=[])]}),
    ("generate: rows of text", {"generate": [block(rows=["A1"])]}),
    ("generate: an unknown key", {"generate": [block(matrx={"view": ["front"]})]}),
    ("generate: a matrix key with a dash", {"generate": [block(matrix={"the-view": ["front"]})]}),
    ("generate: an empty matrix list", {"generate": [block(matrix={"view": []})]}),
    ("generate: a matrix of mixed values", {"generate": [block(matrix={"view": ["front", {"name": "x"}]})]}),
    ("generate: a matrix that is a list", {"generate": [block(matrix=["front", "back"])]}),
    ("generate: text", {"generate": "catalog.csv"}),
    ("generate: a list of text", {"generate": ["catalog.csv"]}),
    ("generate: an empty list and no items", {"generate": []}),
    ("generate: an unknown template key", {"generate": [template(promt="x")]}),
    ("generate: a size with no placeholder", {"generate": [template(size="3K")]}),
    ("generate: n from a placeholder", {"generate": [template(n="{sku}")]}),
    ("generate: a template without a prompt", {"generate": [block(template={"id": "{sku}"})]}),
    ("variants: an unknown format", job(item(), variants={"a": {"width": 10, "format": "gif"}})),
    ("variants: a bad size", job(item(), variants={"a": {"size": "20x", "format": "jpeg"}})),
    ("variants: a size of 0", job(item(), variants={"a": {"size": "0x10", "format": "jpeg"}})),
    ("variants: no size at all", job(item(), variants={"a": {"format": "jpeg"}})),
    ("variants: no format", job(item(), variants={"a": {"width": 10}})),
    ("variants: size and width", job(item(), variants={"a": {"size": "9x9", "width": 9, "format": "png"}})),
    ("variants: fit without size", job(item(), variants={"a": {"width": 9, "fit": "pad", "format": "png"}})),
    (
        "variants: an unknown fit",
        job(item(), variants={"a": {"size": "9x9", "fit": "fill", "format": "png"}}),
    ),
    ("variants: quality 0", job(item(), variants={"a": {"width": 9, "format": "jpeg", "quality": 0}})),
    ("variants: quality for png", job(item(), variants={"a": {"width": 9, "format": "png", "quality": 50}})),
    (
        "variants: a bad colour",
        job(item(), variants={"a": {"width": 9, "format": "jpeg", "background": "white"}}),
    ),
    (
        "variants: metadata text",
        job(item(), variants={"a": {"width": 9, "format": "jpeg", "metadata": "no"}}),
    ),
    ("variants: an unknown key", job(item(), variants={"a": {"width": 9, "format": "jpeg", "dpi": 72}})),
    ("variants: the reserved name", job(item(), variants={"thumb": {"width": 9, "format": "png"}})),
    ("variants: a capital in a name", job(item(), variants={"Web": {"width": 9, "format": "png"}})),
    ("variants: a name too long", job(item(), variants={"a" * 33: {"width": 9, "format": "png"}})),
    ("variants: a list", job(item(), variants=["web"])),
    (
        "variants: an item's choice as text",
        job(item(variants="web"), variants={"web": {"width": 9, "format": "png"}}),
    ),
]


@pytest.fixture
def write_case(write_manifest: Callable[..., Path], ref_png: Path) -> Callable[[dict[str, Any]], Path]:
    """Writes a case's manifest beside the files the good cases name."""
    folder = ref_png.parent.parent
    (folder / "catalog.csv").write_text("sku,name\nA1,tote\nB2,cap\n", encoding="utf-8")
    shutil.copy(Path(batchgen.__file__).with_name("prices.json"), folder / "prices.json")
    return lambda data: write_manifest(data, name="case.yaml", folder=folder)


def schema_says(path: Path) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(read_yaml(path))]


def validator_says(path: Path, *, messages_only: bool = False) -> list[str]:
    try:
        manifest.load(path)
    except ManifestError as caught:
        return [p.message if messages_only else str(p) for p in caught.problems]
    return []


@pytest.mark.parametrize(("name", "data"), GOOD, ids=[name for name, _ in GOOD])
def test_both_accept(name: str, data: dict[str, Any], write_case: Callable[[dict[str, Any]], Path]) -> None:
    path = write_case(data)
    assert (schema_says(path), validator_says(path)) == ([], [])


@pytest.mark.parametrize(("name", "data"), BAD, ids=[name for name, _ in BAD])
def test_both_refuse(name: str, data: dict[str, Any], write_case: Callable[[dict[str, Any]], Path]) -> None:
    path = write_case(data)
    by_schema, by_validator = schema_says(path), validator_says(path)
    assert by_schema, f"the schema takes what the validator refuses: {by_validator}"
    assert by_validator, f"the validator takes what the schema refuses: {by_schema}"


def test_there_are_enough_cases() -> None:
    assert len(GOOD) + len(BAD) >= 25
    assert len({name for name, _ in GOOD + BAD}) == len(GOOD) + len(BAD)


def _known(message: str) -> set[str]:
    """The keys a validator message lists after "known:" or "has"."""
    listed = re.search(r"(?:; known: |a generate block has )(.*)$", message)
    assert listed, message
    return set(listed.group(1).split(", "))


def _properties(*path: str) -> set[str]:
    node: Any = schema.document()
    for step in path:
        node = node[step]
    return set(node["properties"])


# Where an unknown key goes, and where the schema lists the keys of that place. The validator's
# own message names the keys it knows, so the schema is compared with what the validator does,
# not with the table both are made from.
PLACES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("top level", job(item(), zzqx=1), ()),
    ("item", job(item(zzqx=1)), ("$defs", "item")),
    ("defaults", job(item(), defaults={"zzqx": 1}), ("properties", "defaults")),
    ("limits", job(item(), limits={"zzqx": 1}), ("properties", "limits")),
    ("api", job(item(), api={"zzqx": 1}), ("properties", "api")),
    ("generate block", {"generate": [block(zzqx=1)]}, ("$defs", "block")),
    ("template", {"generate": [template(zzqx=1)]}, ("$defs", "block", "properties", "template")),
]


@pytest.mark.parametrize(("place", "data", "path"), PLACES, ids=[p for p, _, _ in PLACES])
def test_the_schema_knows_the_keys_the_validator_knows(
    place: str, data: dict[str, Any], path: tuple[str, ...], write_case: Callable[[dict[str, Any]], Path]
) -> None:
    said = validator_says(write_case(data), messages_only=True)
    (message,) = {m for m in said if m.startswith("unknown field 'zzqx'")}
    assert _properties(*path) == _known(message), place


def test_the_item_keys_are_the_validators() -> None:
    assert list(schema.document()["$defs"]["item"]["properties"]) == list(manifest.ITEM_KEYS)
    assert set(schema.document()["properties"]["defaults"]["properties"]) == set(manifest.ITEM_KEYS) - {"id"}
