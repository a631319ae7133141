"""Which of BB, IR, UDSIC and PDSIC each registered mechanism has, checked both ways.

For every property a mechanism claims (registry.PROPERTIES), hypothesis tries to break it;
for every property it lacks, a seeded search over small books must find a violation.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.mechanism import (
    COMPARED,
    PROPERTIES,
    Mechanism,
    MechanismParams,
    Outcome,
    ProverBid,
    TaskBid,
    make_mechanism,
)
from protocol.mechanism.vcg import optimum_welfare

TOP = 8
Book = tuple[list[TaskBid], list[ProverBid], bytes]


def build(name: str, rng: random.Random) -> Mechanism:
    """The mechanism with parameters drawn inside the books' value range."""
    params = MechanismParams(
        posted_price=rng.randint(0, TOP),
        call_a_bps=rng.choice([0, 2_500, 5_000, 10_000]),
        reserve_cost=rng.choice([None, rng.randint(0, TOP)]),
    )
    return make_mechanism(name, params)


def draw_book(rng: random.Random, max_tasks: int = 9, max_provers: int = 4, cap: int = 3) -> Book:
    fees = [rng.randint(0, TOP) for _ in range(rng.randint(0, max_tasks))]
    bids = [(rng.randint(1, cap), rng.randint(0, TOP)) for _ in range(rng.randint(0, max_provers))]
    return (
        [TaskBid(f"t{i}", f) for i, f in enumerate(fees)],
        [ProverBid(f"p{j}", s, c) for j, (s, c) in enumerate(bids)],
        rng.randbytes(2),
    )


def user_gain(out: Outcome, task: str, value: int) -> int:
    return value - out.charges[task] if task in out.charges else 0


def prover_gain(out: Outcome, prover: str, cost: int) -> int:
    if prover not in out.payments:
        return 0
    return out.payments[prover] - len(out.assignments[prover]) * cost


def bb_violation(mech: Mechanism, book: Book) -> bool:
    return mech.clear(book[0], book[1], seed=book[2]).surplus < 0


def ir_violation(mech: Mechanism, book: Book) -> bool:
    tasks, provers, seed = book
    out = mech.clear(tasks, provers, seed=seed)
    fee = {t.id: t.fee for t in tasks}
    cost = {p.id: p.cost for p in provers}
    return any(c > fee[t] for t, c in out.charges.items()) or any(
        prover_gain(out, p, cost[p]) < 0 for p in out.payments
    )


def udsic_violation(mech: Mechanism, book: Book) -> bool:
    tasks, provers, seed = book
    honest = mech.clear(tasks, provers, seed=seed)
    for i, bid in enumerate(tasks):
        truthful = user_gain(honest, bid.id, bid.fee)
        for other in range(TOP + 2):
            lied = [*tasks[:i], TaskBid(bid.id, other), *tasks[i + 1 :]]
            if user_gain(mech.clear(lied, provers, seed=seed), bid.id, bid.fee) > truthful:
                return True
    return False


def pdsic_violation(mech: Mechanism, book: Book) -> bool:
    tasks, provers, seed = book
    honest = mech.clear(tasks, provers, seed=seed)
    for j, bid in enumerate(provers):
        truthful = prover_gain(honest, bid.id, bid.cost)
        for other in range(TOP + 2):
            lied = [*provers[:j], ProverBid(bid.id, bid.capacity, other), *provers[j + 1 :]]
            if prover_gain(mech.clear(tasks, lied, seed=seed), bid.id, bid.cost) > truthful:
                return True
    return False


CHECKS: dict[str, Callable[[Mechanism, Book], bool]] = {
    "BB": bb_violation,
    "IR": ir_violation,
    "UDSIC": udsic_violation,
    "PDSIC": pdsic_violation,
}
HELD = [(m, p) for m in COMPARED for p in CHECKS if p in PROPERTIES[m]]
LACKED = [(m, p) for m in COMPARED for p in CHECKS if p not in PROPERTIES[m]]


@pytest.mark.parametrize(("name", "prop"), HELD)
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_claimed_property_holds(name: str, prop: str, seed: int) -> None:
    """No small book (any parameters) breaks a property the registry says the rule has."""
    rng = random.Random(seed)
    assert not CHECKS[prop](build(name, rng), draw_book(rng))


@pytest.mark.parametrize(("name", "prop"), LACKED)
def test_lacked_property_has_a_violation(name: str, prop: str) -> None:
    """A seeded search over small books finds a violation of each property a rule lacks."""
    rng = random.Random(f"{name}/{prop}")
    found = any(CHECKS[prop](build(name, rng), draw_book(rng)) for _ in range(3_000))
    assert found


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_mcafee_is_prover_truthful_with_unit_capacities(seed: int) -> None:
    """With every capacity 1 McAfee is McAfee (1992): no prover gains by another cost."""
    rng = random.Random(seed)
    assert not pdsic_violation(make_mechanism("mcafee"), draw_book(rng, max_provers=6, cap=1))


def test_mcafee_example() -> None:
    """Fees 10,8,6,2, unit costs 1,3,5,9: k = 3, p0 = 5.5 in [5, 6]; users pay 6, provers 5."""
    tasks = [TaskBid(f"t{i}", f) for i, f in enumerate((10, 8, 6, 2))]
    provers = [ProverBid(f"p{j}", 1, c) for j, c in enumerate((1, 3, 5, 9))]
    out = make_mechanism("mcafee").clear(tasks, provers)
    assert (3, 6, 5, 3) == (out.allocated_tasks, out.user_price, out.prover_price, out.surplus)


