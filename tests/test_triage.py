"""Triage: each item's request decided against the job folder, and what --max-cost prices."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from batchgen.errors import ErrorClass
from batchgen.manifest.references import ReferenceLoader
from batchgen.outcomes import ItemStatus
from batchgen.output.journal import Entry, JournalFile
from batchgen.output.store import JobStore
from batchgen.plan.plan import fingerprint, plan_item
from batchgen.plan.pricing import PriceTable
from batchgen.plan.resume import Action, Mode
from batchgen.plan.triage import Triage

from .fakes import make_spec

PLANNER = partial(plan_item, reference_field="reference_images", prices=PriceTable.default())


def triage(
    tmp_path: Path, previous: dict[str, Entry], mode: Mode, redo: frozenset[str] = frozenset()
) -> Triage:
    store = JobStore(tmp_path / "job")
    store.prepare()
    return Triage(PLANNER, previous, store, ReferenceLoader(20_000_000), mode, redo)


def made(tmp_path: Path, spec_index: int, item_id: str) -> Entry:
    """An entry for an item made with today's request, its image on disk."""
    request = PLANNER(make_spec(spec_index, item_id))
    (tmp_path / "job/images").mkdir(parents=True, exist_ok=True)
    (tmp_path / f"job/images/{item_id}.png").write_bytes(b"x" * 10)
    files = (JournalFile(f"images/{item_id}.png", "ab", 10),)
    return Entry(item_id, ItemStatus.SUCCEEDED, fingerprint(request, []), request.prompt, 1, files)


def dead_link(item_id: str, spec_index: int) -> Entry:
    request = PLANNER(make_spec(spec_index, item_id))
    return Entry(
        item_id,
        ItemStatus.FAILED,
        fingerprint(request, []),
        request.prompt,
        1,
        error_class=ErrorClass.DOWNLOAD_FAILED,
        message="the link answered 404",
        retryable=False,
        links=("https://cdn.test/x.png",),
    )


@pytest.mark.parametrize(
    ("mode", "priced"),
    [(Mode.RUN, ["new"]), (Mode.ONLY_FAILED, ["new"]), (Mode.ALL_FAILED, ["lost", "new"])],
)
def test_a_paid_for_link_is_priced_only_where_a_dead_one_is_made_again(
    tmp_path: Path, mode: Mode, priced: list[str]
) -> None:
    specs = [make_spec(0, "done"), make_spec(1, "lost"), make_spec(2, "new")]
    previous = {"done": made(tmp_path, 0, "done"), "lost": dead_link("lost", 1)}
    decided = triage(tmp_path, previous, mode)
    todo, left = decided.chunk(specs)
    assert {work.request.id: work.action for work in todo} == {"lost": Action.FETCH, "new": Action.SEND}
    assert [o.id for o in left] == ["done"]
    assert [request.id for request in decided.to_send(specs)] == priced


def test_a_deleted_image_and_an_edited_prompt_are_priced(tmp_path: Path) -> None:
    specs = [make_spec(0, "kept"), make_spec(1, "deleted"), make_spec(2, "edited", "a new prompt")]
    previous = {k: made(tmp_path, i, k) for i, k in enumerate(("kept", "deleted", "edited"))}
    (tmp_path / "job/images/deleted.png").unlink()
    decided = triage(tmp_path, previous, Mode.RUN)
    assert [request.id for request in decided.to_send(specs)] == ["deleted", "edited"]


def test_a_redo_prices_only_the_items_it_names(tmp_path: Path) -> None:
    specs = [make_spec(0, "a"), make_spec(1, "b")]
    previous = {"a": made(tmp_path, 0, "a"), "b": made(tmp_path, 1, "b")}
    decided = triage(tmp_path, previous, Mode.REDO, frozenset({"b"}))
    assert [request.id for request in decided.to_send(specs)] == ["b"]
