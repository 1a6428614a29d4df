"""Manifest validation: every mistake named by file, item and field; nothing else lets through."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchgen import manifest
from batchgen.errors import ManifestError
from batchgen.manifest.references import LocalReference, UrlReference


def item(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "prompt": "a red tote bag", **fields}


def problems_of(write_manifest: Callable[..., Path], data: dict[str, Any] | str) -> list[str]:
    path = write_manifest(data, name="m.yaml")
    with pytest.raises(ManifestError) as caught:
        manifest.load(path)
    prefix = str(path)
    return [str(p).removeprefix(prefix) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"items": []}, ": items: the list is empty; a job needs at least one item"),
        ({"job": "x"}, ": items: the manifest has no items"),
        ({"items": {"a": 1}}, ": items: must be a list of items, not dict"),
        (
            {"version": 2, "items": [item()]},
            ": version: must be 1 (the only manifest version there is), not 2",
        ),
        ({"job": "../etc", "items": [item()]}, ": job: job name '../etc' must be 1-100 of"),
        ({"itemz": [item()]}, ": itemz: unknown field 'itemz' (did you mean 'items'?)"),
        ({"items": ["just a prompt"]}, ": items[0]: must be a mapping with at least a prompt, not str"),
        ({"items": [{"id": "a"}]}, ": items[0] (id a): prompt: is required"),
        ({"items": [item(prompt="")]}, ": items[0] (id a): prompt: must be non-empty text"),
        ({"items": [item(prompt=True)]}, ": items[0] (id a): prompt: must be non-empty text, not True"),
        (
            {"items": [item(promt="x")]},
            ": items[0] (id a): promt: unknown field 'promt' (did you mean 'prompt'?)",
        ),
        ({"items": [item(size="huge")]}, ": items[0] (id a): size: must be one of 1024x1024"),
        ({"items": [item(size="1024x")]}, ": items[0] (id a): size: must be one of"),
        ({"items": [item(n=0)]}, ": items[0] (id a): n: must be a whole number from 1 to 10, not 0"),
        ({"items": [item(n=11)]}, ": items[0] (id a): n: must be a whole number from 1 to 10, not 11"),
        ({"items": [item(n="2")]}, ": items[0] (id a): n: must be a whole number from 1 to 10, not '2'"),
        (
            {"items": [item(response_format="png")]},
            ": items[0] (id a): response_format: must be b64_json or url",
        ),
        ({"items": [item(extra_fields=[1])]}, ": items[0] (id a): extra_fields: must be a mapping"),
        ({"items": [item(model="")]}, ": items[0] (id a): model: must be a model id"),
        ({"items": [item(aspect_ratio=[1])]}, ": items[0] (id a): aspect_ratio: must be text"),
        (
            {"items": [item(aspect_ratio="1:1", extra_fields={"aspect_ratio": "4:3"})]},
            ": items[0] (id a): aspect_ratio: conflicts with extra_fields.aspect_ratio ('4:3')",
        ),
        (
            {"items": [item(references=["https://x.test/a.png"], extra_fields={"reference_images": ["u"]})]},
            ": items[0] (id a): extra_fields.reference_images: conflicts with references",
        ),
        (
            {"items": [item(references=[f"https://x.test/{k}.png" for k in range(15)])]},
            ": items[0] (id a): references: has 15 references; the service takes at most 14",
        ),
        (
            {"items": [item(references=[3])]},
            ": items[0] (id a): references[0]: must be a file path or URL, not 3",
        ),
        (
            {"items": [item(references=["data:text/plain,hi"])]},
            ": items[0] (id a): references[0]: a data: URI must be",
        ),
        (
            {"items": [item(references=["missing.png"])]},
            ": items[0] (id a): references[0]: missing.png: file not found",
        ),
        (
            {"items": [item(references=["../outside.png"])]},
            ": items[0] (id a): references[0]: ../outside.png:",
        ),
        ({"defaults": {"id": "x"}, "items": [item()]}, ": defaults.id: an id cannot have a default"),
        ({"defaults": {"size": "9K"}, "items": [item()]}, ": defaults.size: must be one of"),
        ({"defaults": [1], "items": [item()]}, ": defaults: must be a mapping, not list"),
        (
            {"limits": {"concurrency": 0}, "items": [item()]},
            ": limits.concurrency: must be at least 1 and at most 1024, not 0",
        ),
        (
            {"limits": {"concurrency": 2.5}, "items": [item()]},
            ": limits.concurrency: must be a whole number, not 2.5",
        ),
        (
            {"limits": {"max_attempts": "4"}, "items": [item()]},
            ": limits.max_attempts: must be a number, not '4'",
        ),
        (
            {"limits": {"timeout_s": 0}, "items": [item()]},
            ": limits.timeout_s: must be above 0 and at most 3600, not 0",
        ),
        (
            {"limits": {"concurency": 4}, "items": [item()]},
            ": limits.concurency: unknown field 'concurency' (did you mean 'concurrency'?)",
        ),
        ({"api": {"base_url": "ftp://x"}, "items": [item()]}, ": api.base_url: must be an http(s) URL"),
        (
            {"api": {"base_url": "https://u:p@x.test/v1"}, "items": [item()]},
            ": api.base_url: must not carry credentials",
        ),
        (
            {"api": {"api_key": "sk-123"}, "items": [item()]},
            ": api.api_key: the API key never lives in a manifest",
        ),
        (
            {"api": {"api_key_env": "MY-KEY"}, "items": [item()]},
            ": api.api_key_env: must be an environment variable name",
        ),
        ({"api": {"reference_field": ""}, "items": [item()]}, ": api.reference_field: must be a field name"),
    ],
)
def test_invalid_manifest_names_file_item_and_field(
    write_manifest: Callable[..., Path], data: dict[str, Any], expected: str
) -> None:
    problems = problems_of(write_manifest, data)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("bad_id", "why"),
    [
        ("a/b", "slash"),
        ("../up", "parent"),
        ("a..b", "dot-dot"),
        ("/abs", "absolute"),
        ("nul\0byte", "NUL"),
        ("x" * 101, "too long"),
        (".hidden", "leading dot"),
        ("sp ace", "space"),
        ("", "empty"),
        ("é", "non-ascii"),
        ("abc\n", "a final newline, which a regex's $ lets through: a file name with a newline"),
    ],
)
def test_hostile_ids_are_refused(write_manifest: Callable[..., Path], bad_id: str, why: str) -> None:
    problems = problems_of(write_manifest, {"items": [item(id=bad_id)]})
    assert problems == [f": items[0]: id: {bad_id!r} {manifest.ID_HELP}"], why


def test_numeric_id_asks_to_be_quoted(write_manifest: Callable[..., Path]) -> None:
    assert problems_of(write_manifest, "items:\n  - id: 1001\n    prompt: p\n") == [
        ': items[0]: id: must be a string (quote it: id: "1001")'
    ]


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([item(id="a"), item(id="a")], ": items[1] (id a): id: has the same id as items[0]"),
        (
            [item(id="SKU-1"), item(id="sku-1")],
            ": items[1] (id sku-1): id: has an id that differs only in case (SKU-1) from items[0]",
        ),
        (
            [item(id="a", n=2), item(id="a-1")],
            ": items[1] (id a-1): id: its image images/a-1 would overwrite",
        ),
        ([item(id="A-2"), item(id="a", n=2)], ": items[1] (id a): id: its image images/a-2 would overwrite"),
        ([{"prompt": "same"}, {"prompt": "same"}], ": items[1] (id same-"),
        ([{"prompt": "same"}, {"prompt": "same"}], "has no id and the same prompt as items[0]"),
    ],
)
def test_colliding_outputs_are_refused(
    write_manifest: Callable[..., Path], items: list[dict[str, Any]], expected: str
) -> None:
    problems = problems_of(write_manifest, {"items": items})
    assert len(problems) == 1
    assert problems[0].startswith(expected) or expected in problems[0], problems


def test_every_problem_is_reported_not_just_the_first(write_manifest: Callable[..., Path]) -> None:
    problems = problems_of(
        write_manifest,
        {"limits": {"concurrency": -1}, "items": [item(size="x"), {"id": "b"}, item(id="c", n=0)]},
    )
    assert len(problems) == 4, problems


def test_defaults_apply_and_items_override(write_manifest: Callable[..., Path], ref_png: Path) -> None:
    path = write_manifest(
        {
            "defaults": {
                "model": "nano-banana-pro",
                "size": "2K",
                "aspect_ratio": "4:5",
                "references": ["refs/style.png"],
                "extra_fields": {"seed": 1, "style": "studio"},
            },
            "items": [
                {"id": "a", "prompt": "p"},
                {"id": "b", "prompt": "q", "size": 512, "aspect_ratio": "16:9", "extra_fields": {"seed": 2}},
                {"id": "c", "prompt": "r", "references": ["https://cdn.test/x.png"], "image_size": "4K"},
            ],
        }
    )
    a, b, c = manifest.load(path).items
    assert (a.model, a.size, dict(a.extra_fields)) == (
        "nano-banana-pro",
        "2K",
        {"aspect_ratio": "4:5", "seed": 1, "style": "studio"},
    )
    assert a.references == (LocalReference(ref_png.resolve(), "refs/style.png"),)
    assert (b.size, dict(b.extra_fields)) == ("512", {"aspect_ratio": "16:9", "seed": 2, "style": "studio"})
    assert c.references == (UrlReference("https://cdn.test/x.png"),)
    assert dict(c.extra_fields)["image_size"] == "4K"


def test_job_name_defaults_to_file_stem_and_ids_derive_from_prompts(
    write_manifest: Callable[..., Path],
) -> None:
    path = write_manifest({"items": [{"prompt": "Flat lay of a tote bag!"}]}, name="spring-catalog.yaml")
    loaded = manifest.load(path)
    assert loaded.job == "spring-catalog"
    (only,) = loaded.items
    assert only.id.startswith("flat-lay-of-a-tote-bag-")
    assert manifest.check_id(only.id) is None
    assert manifest.load(path).items[0].id == only.id  # stable


def test_warnings_do_not_fail_and_are_counted_once(write_manifest: Callable[..., Path]) -> None:
    path = write_manifest(
        {
            "defaults": {"extra_fields": {"seed": 7}},
            "items": [
                item(id="a", size="800x600", model="dall-e-3"),
                item(id="b", aspect_ratio="7:3"),
                item(id="c", aspect_ratio="1:8"),  # fine for nano-banana-2
                item(id="d", size="1024x1792", aspect_ratio="16:9"),
            ],
        }
    )
    warnings = [str(w).removeprefix(str(path)) for w in manifest.load(path).warnings]
    assert (
        ": items[0] (id a): extra_fields.seed: not a field the service documents; passed through as is (and 3 more)"
        in warnings
    )
    assert any(
        w.startswith(": items[0] (id a): size: 800x600 is not a size the service knows") for w in warnings
    )
    assert any(w.startswith(": items[0] (id a): model: 'dall-e-3' is not one of") for w in warnings)
    assert any(w.startswith(": items[1] (id b): aspect_ratio: '7:3'") for w in warnings)
    assert any(
        w.startswith(": items[3] (id d): aspect_ratio: 16:9 disagrees with size 1024x1792") for w in warnings
    )
    assert not any("items[2]" in w for w in warnings)


class TestLocalReferences:
    def test_directory_fifo_symlink_out_oversize_not_image(
        self, write_manifest: Callable[..., Path], tmp_path: Path, ref_png: Path
    ) -> None:
        jobs = tmp_path / "jobs"
        (jobs / "adir").mkdir()
        os.mkfifo(jobs / "pipe.png")
        outside = tmp_path / "secret.png"
        outside.write_bytes(ref_png.read_bytes())
        (jobs / "link.png").symlink_to(outside)
        (jobs / "big.png").write_bytes(ref_png.read_bytes() + b"\0" * 2_000_000)
        (jobs / "notes.png").write_text("not an image")
        refs = ["adir", "pipe.png", "link.png", "big.png", "notes.png", "refs/style.png"]
        problems = problems_of(
            write_manifest, {"limits": {"max_reference_mb": 1}, "items": [item(references=refs)]}
        )
        assert problems == [
            ": items[0] (id a): references[0]: adir: is a directory, not an image file",
            ": items[0] (id a): references[1]: pipe.png: is not a regular file",
            ": items[0] (id a): references[2]: link.png: resolves outside the manifest's folder tree",
            ": items[0] (id a): references[3]: big.png: is 2.0 MB, over the 1.0 MB cap (limits.max_reference_mb)",
            ": items[0] (id a): references[4]: notes.png: is not a PNG, JPEG, WebP or GIF image",
        ]

    def test_symlink_inside_the_tree_is_fine(
        self, write_manifest: Callable[..., Path], ref_png: Path
    ) -> None:
        link = ref_png.parent / "alias.png"
        link.symlink_to(ref_png)
        path = write_manifest({"items": [item(references=["refs/alias.png"])]})
        (ref,) = manifest.load(path).items[0].references
        assert isinstance(ref, LocalReference)
        assert ref.path == ref_png.resolve()

    def test_single_string_reference_is_a_list_of_one(
        self, write_manifest: Callable[..., Path], ref_png: Path
    ) -> None:
        path = write_manifest({"items": [item(references="refs/style.png")]})
        assert len(manifest.load(path).items[0].references) == 1
