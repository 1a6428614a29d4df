"""Triage: each item's request decided against the job folder, and what --max-cost prices."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from batchgen.errors import ErrorClass
from batchgen.manifest.references import (
    ItemReference,
    LocalReference,
    ParentImage,
    Reference,
    ReferenceLoader,
)
from batchgen.manifest.spec import ItemSpec
from batchgen.outcomes import Failure, Flag, ItemStatus
from batchgen.output.journal import Entry, JournalFile
from batchgen.output.store import JobStore
from batchgen.plan.plan import fingerprint, plan_item
from batchgen.plan.pricing import PriceTable
from batchgen.plan.resume import Action, Mode
from batchgen.plan.triage import Triage, blocked_entry, blocked_outcome, parents_of

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


def failed(item_id: str, spec_index: int, error_class: ErrorClass, message: str, **extra: Any) -> Entry:
    """An entry for an item that failed with today's request, not to be retried."""
    request = PLANNER(make_spec(spec_index, item_id))
    return Entry(
        item_id,
        ItemStatus.FAILED,
        fingerprint(request, []),
        request.prompt,
        1,
        error_class=error_class,
        message=message,
        retryable=False,
        **extra,
    )


def dead_link(item_id: str, spec_index: int) -> Entry:
    return failed(
        item_id,
        spec_index,
        ErrorClass.DOWNLOAD_FAILED,
        "the link answered 404",
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


def test_every_new_item_is_priced_the_first_one_too(tmp_path: Path) -> None:
    specs = [make_spec(k) for k in range(3)]
    assert [r.id for r in triage(tmp_path, {}, Mode.RUN).to_send(specs)] == ["item-0", "item-1", "item-2"]


def test_work_carries_the_entry_and_whether_its_files_are_there(tmp_path: Path) -> None:
    specs = [make_spec(0, "deleted"), make_spec(1, "edited", "a new prompt")]
    previous = {k: made(tmp_path, i, k) for i, k in enumerate(("deleted", "edited"))}
    (tmp_path / "job/images/deleted.png").unlink()
    todo, left = triage(tmp_path, previous, Mode.RUN).chunk(specs)
    assert left == []
    deleted, edited = todo
    assert (deleted.entry, deleted.intact, deleted.replaces, deleted.version) == (
        previous["deleted"],
        False,
        False,
        2,
    )
    assert (edited.entry, edited.intact, edited.replaces, edited.version) == (
        previous["edited"],
        True,
        True,
        2,
    )


def test_a_reference_counts_by_content_and_an_unreadable_one_is_sent_to_say_why(
    tmp_path: Path, ref_png: Path
) -> None:
    reference = LocalReference(ref_png, "refs/style.png")
    with_ref = make_spec(0, "styled", references=[reference])
    loader = ReferenceLoader(20_000_000)
    request = PLANNER(with_ref)
    entry = made(tmp_path, 0, "styled")
    entry = Entry(
        entry.id, entry.status, fingerprint(request, [loader.digest(reference)]), entry.prompt, 1, entry.files
    )
    decided = triage(tmp_path, {"styled": entry}, Mode.RUN)
    todo, (skipped,) = decided.chunk([with_ref])  # made with this reference's content: done
    assert todo == []
    assert skipped.status is ItemStatus.SKIPPED
    ref_png.unlink()  # unreadable now: sending it reports why, and the next item is still decided
    todo, left = triage(tmp_path, {"styled": entry}, Mode.RUN).chunk([with_ref, make_spec(1, "next")])
    assert [(w.request.id, w.action, w.entry) for w in todo] == [
        ("styled", Action.SEND, entry),
        ("next", Action.SEND, None),
    ]
    assert left == []


def test_items_left_alone_are_reported_as_the_journal_has_them(tmp_path: Path) -> None:
    done = made(tmp_path, 0, "done")
    done = Entry(done.id, done.status, done.fingerprint, done.prompt, 3, done.files, version=2)
    refused = Entry(
        "refused",
        ItemStatus.FAILED,
        fingerprint(PLANNER(make_spec(1, "refused")), []),
        "prompt 1",
        1,
        error_class=ErrorClass.SAFETY_FILTER,
        message="refused: SAFETY",
        http_status=400,
        retryable=False,
    )
    specs = [make_spec(0, "done"), make_spec(1, "refused"), make_spec(2, "never")]
    todo, left = triage(tmp_path, {"done": done, "refused": refused}, Mode.ONLY_FAILED).chunk(specs)
    assert [w.request.id for w in todo] == ["never"]  # never finished: sent by --only-failed
    skipped, failed = left
    assert (skipped.index, skipped.id, skipped.prompt, skipped.status) == (
        0,
        "done",
        "prompt 0",
        ItemStatus.SKIPPED,
    )
    assert (skipped.attempts, skipped.files, skipped.sizes, skipped.version) == (
        3,
        ("images/done.png",),
        (10,),
        2,
    )
    assert (failed.index, failed.id, failed.prompt, failed.status, failed.attempts) == (
        1,
        "refused",
        "prompt 1",
        ItemStatus.FAILED,
        1,
    )
    assert failed.failure == Failure(ErrorClass.SAFETY_FILTER, "refused: SAFETY", 400, False, ())
    _, (pending,) = triage(tmp_path, {}, Mode.REDO, frozenset({"other"})).chunk([make_spec(2, "never")])
    assert (pending.index, pending.id, pending.prompt, pending.status) == (
        2,
        "never",
        "prompt 2",
        ItemStatus.PENDING,
    )
    assert pending.attempts == 0


def test_an_item_left_alone_reports_the_pixel_size_and_flags_its_journal_line_has(tmp_path: Path) -> None:
    done = made(tmp_path, 0, "done")
    files = (JournalFile("images/done.png", "ab", 10, 1376, 768), JournalFile("images/done.png", "ab", 10))
    flagged = Entry(
        done.id, done.status, done.fingerprint, done.prompt, 1, files[:1], flags=(Flag.SIZE_MISMATCH,)
    )
    _, (skipped,) = triage(tmp_path, {"done": flagged}, Mode.RUN).chunk([make_spec(0, "done")])
    assert (skipped.status, skipped.pixels, skipped.flags) == (
        ItemStatus.SKIPPED,
        (1376, 768),
        (Flag.SIZE_MISMATCH,),
    )
    unsized = Entry(done.id, done.status, done.fingerprint, done.prompt, 1, files[1:])  # as 0.3.0 wrote it
    _, (skipped,) = triage(tmp_path, {"done": unsized}, Mode.RUN).chunk([make_spec(0, "done")])
    assert (skipped.status, skipped.pixels, skipped.flags) == (ItemStatus.SKIPPED, None, ())


def test_a_failure_of_a_class_this_version_does_not_know_is_reported_as_an_invalid_response(
    tmp_path: Path,
) -> None:
    lost = Entry("x", ItemStatus.FAILED, "f", "prompt 0", 2, message="odd", links=("https://cdn.test/a.png",))
    _, (failed,) = triage(tmp_path, {"x": lost}, Mode.ONLY_FAILED).chunk([make_spec(0, "x")])
    assert failed.failure == Failure(
        ErrorClass.INVALID_RESPONSE, "odd", None, False, ("https://cdn.test/a.png",)
    )


def test_a_redo_leaves_other_items_as_they_are_pending_and_retryable_failures_included(
    tmp_path: Path,
) -> None:
    gone = made(tmp_path, 0, "gone")
    (tmp_path / "job/images/gone.png").unlink()  # made, but its image deleted: not this redo's business
    busy = Entry(
        "busy", ItemStatus.FAILED, "f", "prompt 1", 4, error_class=ErrorClass.SERVER_ERROR, retryable=True
    )
    specs = [make_spec(0, "gone"), make_spec(1, "busy")]
    todo, (pending, failed) = triage(tmp_path, {"gone": gone, "busy": busy}, Mode.REDO, frozenset()).chunk(
        specs
    )
    assert todo == []
    assert (pending.status, pending.failure) == (ItemStatus.PENDING, None)
    assert failed.failure == Failure(ErrorClass.SERVER_ERROR, "", None, True, ())


def test_an_item_blocked_by_its_parents_is_journaled_and_reported_as_one_record() -> None:
    request = PLANNER(make_spec(3, "c", "c view"))
    why = {"p": "failed (safety_filter)", "q": "has no image yet"}
    entry = blocked_entry(request, why)
    assert entry == Entry(
        "c",
        ItemStatus.FAILED,
        "",
        "c view",
        0,
        error_class=ErrorClass.DEPENDENCY_FAILED,
        message="not sent: an item it references did not succeed (p failed (safety_filter); q has no image yet)",
        retryable=True,
        blocked_by=("p", "q"),
    )
    reported = blocked_outcome(request, why)
    assert (reported.index, reported.id, reported.prompt, reported.status) == (
        3,
        "c",
        "c view",
        ItemStatus.FAILED,
    )
    assert reported.failure == Failure(
        ErrorClass.DEPENDENCY_FAILED, entry.message or "", None, True, blocked_by=("p", "q")
    )


# Chains (docs/chains.md): a view made from its hero's image (`@hero`).


def view(index: int, item_id: str, *refs: Reference) -> ItemSpec:
    return make_spec(
        index, item_id, f"{item_id} view", references=refs or [ItemReference("hero", 1, "@hero")]
    )


def chain(
    tmp_path: Path,
    previous: dict[str, Entry],
    specs: list[ItemSpec],
    mode: Mode = Mode.RUN,
    redo: frozenset[str] = frozenset(),
) -> Triage:
    store = JobStore(tmp_path / "job")
    store.prepare()
    return Triage(PLANNER, previous, store, ReferenceLoader(20_000_000), mode, redo, parents_of(specs))


def made_from(tmp_path: Path, spec: ItemSpec, hero: Entry) -> Entry:
    """An entry for ``spec`` made from ``hero``'s first image as journaled, its image on disk."""
    (image,) = hero.files[:1]
    parent = ParentImage(tmp_path / "job" / image.path, "@hero", image.sha256)
    request = dataclasses.replace(PLANNER(spec), references=(parent,))
    (tmp_path / f"job/images/{spec.id}.png").write_bytes(b"v" * 10)
    files = (JournalFile(f"images/{spec.id}.png", "cd", 10),)
    digest = f"sha256:{image.sha256}"
    return Entry(spec.id, ItemStatus.SUCCEEDED, fingerprint(request, [digest]), request.prompt, 1, files)


def test_a_view_of_a_hero_an_earlier_run_made_is_sent_with_that_image_as_journaled(tmp_path: Path) -> None:
    hero = made(tmp_path, 0, "hero")
    specs = [make_spec(0, "hero"), view(1, "back"), view(2, "side")]
    decided = chain(tmp_path, {"hero": hero}, specs)
    todo, (kept,) = decided.chunk(specs)
    assert (kept.id, kept.status) == ("hero", ItemStatus.SKIPPED)
    parent = ParentImage(tmp_path / "job/images/hero.png", "@hero", "ab")
    assert [(w.request.id, w.action, w.request.references, w.after) for w in todo] == [
        ("back", Action.SEND, (parent,), ()),
        ("side", Action.SEND, (parent,), ()),
    ]
    # Before the run: the hero's image, once for both views (a fresh pod brings it down).
    assert decided.earlier_parents(specs) == list(hero.files)


def test_a_view_made_from_the_heros_image_is_done_until_the_hero_is_made_again(tmp_path: Path) -> None:
    hero = made(tmp_path, 0, "hero")
    specs = [make_spec(0, "hero"), view(1, "back")]
    back = made_from(tmp_path, specs[1], hero)
    decided = chain(tmp_path, {"hero": hero, "back": back}, specs)
    todo, left = decided.chunk(specs)
    assert todo == []
    assert [(o.id, o.status) for o in left] == [("hero", ItemStatus.SKIPPED), ("back", ItemStatus.SKIPPED)]
    assert decided.earlier_parents(specs) == []  # nothing is sent from it
    remade = dataclasses.replace(hero, files=(JournalFile("images/hero.png", "ef", 10),), version=2)
    decided = chain(tmp_path, {"hero": remade, "back": back}, specs)
    (work,), _ = decided.chunk(specs)
    assert (work.request.id, work.action, work.intact, work.replaces) == ("back", Action.SEND, True, True)
    assert work.request.references == (ParentImage(tmp_path / "job/images/hero.png", "@hero", "ef"),)
    assert decided.earlier_parents(specs) == list(remade.files)


def test_a_view_whose_hero_this_run_makes_waits_for_it_then_is_sent_with_its_image(tmp_path: Path) -> None:
    hero = made(tmp_path, 0, "hero")
    specs = [make_spec(0, "hero", "a new hero"), view(1, "back", *two_of_the_hero())]
    back = made_from(tmp_path, specs[1], hero)
    decided = chain(tmp_path, {"hero": hero, "back": back}, specs)
    (sent, waiting), left = decided.chunk(specs)
    assert left == []
    assert (sent.request.id, sent.after) == ("hero", ())
    assert (waiting.request.id, waiting.action, waiting.after, waiting.spec) == (
        "back",
        Action.SEND,
        ("hero",),  # once, though referenced twice
        specs[1],
    )
    assert (waiting.entry, waiting.intact) == (back, True)  # replacing the view made earlier
    assert decided.earlier_parents(specs) == []  # this run makes the hero: nothing to bring
    # The engine wrote the hero's two images: the view is decided again with them.
    decided.made["hero"] = (
        JournalFile("images/hero.png", "e1", 10),
        JournalFile("images/hero-2.png", "e2", 9),
    )
    (work,), _ = decided.chunk(specs[1:])
    assert work.after == ()
    assert work.request.references == (
        ParentImage(tmp_path / "job/images/hero.png", "@hero", "e1"),
        ParentImage(tmp_path / "job/images/hero-2.png", "@hero#2", "e2"),
    )


def two_of_the_hero() -> list[Reference]:
    return [ItemReference("hero", 1, "@hero"), ItemReference("hero", 2, "@hero#2")]


def test_a_views_other_references_keep_their_place_beside_the_heros_image(
    tmp_path: Path, ref_png: Path
) -> None:
    hero = made(tmp_path, 0, "hero")
    style = LocalReference(ref_png, "refs/style.png")
    specs = [make_spec(0, "hero"), view(1, "back", style, ItemReference("hero", 1, "@hero"))]
    decided = chain(tmp_path, {"hero": hero}, specs)
    (work,), _ = decided.chunk(specs)
    assert work.request.references == (style, ParentImage(tmp_path / "job/images/hero.png", "@hero", "ab"))
    assert decided.earlier_parents(specs) == list(hero.files)  # past the file, to the hero


def refused_hero() -> Entry:
    return failed("hero", 0, ErrorClass.SAFETY_FILTER, "refused")


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("refused", "hero failed (safety_filter)"),
        ("not in this run", "ghost is not among this run's items"),
        ("one image, two asked", "hero made 1 image(s), not 2"),
        ("never made", "hero has no image yet"),
    ],
)
def test_a_view_whose_hero_cannot_be_had_is_not_sent_and_says_why(
    tmp_path: Path, case: str, why: str
) -> None:
    hero = made(tmp_path, 0, "hero")
    specs = [make_spec(0, "hero"), view(1, "back")]
    previous, mode, redo = {"hero": hero}, Mode.RUN, frozenset[str]()
    if case == "refused":
        previous, mode = {"hero": refused_hero()}, Mode.ONLY_FAILED
    elif case == "not in this run":
        specs = [make_spec(0, "hero"), view(1, "back", ItemReference("ghost", 1, "@ghost"))]
    elif case == "one image, two asked":
        specs = [make_spec(0, "hero"), view(1, "back", ItemReference("hero", 2, "@hero#2"))]
    else:  # a redo of the view alone, its hero never made
        previous, mode, redo = {}, Mode.REDO, frozenset({"back"})
    decided = chain(tmp_path, previous, specs, mode, redo)
    todo, left = decided.chunk(specs)
    assert todo == []
    (blocked,) = [o for o in left if o.id == "back"]
    assert blocked.status is ItemStatus.FAILED
    assert blocked.failure is not None
    assert blocked.failure.error_class is ErrorClass.DEPENDENCY_FAILED
    assert blocked.failure.message == f"not sent: an item it references did not succeed ({why})"
    assert decided.earlier_parents(specs) == []


