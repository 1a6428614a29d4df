"""Chains: items made from other items' images (``@ID``), end to end against the simulator.

Validation, order without a barrier, failures that block a chain and nothing else, retry, redo
with and without dependents, staleness, shards, a parent's image gone from disk, and kill -9
between a parent and its dependents.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pybase64
import pytest
import yaml

from batchgen.cli.main import main
from batchgen.errors import ManifestError
from batchgen.manifest import validate as manifest
from batchgen.output.journal import read as read_journal
from batchgen.plan import shard
from batchgen.sim.simulator import Simulator

from .conftest import FAST_LIMITS
from .test_rerun import Job
from .test_signals import start_run, when_requests_reach

pytestmark = pytest.mark.usefixtures("api_key")


def chain(root: str, *children: str, refs: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A root item and its children, each made from the root's image."""
    made = [{"id": root, "prompt": f"{root} photo", **({"references": list(refs)} if refs else {})}]
    return made + [{"id": c, "prompt": f"{c} view", "references": [f"@{root}"]} for c in children]


def problems(write_manifest: Callable[..., Path], items: list[dict[str, Any]]) -> list[str]:
    path = write_manifest({"job": "j", "items": items}, name="m.yaml")
    with pytest.raises(ManifestError) as caught:
        manifest.load(path)
    return [str(p).split("jobs/", 1)[1] for p in caught.value.problems]


# Validation


def test_each_bad_item_reference_is_an_error_naming_file_item_and_field(
    write_manifest: Callable[..., Path],
) -> None:
    found = problems(
        write_manifest,
        [
            {"id": "hero", "prompt": "p", "n": 2},
            {"id": "unknown", "prompt": "p", "references": ["@heor"]},
            {"id": "beyond", "prompt": "p", "references": ["@hero#3"]},
            {"id": "self", "prompt": "p", "references": ["@self"]},
            {"id": "spelled", "prompt": "p", "references": ["@hero#0"]},
        ],
    )
    assert found == [
        "m.yaml: items[4] (id spelled): references[0]: @hero#0: an item reference is @ID or @ID#K"
        " (K counts the item's images from 1)",
        "m.yaml: items[1] (id unknown): references[0]: @heor: no item of this job has the id 'heor'"
        " (did you mean @hero?)",
        "m.yaml: items[2] (id beyond): references[0]: @hero#3: item hero makes 2 image(s) (n: 2);"
        " #K counts from 1",
        "m.yaml: items[3] (id self): references[0]: @self: an item cannot reference its own image",
    ]


def test_a_cycle_is_listed_in_order_from_its_first_item(write_manifest: Callable[..., Path]) -> None:
    found = problems(
        write_manifest,
        [
            {"id": "free", "prompt": "p"},
            {"id": "b", "prompt": "p", "references": ["@c"]},
            {"id": "a", "prompt": "p", "references": ["@b"]},
            {"id": "c", "prompt": "p", "references": ["@a", "@free"]},
        ],
    )
    assert found == [
        "m.yaml: items[1] (id b): references: is in a cycle of references: b -> c -> a -> b"
        " (each references the next)"
    ]


def test_a_bad_reference_exits_2_and_sends_nothing(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, [*chain("hero", "back"), {"id": "x", "prompt": "x", "references": ["@nope"]}])
    assert job.run() == 2
    assert sim.stats.requests == 0
    assert not (job.out / "cat").exists()


def test_catalog_templates_reference_items_and_validate_prints_the_chains(
    write_manifest: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]
    path = write_manifest(
        {
            "job": "cat",
            "generate": [
                {"rows": rows, "template": {"id": "{sku}-hero", "prompt": "hero of {sku}"}},
                {
                    "rows": [dict(row) for row in rows],  # a list written twice would be a YAML alias
                    "matrix": {"view": ["back", "side"]},
                    "template": {
                        "id": "{sku}-{view}",
                        "prompt": "{view} of {sku}",
                        "references": ["@{sku}-hero"],
                    },
                },
                {
                    "rows": [{"sku": "a"}],
                    "template": {"id": "{sku}-zoom", "prompt": "z", "references": ["@a-side"]},
                },
            ],
        }
    )
    loaded = manifest.load(path)
    assert {i.id: i.parents for i in loaded.items}["b-side"] == ("b-hero",)
    assert main(["validate", str(path), "--output", str(path.parent / "none")]) == 0
    out = capsys.readouterr().out
    assert "chains: 3 roots, 7 dependents, depth 3;" in out
    assert "stale" not in out
    assert main(["validate", str(path), "--log-format", "json"]) == 0
    chains = orjson.loads(capsys.readouterr().out.splitlines()[-1])["chains"]
    assert chains["roots"] == 3
    assert chains["dependents"] == 7
    assert chains["depth"] == 3
    assert chains["estimated_cost"] > 0


