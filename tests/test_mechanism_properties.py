"""Hypothesis properties of Proo-phi and the optimum (paper Section 4, issue 2 section 6)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.mechanism import Outcome, ProverBid, TaskBid, get_mechanism

FAST = get_mechanism("prooph")
REF = get_mechanism("prooph-reference")


@st.composite
def books(
    draw: st.DrawFn, max_tasks: int = 14, max_provers: int = 5, top: int = 8
) -> tuple[list[TaskBid], list[ProverBid], bytes]:
    """Small books over a narrow value range, so equal fees and costs are common."""
    fees = draw(st.lists(st.integers(0, top), max_size=max_tasks))
    bids = draw(st.lists(st.tuples(st.integers(1, 4), st.integers(0, top)), max_size=max_provers))
    seed = draw(st.binary(max_size=4))
    return (
        [TaskBid(f"t{i}", f) for i, f in enumerate(fees)],
        [ProverBid(f"p{j}", s, p) for j, (s, p) in enumerate(bids)],
        seed,
    )


def user_utility(out: Outcome, bid_id: str, value: int) -> int:
    return value - out.charges[bid_id] if bid_id in out.charges else 0


def prover_utility(out: Outcome, bid_id: str, cost: int) -> int:
    if bid_id not in out.payments:
        return 0
    return out.payments[bid_id] - len(out.assignments[bid_id]) * cost


@settings(max_examples=150, deadline=None)
@given(books())
def test_budget_balance_and_individual_rationality(
    book: tuple[list[TaskBid], list[ProverBid], bytes],
) -> None:
    """Charges cover payments (Prop. 1); no charge tops a fee, no payment falls short of cost."""
    tasks, provers, seed = book
    out = FAST.clear(tasks, provers, seed=seed)
    assert out.surplus >= 0
    fee = {t.id: t.fee for t in tasks}
    assert all(fee[t] >= c for t, c in out.charges.items())
    by_id = {p.id: p for p in provers}
    assert all(pay >= by_id[p].capacity * by_id[p].cost for p, pay in out.payments.items())


@settings(max_examples=150, deadline=None)
@given(books())
def test_full_capacity_and_fee_order(book: tuple[list[TaskBid], list[ProverBid], bytes]) -> None:
    """Each allocated prover proves exactly its capacity; allocated fees >= unallocated fees."""
    tasks, provers, seed = book
    out = FAST.clear(tasks, provers, seed=seed)
    cap = {p.id: p.capacity for p in provers}
    assert {p: cap[p] for p in out.assignments} == {p: len(b) for p, b in out.assignments.items()}
    assigned = [t for batch in out.assignments.values() for t in batch]
    assert sorted(assigned) == sorted(out.charges)
    inside = [t.fee for t in tasks if t.id in out.charges]
    outside = [t.fee for t in tasks if t.id not in out.charges]
    assert min(inside, default=10**9) >= max(outside, default=-1)


@settings(max_examples=100, deadline=None)
@given(books(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(
    book: tuple[list[TaskBid], list[ProverBid], bytes], rnd: object
) -> None:
    """Permuting the bids changes nothing, for the fast path and the optimum."""
    import random

    assert isinstance(rnd, random.Random)
    tasks, provers, seed = book
    shuffled_t, shuffled_p = tasks[:], provers[:]
    rnd.shuffle(shuffled_t)
    rnd.shuffle(shuffled_p)
    for name in ("prooph", "optimum"):
        mech = get_mechanism(name)
        assert mech.clear(tasks, provers, seed=seed) == mech.clear(
            shuffled_t, shuffled_p, seed=seed
        )


@settings(max_examples=200, deadline=None)
@given(books(max_tasks=30, max_provers=8, top=4))
def test_fast_path_equals_reference(book: tuple[list[TaskBid], list[ProverBid], bytes]) -> None:
    """The array path gives the reference's outcome exactly, ties included."""
    tasks, provers, seed = book
    assert REF.clear(tasks, provers, seed=seed) == FAST.clear(tasks, provers, seed=seed)
    assert get_mechanism("optimum-reference").clear(tasks, provers, seed=seed) == get_mechanism(
        "optimum"
    ).clear(tasks, provers, seed=seed)


@settings(max_examples=60, deadline=None)
@given(books(max_tasks=10, max_provers=4, top=6))
def test_no_user_gains_by_another_fee(book: tuple[list[TaskBid], list[ProverBid], bytes]) -> None:
    """Prop. 2 (UDSIC): with every other bid fixed, no user does strictly better by bidding
    any fee in 0..top+1 than by bidding its value; checked with ties and the seeded tie rule
    (ids and seed unchanged, so a deviation cannot re-roll a tie)."""
    tasks, provers, seed = book
    honest = FAST.clear(tasks, provers, seed=seed)
    for i, bid in enumerate(tasks):
        truthful = user_utility(honest, bid.id, bid.fee)
        for other in range(8):
            lied = [*tasks[:i], TaskBid(bid.id, other), *tasks[i + 1 :]]
            out = FAST.clear(lied, provers, seed=seed)
            assert user_utility(out, bid.id, bid.fee) <= truthful


@settings(max_examples=60, deadline=None)
@given(books(max_tasks=12, max_provers=4, top=6))
def test_no_prover_gains_by_another_cost(
    book: tuple[list[TaskBid], list[ProverBid], bytes],
) -> None:
    """Prop. 3 (PDSIC): with every other bid and its own capacity fixed, no prover does
    strictly better by bidding any cost in 0..top+1 than by bidding its true cost."""
    tasks, provers, seed = book
    honest = FAST.clear(tasks, provers, seed=seed)
    for j, bid in enumerate(provers):
        truthful = prover_utility(honest, bid.id, bid.cost)
        for other in range(8):
            lied = [*provers[:j], ProverBid(bid.id, bid.capacity, other), *provers[j + 1 :]]
            out = FAST.clear(tasks, lied, seed=seed)
            assert prover_utility(out, bid.id, bid.cost) <= truthful


def _brute_force_welfare(tasks: list[TaskBid], provers: list[ProverBid]) -> int:
    """Best welfare over every assignment of each task to no prover or one with room."""
    best = 0
    for choice in itertools.product(range(len(provers) + 1), repeat=len(tasks)):
        load = [0] * len(provers)
        value = 0
        for t, c in zip(tasks, choice, strict=True):
            if c:
                load[c - 1] += 1
                value += t.fee - provers[c - 1].cost
        if all(n <= p.capacity for n, p in zip(load, provers, strict=True)):
            best = max(best, value)
    return best


@settings(max_examples=60, deadline=None)
@given(books(max_tasks=5, max_provers=3, top=6))
def test_optimum_is_the_most_valuable_feasible_allocation(
    book: tuple[list[TaskBid], list[ProverBid], bytes],
) -> None:
    """The optimum's welfare equals a brute-force search, and Proo-phi's never exceeds it."""
    tasks, provers, seed = book
    out = get_mechanism("optimum").clear(tasks, provers, seed=seed)
    assert _brute_force_welfare(tasks, provers) == out.welfare
    assert FAST.clear(tasks, provers, seed=seed).welfare <= out.welfare