def test_a_view_made_earlier_stays_while_its_hero_cannot_be_had(tmp_path: Path) -> None:
    hero = made(tmp_path, 0, "hero")
    specs = [make_spec(0, "hero"), view(1, "back")]
    back = made_from(tmp_path, specs[1], hero)
    previous = {"hero": refused_hero(), "back": back}
    _, (_, kept) = chain(tmp_path, previous, specs, Mode.ONLY_FAILED).chunk(specs)
    assert (kept.id, kept.status, kept.files) == ("back", ItemStatus.SKIPPED, ("images/back.png",))
    (tmp_path / "job/images/back.png").unlink()  # unless its own image is gone
    _, (_, blocked) = chain(tmp_path, previous, specs, Mode.ONLY_FAILED).chunk(specs)
    assert blocked.failure is not None
    assert blocked.failure.error_class is ErrorClass.DEPENDENCY_FAILED


def test_the_hero_an_earlier_run_made_is_looked_up_once_and_this_runs_image_wins(tmp_path: Path) -> None:
    hero = made(tmp_path, 0, "hero")
    previous = {"hero": hero}
    specs = [make_spec(0, "hero"), view(1, "back")]
    decided = chain(tmp_path, previous, specs)
    assert decided.parent_state("hero") == hero.files
    previous["hero"] = refused_hero()  # what this run first found is what its views get
    assert decided.parent_state("hero") == hero.files
    ours = (JournalFile("images/hero.png", "99", 10),)
    decided.made["hero"] = ours
    assert decided.parent_state("hero") == ours
    assert decided.parent_state("ghost") == "is not among this run's items"