# Sending


def test_the_dependent_is_sent_the_parents_file_byte_for_byte(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], ref_png: Path
) -> None:
    sim = threaded_simulator(record_bodies=True)
    job = Job(
        tmp_path,
        sim,
        [*chain("hero", "back"), {"id": "x", "prompt": "x", "references": ["@back", "refs/style.png"]}],
    )
    assert job.run() == 0
    folder = job.out / "cat"
    bodies = {b["prompt"]: b for b in sim.stats.bodies}
    sent = bodies["back view"]["extra_fields"]["reference_images"]
    assert len(sent) == 1
    assert sent[0].startswith("data:image/png;base64,")
    assert pybase64.b64decode(sent[0].partition(",")[2]) == (folder / "images/hero.png").read_bytes()
    second = bodies["x"]["extra_fields"]["reference_images"]
    assert pybase64.b64decode(second[0].partition(",")[2]) == (folder / "images/back.png").read_bytes()
    assert pybase64.b64decode(second[1].partition(",")[2]) == ref_png.read_bytes()
    # The simulator read it, as it reads any reference, and drew it into the picture.
    assert sim.stats.references["back view"] == 1
    order = [b["prompt"] for b in sim.stats.bodies]
    assert order.index("hero photo") < order.index("back view") < order.index("x")
    links = '"parents":{"back":["hero"],"x":["back"]}'
    assert links in (folder / "report.html").read_text()
    (folder / "report.html").unlink()
    assert job.run() == 0  # nothing changed: the gallery is written from the job's stamp
    assert sim.stats.requests == 3
    assert links in (folder / "report.html").read_text()
    (folder / "report.html").unlink()
    assert main(["report", str(folder), "-q"]) == 0  # from the folder's records alone
    assert links in (folder / "report.html").read_text()


def test_a_refused_parent_blocks_its_own_chain_and_nothing_else(tmp_path: Path, sim: Simulator) -> None:
    items = [*chain("a", "a1", "a2"), *chain("b", "b1")]
    items[0]["prompt"] = "a photo [sim:safety]"
    items.append({"id": "a11", "prompt": "a11 view", "references": ["@a1"]})
    job = Job(tmp_path, sim, items)
    assert job.run() == 1
    assert job.statuses() == {
        "a": "failed",
        "a1": "failed",
        "a2": "failed",
        "b": "succeeded",
        "b1": "succeeded",
        "a11": "failed",
    }
    assert job.requests() == {"a photo [sim:safety]": 1, "b photo": 1, "b1 view": 1}  # none of a's chain
    report = job.report()
    failures = {f["id"]: f for f in report["failures"]}
    assert failures["a"]["class"] == "safety_filter"
    for dependent, parent in (("a1", "a"), ("a2", "a"), ("a11", "a1")):
        assert failures[dependent]["class"] == "dependency_failed"
        assert failures[dependent]["blocked_by"] == [parent]
        assert failures[dependent]["attempts"] == 0
    costs = {e.id: e.estimated_cost for e in read_journal(job.out / "cat").entries.values()}
    assert costs["a1"] == costs["a11"] == 0.0
    assert report["estimated_cost"] == pytest.approx(costs["b"] + costs["b1"])  # nothing for a's chain
    assert report["requests_sent"] == 3
    assert read_journal(job.out / "cat").entries["a1"].blocked_by == ("a",)


