"""The fast tie order: packed 64-bit prefix sorts, and clearing task bids given as columns."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.mechanism import make_mechanism
from protocol.mechanism.base import ProverBid, TaskBid
from protocol.mechanism.clearing import TaskColumns, clear_indexed
from protocol.mechanism.tie_order import TieOrder
from protocol.mechanism.ties import tie_keyer


def _keys(prefixes: list[int], tails: list[int]) -> list[bytes]:
    return [
        p.to_bytes(8, "big") + t.to_bytes(4, "big") for p, t in zip(prefixes, tails, strict=True)
    ]


@settings(max_examples=200, deadline=None)
@given(
    # Distinct tails: a real tie key ends in the bid's id, and ids are distinct.
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2**32 - 1)),
        max_size=300,
        unique_by=lambda pair: pair[1],
    ),
    st.integers(0, 2**64 - 1),
    st.data(),
)
def test_sort_is_the_full_key_order_even_when_prefixes_collide(
    raw: list[tuple[int, int]], spread: int, data: st.DataObject
) -> None:
    """Indices come out in full-key order, however many prefixes share their high bits."""
    # Few distinct prefixes, spread over the whole 64-bit range or not, force collisions.
    prefixes = [(p * spread) % 2**64 for p, _ in raw]
    keys = _keys(prefixes, [t for _, t in raw])
    order = TieOrder(np.array(prefixes, dtype=np.uint64), lambda i: keys[i])
    subset = data.draw(st.lists(st.sampled_from(range(len(raw))), unique=True)) if raw else []
    expected = sorted(subset, key=lambda i: keys[i])
    assert expected == order.sort(np.array(subset, dtype=np.int64)).tolist()


def test_sort_matches_bytes_keys_on_real_tie_keys() -> None:
    """On real blake2b tie keys of 5,000 ids, the packed sort equals sorting the bytes."""
    keyer = tie_keyer(b"round seed")
    ids = [f"task-{i}" for i in range(5_000)]
    columns = TaskColumns.of([TaskBid(i, 1) for i in ids], b"round seed")
    expected = sorted(range(len(ids)), key=lambda i: keyer(ids[i]))
    assert expected == columns.tie_order().sort(np.arange(len(ids), dtype=np.int64)).tolist()


def _book(rng: random.Random, n: int, m: int) -> tuple[list[TaskBid], list[ProverBid]]:
    # Few distinct fees and costs, so ties decide who trades and who proves what.
    tasks = [TaskBid(f"t{i}", rng.randint(0, 6)) for i in range(n)]
    provers = [ProverBid(f"p{j}", rng.randint(1, 9), rng.randint(0, 4)) for j in range(m)]
    return tasks, provers


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 120), st.integers(0, 12))
def test_columns_in_any_order_clear_as_the_reference_does(seed: int, n: int, m: int) -> None:
    """Clearing shuffled columns gives the reference mechanism's outcome, ties and all."""
    rng = random.Random(seed)
    tasks, provers = _book(rng, n, m)
    shuffled = tasks[:]
    rng.shuffle(shuffled)
    for name in ("prooph", "optimum"):
        expected = make_mechanism(f"{name}-reference").clear(tasks, provers, seed=b"s")
        columns = TaskColumns.of(shuffled, b"s")
        actual = clear_indexed(make_mechanism(name), columns, provers).outcome(columns.ids)
        assert expected == actual


def test_a_mechanism_without_columns_clears_through_bid_objects() -> None:
    """clear_indexed takes any mechanism: McAfee's outcome comes back by position."""
    rng = random.Random(7)
    tasks, provers = _book(rng, 40, 5)
    mechanism = make_mechanism("mcafee")
    columns = TaskColumns.of(tasks, b"s")
    expected = mechanism.clear(tasks, provers, seed=b"s")
    assert expected == clear_indexed(mechanism, columns, provers).outcome(columns.ids)
