"""The paper's Examples 1-4 (Sections 1.2, 5.2-5.4) with their exact numbers, and edge cases."""

from __future__ import annotations

import pytest

from protocol.mechanism import MECHANISMS, Outcome, ProverBid, TaskBid, get_mechanism

PROOPH = ["prooph", "prooph-reference"]


def tasks(*fees: int, prefix: str = "t") -> list[TaskBid]:
    return [TaskBid(f"{prefix}{i + 1}", fee) for i, fee in enumerate(fees)]


def provers(*bids: tuple[int, int]) -> list[ProverBid]:
    return [ProverBid(f"p{j + 1}", s, p) for j, (s, p) in enumerate(bids)]


def prover_utility(out: Outcome, bid: ProverBid, true_cost: int) -> int:
    if bid.id not in out.payments:
        return 0
    return out.payments[bid.id] - len(out.assignments[bid.id]) * true_cost


EX1_TASKS = tasks(10, 10, 10, 10, 9, 9, 1, 1)
EX1_PROVERS = provers((4, 0), (2, 1), (2, 10))


@pytest.mark.parametrize("name", PROOPH)
def test_example_1_honest(name: str) -> None:
    """Example 1: ell = 1, four tasks at user price 9, prover 1 paid 4 (utility 4)."""
    out = get_mechanism(name).clear(EX1_TASKS, EX1_PROVERS)
    assert {"p1": ("t1", "t2", "t3", "t4")} == dict(out.assignments)
    assert (9, 1) == (out.user_price, out.prover_price)
    assert {"t1": 9, "t2": 9, "t3": 9, "t4": 9} == dict(out.charges)
    assert {"p1": 4} == dict(out.payments)
    assert 32 == out.surplus
    assert 40 == out.welfare
    assert 4 == prover_utility(out, EX1_PROVERS[0], 0)


@pytest.mark.parametrize("name", PROOPH)
def test_example_2_capacity_misreport_pays(name: str) -> None:
    """Example 2: prover 1 bidding capacity 1 instead of 4 makes ell = 2 and earns 10 > 4."""
    lying = [ProverBid("p1", 1, 0), *EX1_PROVERS[1:]]
    out = get_mechanism(name).clear(EX1_TASKS, lying)
    assert 2 == out.allocated_provers
    assert (10, 10) == (out.user_price, out.prover_price)
    assert 3 == out.allocated_tasks
    assert 10 == prover_utility(out, lying[0], 0)


@pytest.mark.parametrize("name", PROOPH)
def test_example_3_user_sybil_pays(name: str) -> None:
    """Example 3: prover 1 earns 8 honestly, and 36 - 27 = 9 with four Sybil tasks bidding 9."""
    honest_tasks = tasks(10, 10, 10, 2, 2, 2, 2, 2)
    bids = provers((4, 0), (2, 2), (2, 9))
    mech = get_mechanism(name)
    honest = mech.clear(honest_tasks, bids)
    assert (1, 2, 2) == (out_ell(honest), honest.user_price, honest.prover_price)
    assert 8 == prover_utility(honest, bids[0], 0)
    sybils = tasks(9, 9, 9, 9, prefix="sybil")
    attacked = mech.clear(honest_tasks + sybils, bids)
    assert (2, 9, 9) == (out_ell(attacked), attacked.user_price, attacked.prover_price)
    sybil_ids = {t.id for t in sybils}
    paid_by_sybils = sum(c for t, c in attacked.charges.items() if t in sybil_ids)
    assert 27 == paid_by_sybils
    assert 36 == attacked.payments["p1"]
    assert 9 == prover_utility(attacked, bids[0], 0) - paid_by_sybils


def out_ell(out: Outcome) -> int:
    return out.allocated_provers