def test_retry_sends_the_dependents_once_their_parent_succeeds_in_the_same_run(
    tmp_path: Path, sim: Simulator
) -> None:
    items = chain("hero", "back", "side")
    items[0]["prompt"] = "hero photo [sim:500*2]"  # fails its first two attempts
    job = Job(tmp_path, sim, items, max_attempts=2)
    assert job.run() == 1
    assert job.statuses() == {"hero": "failed", "back": "failed", "side": "failed"}
    assert {f["id"]: f["class"] for f in job.report()["failures"]} == {
        "hero": "server_error",
        "back": "dependency_failed",
        "side": "dependency_failed",
    }
    assert job.requests() == {"hero photo [sim:500*2]": 2}

    assert job.retry() == 0
    assert job.statuses() == {"hero": "succeeded", "back": "succeeded", "side": "succeeded"}
    assert job.requests() == {"hero photo [sim:500*2]": 3, "back view": 1, "side view": 1}


def test_redo_makes_the_dependents_again_after_their_parent_unless_told_not_to(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [
        *chain("hero", "back", "side"),
        {"id": "zoom", "prompt": "zoom", "references": ["@side"]},
        *chain("other", "o1"),
    ]
    job = Job(tmp_path, sim, items)
    assert job.run() == 0
    first = job.requests()
    assert sum(first.values()) == 6
    folder = str(job.out / "cat")

    assert main(["redo", folder, "hero", "--base-url", sim.base_url, "-q"]) == 0
    after = job.requests()
    redone = {p: after[p] - first.get(p, 0) for p in after if after[p] != first.get(p, 0)}
    assert redone == {"hero photo": 1, "back view": 1, "side view": 1, "zoom": 1}  # 4 requests

    assert main(["redo", folder, "hero", "--no-dependents", "--base-url", sim.base_url]) == 0
    assert "3 item(s) made from the redone image(s) will be stale" in capsys.readouterr().err
    again = job.requests()
    assert {p: again[p] - after[p] for p in again if again[p] != after[p]} == {"hero photo": 1}  # 1 request

    assert main(["validate", str(job.path), "--output", str(job.out)]) == 0
    assert "  3 dependent(s) stale: made from an earlier image" in capsys.readouterr().out
    assert job.run() == 0  # the stale ones, and nothing else
    last = job.requests()
    assert {p: last[p] - again[p] for p in last if last[p] != again[p]} == {
        "back view": 1,
        "side view": 1,
        "zoom": 1,
    }
    assert job.run() == 0
    assert job.requests() == last


def test_a_parent_changed_makes_its_chain_stale_and_run_makes_it_again(
    tmp_path: Path, sim: Simulator
) -> None:
    items = [
        *chain("hero", "back"),
        {"id": "zoom", "prompt": "zoom", "references": ["@back"]},
        *chain("other", "o1"),
    ]
    job = Job(tmp_path, sim, items)
    assert job.run() == 0
    before = job.requests()
    items[0]["prompt"] = "hero photo, in blue"
    job.write(items)
    assert job.run() == 0
    after = job.requests()
    assert {p: after[p] - before.get(p, 0) for p in after if after[p] != before.get(p, 0)} == {
        "hero photo, in blue": 1,
        "back view": 1,
        "zoom": 1,
    }
    assert job.statuses()["o1"] == "skipped"


def test_a_parent_whose_image_is_gone_is_made_again_before_its_dependents(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator]
) -> None:
    sim = threaded_simulator(record_bodies=True)
    job = Job(tmp_path, sim, chain("hero", "back"))
    assert job.run() == 0
    hero = job.out / "cat/images/hero.png"
    hero.unlink()
    assert job.run() == 0
    assert job.requests() == {"hero photo": 2, "back view": 2}
    last = [b for b in sim.stats.bodies if b["prompt"] == "back view"][-1]
    sent = last["extra_fields"]["reference_images"][0]
    assert pybase64.b64decode(sent.partition(",")[2]) == hero.read_bytes()


def test_a_damaged_parent_image_is_never_sent(tmp_path: Path, sim: Simulator) -> None:
    job = Job(tmp_path, sim, chain("hero", "back"))
    assert job.run() == 0
    hero = job.out / "cat/images/hero.png"
    data = bytearray(hero.read_bytes())
    data[-20] ^= 0xFF  # same size: only its hash tells
    hero.write_bytes(bytes(data))
    assert main(["redo", str(job.out / "cat"), "back", "--base-url", sim.base_url, "-q"]) == 1
    assert job.requests() == {"hero photo": 1, "back view": 1}
    (failure,) = job.report()["failures"]
    assert failure["class"] == "reference_error"
    assert "changed on disk" in failure["message"]


