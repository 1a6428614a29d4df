"""Shard arithmetic: the N slices cover the job exactly, on every machine alike."""

from __future__ import annotations

import random
import string
from collections import Counter

import pytest

from batchgen.plan import shard

from .fakes import make_spec

GOLDEN_8 = [8, 3, 1, 5]
GOLDEN_3 = [2, 2, 3, 1]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 100])
def test_slices_are_disjoint_cover_everything_and_are_balanced(n: int) -> None:
    rng = random.Random(n)
    ids = {
        "".join(rng.choices(string.ascii_letters + string.digits + "._-", k=rng.randint(1, 40)))
        for _ in range(20_000)
    }
    placed = {i: shard.shard_of(i, n) for i in ids}
    slices: dict[int, set[str]] = {k: set() for k in range(1, n + 1)}
    for item_id, k in placed.items():
        slices[k].add(item_id)  # a KeyError here would be a shard outside 1..n
    assert set().union(*slices.values()) == ids
    assert sum(len(s) for s in slices.values()) == len(ids)  # disjoint
    sizes = Counter({k: len(s) for k, s in slices.items()})
    expected = len(ids) / n
    assert all(abs(size - expected) < 6 * expected**0.5 + 1 for size in sizes.values()), sizes


def test_the_hash_is_pinned() -> None:
    # Golden values on purpose: if they change, machines running different batchgen
    # versions would split a catalog differently, and items would be run twice or never.
    ids = ("sku-1001-front", "a", "tote-1003-back-portrait", "x")
    assert [shard.shard_of(i, 8) for i in ids] == GOLDEN_8
    assert [shard.shard_of(i, 3) for i in ids] == GOLDEN_3


@pytest.mark.parametrize(("text", "parsed"), [("1/1", (1, 1)), ("3/8", (3, 8)), (" 2 / 4 ", (2, 4))])
def test_parse(text: str, parsed: tuple[int, int]) -> None:
    assert shard.parse(text) == parsed


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0/4", "JOB_COMPLETION_INDEX"),
        ("5/4", "1 <= K <= N"),
        ("1/0", "1 <= K <= N"),
        ("2", "must be K/N"),
        ("a/b", "must be K/N"),
        ("-1/4", "must be K/N"),
    ],
)
def test_parse_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        shard.parse(text)


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0"])
def test_the_message_of_a_shard_out_of_range_ends_with_its_hint_only_for_k_0(text: str) -> None:
    with pytest.raises(ValueError, match="must have 1 <= K <= N") as caught:
        shard.parse(text)
    hint = " (shards count from 1: a Kubernetes JOB_COMPLETION_INDEX i is shard i+1)"
    said = f"must have 1 <= K <= N, not {text!r}"
    assert str(caught.value) == (said + hint if text.startswith("0/") else said)


def test_a_chain_goes_to_its_roots_shard_and_every_other_item_by_its_own_id() -> None:
    items = [make_spec(k, f"view-{k}") for k in range(40)] + [make_spec(40, "hero")]
    roots = {f"view-{k}": "hero" for k in range(0, 40, 2)}  # half the views are made from the hero
    assert shard.select(items, None, roots) is items
    placed = {i.id: k for k in range(1, 5) for i in shard.select(items, (k, 4), roots)}
    assert sorted(placed) == sorted(i.id for i in items)  # each in exactly one shard (a dict: once)
    assert sum(len(shard.select(items, (k, 4), roots)) for k in range(1, 5)) == len(items)
    for item_id, k in placed.items():
        assert k == shard.shard_of(roots.get(item_id, item_id), 4), item_id
    assert len({placed[f"view-{k}"] for k in range(1, 40, 2)}) > 1  # the others are spread