@pytest.mark.parametrize("name", PROOPH)
def test_example_4_prover_sybil_pays(name: str) -> None:
    """Example 4: prover 2 earns 0 honestly, and 1 by splitting into bids (1, 2) and (1, 3)."""
    fees = tasks(10, 10, 10, 3, 3, 3, 3, 3)
    bids = provers((4, 0), (2, 2), (2, 9))
    mech = get_mechanism(name)
    honest = mech.clear(fees, bids)
    assert 1 == honest.allocated_provers
    assert 0 == prover_utility(honest, bids[1], 2)
    split = [bids[0], ProverBid("p2a", 1, 2), ProverBid("p2b", 1, 3), bids[2]]
    attacked = mech.clear(fees, split)
    assert {"p1", "p2a"} == set(attacked.assignments)
    assert 3 == attacked.prover_price
    true_cost = 2
    gain = sum(prover_utility(attacked, b, true_cost) for b in split[1:3])
    assert 1 == gain


@pytest.mark.parametrize("name", sorted(MECHANISMS))
@pytest.mark.parametrize(
    ("fees", "bids"),
    [
        ((), ((4, 0),)),  # no tasks
        ((5, 5), ()),  # no provers
        ((), ()),  # nothing at all
        ((3, 3), ((1, 4), (1, 5))),  # nobody feasible: every cost above every fee
    ],
    ids=["no-tasks", "no-provers", "empty", "nobody-feasible"],
)
def test_no_trade_edges(
    name: str, fees: tuple[int, ...], bids: tuple[tuple[int, int], ...]
) -> None:
    """Empty sides and books where no fee covers any cost clear to no trade."""
    out = get_mechanism(name).clear(tasks(*fees), provers(*bids))
    assert (0, 0, None, None, 0, 0) == (
        out.allocated_provers,
        out.allocated_tasks,
        out.user_price,
        out.prover_price,
        out.surplus,
        out.welfare,
    )


@pytest.mark.parametrize("name", PROOPH)
def test_one_feasible_prover_is_no_trade(name: str) -> None:
    """A single feasible prover sets the price for nobody: ell = 0, no trade."""
    out = get_mechanism(name).clear(tasks(10, 10), provers((2, 1)))
    assert {} == dict(out.assignments)
    assert None is out.user_price


@pytest.mark.parametrize("name", PROOPH)
def test_second_feasible_prover_only_sets_the_price(name: str) -> None:
    """With two feasible provers, only the cheaper one trades, at the second one's cost."""
    out = get_mechanism(name).clear(tasks(10, 10, 8), provers((2, 1), (1, 5)))
    assert {"p1": ("t1", "t2")} == dict(out.assignments)
    assert (8, 5) == (out.user_price, out.prover_price)


@pytest.mark.parametrize("name", PROOPH)
def test_ties_at_the_margin_follow_the_seeded_rule(name: str) -> None:
    """Equal fees at the margin are chosen by tie key, so the seed, not arrival, decides."""
    from protocol.mechanism import tie_key

    fees = tasks(7, 7, 7, 7)
    bids = provers((2, 0), (2, 0))
    mech = get_mechanism(name)
    for seed in (b"", b"r1", b"r2", b"r3"):
        out = mech.clear(fees, bids, seed=seed)
        expected_tasks = sorted(t.id for t in sorted(fees, key=lambda t: tie_key(seed, t.id))[:2])
        expected_prover = min(bids, key=lambda p: tie_key(seed, p.id)).id
        assert {expected_prover: tuple(expected_tasks)} == dict(out.assignments)
        assert mech.clear(list(reversed(fees)), list(reversed(bids)), seed=seed) == out


def test_optimum_on_example_1() -> None:
    """The optimum trades the six fees above 1: welfare 58 in fees less 2 in costs = 56."""
    for name in ("optimum", "optimum-reference"):
        out = get_mechanism(name).clear(EX1_TASKS, EX1_PROVERS)
        assert 56 == out.welfare
        assert {"p1": 4, "p2": 2} == {p: len(b) for p, b in out.assignments.items()}
        assert out.welfare == out.surplus