def test_mcafee_trade_reduction() -> None:
    """Fees 10,8,6,5 and unit costs 1,3,4,20: p0 = 12.5 > f_3 = 6, so 2 trade at 6 and 4."""
    tasks = [TaskBid(f"t{i}", f) for i, f in enumerate((10, 8, 6, 5))]
    provers = [ProverBid(f"p{j}", 1, c) for j, c in enumerate((1, 3, 4, 20))]
    out = make_mechanism("mcafee").clear(tasks, provers)
    assert (2, 6, 4, 4) == (out.allocated_tasks, out.user_price, out.prover_price, out.surplus)


def test_posted_price_rations_by_tie_key_not_by_fee() -> None:
    """At a posted 5, three eligible tasks share two units; the tie key, not the fee, picks."""
    tasks = [TaskBid("a", 9), TaskBid("b", 5), TaskBid("c", 7), TaskBid("d", 4)]
    provers = [ProverBid("p", 2, 5), ProverBid("q", 5, 6)]
    out = make_mechanism("posted", MechanismParams(posted_price=5)).clear(tasks, provers)
    from protocol.mechanism import tie_key

    expected = sorted(sorted("abc", key=lambda t: tie_key(b"", t))[:2])
    assert {"p": tuple(expected)} == dict(out.assignments)
    assert (5, 5, 0) == (out.user_price, out.prover_price, out.surplus)


def test_pay_as_bid_charges_each_task_its_provers_ask() -> None:
    """Fees 10,9,8 with provers (2 at 1) and (2 at 7): tasks pay 1, 1 and 7; surplus 0."""
    tasks = [TaskBid(f"t{i}", f) for i, f in enumerate((10, 9, 8))]
    provers = [ProverBid("cheap", 2, 1), ProverBid("dear", 2, 7)]
    out = make_mechanism("pay-as-bid").clear(tasks, provers)
    assert {"t0": 1, "t1": 1, "t2": 7} == dict(out.charges)
    assert {"cheap": 2, "dear": 7} == dict(out.payments)
    assert 0 == out.surplus


def test_call_market_price_splits_the_marginal_gap() -> None:
    """k = 2 with f_2 = 9, u_2 = 4: a = 0.25 gives 4 + 5/4 = 5.25, rounded down to 5."""
    tasks = [TaskBid(f"t{i}", f) for i, f in enumerate((10, 9, 3))]
    provers = [ProverBid("p", 1, 2), ProverBid("q", 1, 4)]
    out = make_mechanism("call-market", MechanismParams(call_a_bps=2_500)).clear(tasks, provers)
    assert (2, 5, 5, 0) == (out.allocated_tasks, out.user_price, out.prover_price, out.surplus)


def test_vcg_runs_a_deficit() -> None:
    """Fees 10, 9, unit costs 1, 2: users pay u_2 = 2, each prover 9; a deficit of 14."""
    tasks = [TaskBid("t0", 10), TaskBid("t1", 9)]
    provers = [ProverBid("p", 1, 1), ProverBid("q", 1, 2)]
    out = make_mechanism("vcg").clear(tasks, provers)
    assert {"t0": 2, "t1": 2} == dict(out.charges)
    assert {"p": 9, "q": 9} == dict(out.payments)
    assert -14 == out.surplus
    assert 16 == out.welfare


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_vcg_charges_are_externalities(seed: int) -> None:
    """Each VCG charge is W(-i) - (W - f_i), computed by re-solving without the task."""
    tasks, provers, bseed = draw_book(random.Random(seed))
    out = make_mechanism("vcg").clear(tasks, provers, seed=bseed)
    bids = sorted(provers, key=lambda p: p.cost)
    fees = sorted((t.fee for t in tasks), reverse=True)
    whole = optimum_welfare(fees, bids)
    assert make_mechanism("optimum").clear(tasks, provers, seed=bseed).welfare == out.welfare
    for t in tasks:
        if t.id in out.charges:
            rest = sorted((u.fee for u in tasks if u.id != t.id), reverse=True)
            assert optimum_welfare(rest, bids) - (whole - t.fee) == out.charges[t.id]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), reserve=st.integers(0, TOP))
def test_reserve_lets_a_lone_prover_trade_and_never_trades_itself(seed: int, reserve: int) -> None:
    """With a reserve, one prover below it trades whenever more tasks than its capacity
    bid at least the reserve, is paid the reserve per task, and only real provers trade."""
    rng = random.Random(seed)
    cap = rng.randint(1, 4)
    cost = rng.randint(0, reserve)
    tasks = [TaskBid(f"t{i}", rng.randint(reserve, TOP)) for i in range(cap + rng.randint(1, 3))]
    mech = make_mechanism("prooph", MechanismParams(reserve_cost=reserve))
    out = mech.clear(tasks, [ProverBid("solo", cap, cost)])
    assert {"solo": cap * reserve} == dict(out.payments)
    assert 0 == make_mechanism("prooph").clear(tasks, [ProverBid("solo", cap, cost)]).welfare