def test_shards_keep_every_chain_together(tmp_path: Path, sim: Simulator) -> None:
    items = [entry for k in range(8) for entry in chain(f"p{k}", f"p{k}-a", f"p{k}-b")]
    items += [{"id": "both", "prompt": "both", "references": ["@p0-a", "@p5-b"]}]
    job = Job(tmp_path, sim, items)
    loaded = manifest.load(job.path)
    seen: set[str] = set()
    for k in (1, 2, 3):
        mine = {item.id for item in shard.select(loaded.items, (k, 3), loaded.chain_roots)}
        assert not mine & seen
        seen |= mine
        for item in loaded.items:
            if item.id in mine:
                assert set(item.parents) <= mine, f"{item.id} of shard {k} references another shard's item"
        assert job.run("--shard", f"{k}/3") == 0
    assert seen == {item.id for item in loaded.items}
    assert sum(job.requests().values()) == len(items)  # every item once, none blocked
    # Joined by "both", chains 0 and 5 take the smaller root's shard.
    roots = loaded.chain_roots
    assert roots["both"] == roots["p5-b"] == roots["p0"] == "p0"
    assert roots["p3-a"] == "p3"


def test_kill_9_between_a_parent_and_its_dependent_then_resume_pays_for_nothing_twice(
    tmp_path: Path, threaded_simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = threaded_simulator(latency_ms=300)
    path = tmp_path / "jobs" / "cat.yaml"
    path.parent.mkdir()
    data = {"job": "cat", "limits": {**FAST_LIMITS, "concurrency": 4}, "items": chain("hero", "back")}
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    reached = when_requests_reach(sim, 2)  # the dependent is out: its parent is written
    with start_run(path, out, sim, "-q") as proc:
        assert reached.wait(timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert read_journal(out / "cat").entries["hero"].succeeded
    monkeypatch.setenv("BATCHGEN_API_KEY", "k")
    assert main(["run", str(path), "--base-url", sim.base_url, "--output", str(out), "-q"]) == 0
    assert sim.stats.by_prompt["hero photo"] == 1  # never sent again
    keys = sim.takes()["back view"]
    assert len(keys) == 1  # sent again under the key it had: the relay can tell it is the same
    assert {e.id: e.status for e in read_journal(out / "cat").entries.values()} == {
        "hero": "succeeded",
        "back": "succeeded",
    }


# The documentation


REPO = Path(__file__).resolve().parent.parent


def blocks(text: str, kind: str) -> list[str]:
    """The fenced code blocks of ``text`` whose fence names ``kind`` ("" for a bare fence)."""
    found: list[str] = []
    current: list[str] | None = None
    wanted = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, wanted = [], line.strip() == "```" + kind
            else:
                if wanted:
                    found.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return found


def test_the_docs_example_validates_as_the_page_shows(
    tmp_path: Path, ref_png: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = (REPO / "docs/chains.md").read_text()
    jobs = tmp_path / "jobs"
    (jobs / "catalog/refs").mkdir(parents=True)
    (jobs / "catalog/products.csv").write_text("sku,name\ntote-1001,red tote bag\ncap-2001,blue cap\n")
    for name in ("tote-1001", "cap-2001", "brand-style"):
        (jobs / f"catalog/refs/{name}.png").write_bytes(ref_png.read_bytes())
    (jobs / "spring.yaml").write_text(blocks(page, "yaml")[0])
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "jobs/spring.yaml"]) == 0
    shown = blocks(page, "")[0]
    assert capsys.readouterr().out == shown


def test_the_readme_section_shows_a_catalog_and_links_to_the_page() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Hero first: chains\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/chains.md)" in section
    assert (REPO / "docs/chains.md").is_file()
    (example,) = blocks(section, "yaml")
    assert '"@{sku}-hero"' in example
    assert yaml.safe_load(example)["generate"][1]["template"]["references"][0] == "@{sku}-hero"