def test_only_the_parents_of_views_this_run_sends_are_brought(tmp_path: Path) -> None:
    hero = made(tmp_path, 0, "hero")
    other = dataclasses.replace(
        made(tmp_path, 3, "other"), files=(JournalFile("images/other.png", "ot", 10),)
    )
    specs = [
        make_spec(0, "hero"),
        view(1, "back"),  # made from the hero already: skipped
        make_spec(3, "other"),
        view(4, "far", ItemReference("other", 2, "@other#2")),  # asks for a second image `other` never had
        make_spec(5, "plain"),  # no parents at all
    ]
    back = made_from(tmp_path, specs[1], hero)
    decided = chain(tmp_path, {"hero": hero, "back": back, "other": other}, specs)
    assert decided.earlier_parents(specs) == []
    specs.append(view(6, "side", ItemReference("other", 1, "@other")))
    specs.append(view(7, "top", ItemReference("other", 1, "@other")))
    decided = chain(tmp_path, {"hero": hero, "back": back, "other": other}, specs)
    assert decided.earlier_parents(specs) == list(other.files)
    # Two parents of two images each: the image each view names, each image once.
    two = (JournalFile("images/other-1.png", "o1", 10), JournalFile("images/other-2.png", "o2", 9))
    pair = (JournalFile("images/hero-1.png", "h1", 10), JournalFile("images/hero-2.png", "h2", 9))
    previous = {"hero": dataclasses.replace(hero, files=pair), "other": dataclasses.replace(other, files=two)}
    for f in two + pair:
        (tmp_path / "job" / f.path).write_bytes(b"x" * f.bytes)
    views = [
        view(8, "v8", ItemReference("other", 2, "@other#2")),
        view(9, "v9", ItemReference("hero", 1, "@hero")),
    ]
    specs = [
        make_spec(0, "hero"),
        make_spec(3, "other"),
        *views,
        view(10, "v10", ItemReference("other", 2, "@other#2")),
    ]
    assert chain(tmp_path, previous, specs).earlier_parents(specs) == [two[1], pair[0]]
    # A redo of the hero alone: its view is sent after it, from this run's image, nothing brought.
    redo = chain(tmp_path, {"hero": hero, "back": back}, specs[:2], Mode.REDO, frozenset({"hero", "back"}))
    assert redo.earlier_parents(specs[:2]) == []
