"""A coordinator running for many rounds forgets settled history and stays bounded."""

from __future__ import annotations

from collections import deque
from enum import Enum

from test_coordinator_helpers import (
    COORD,
    PROVERS,
    START,
    USERS,
    Market,
    genesis,
    params,
    published,
    reject_codes,
    replayed,
)

from coordinator.core import Coordinator
from coordinator.invariants import check_invariants
from protocol.messages import Assignment

SEEN = 4


def run_rounds(market: Market, rounds: int) -> list[dict[str, int]]:
    """Drive `rounds` busy rounds (bids, clearing, proofs); the state's size after each."""
    c = market.coordinator
    sizes = []
    for _ in range(rounds):
        number = c.bidding_round
        assert number is not None
        bid_deadline, _ = c.round_deadlines(number)
        now = bid_deadline - 50
        epoch = number // c.params.epoch_rounds
        for i, prover in enumerate(PROVERS[:2]):
            market.declare(prover, 2, epoch=epoch, now=now)
            market.cost_bid(prover, 1 + 4 * i, round=number, now=now)
        for i, user in enumerate(USERS):
            market.task_bid(user, f"t{number}", 9 - i, round=number, now=now, carry_over=i == 3)
        effects = market.tick(bid_deadline)
        for e in published(effects, Assignment):
            assert e.to is not None
            market.prove(e.to, e.message, bid_deadline + 10)  # type: ignore[arg-type]
        sizes.append(c.size())
    return sizes


def test_state_stays_bounded_over_many_rounds() -> None:
    """After 200 rounds the coordinator holds no more entries than after 20: history is pruned."""
    coordinator = Coordinator(params(), genesis(balance=10_000), COORD, START, seen_rounds=SEEN)
    market = Market(coordinator)
    market.tick(START)
    sizes = run_rounds(market, 200)
    assert sizes[19] == sizes[-1]
    assert SEEN + 2 >= sizes[-1]["rounds"]
    assert 0 < sizes[-1]["tasks"] <= len(USERS) * (SEEN + 2)
    assert [] == check_invariants(coordinator)


def test_task_ids_reused_once_their_round_is_forgotten() -> None:
    """A task id is the user's own again once its round is forgotten, not before."""
    coordinator = Coordinator(params(), genesis(balance=10_000), COORD, START, seen_rounds=SEEN)
    market = Market(coordinator)
    market.tick(START)
    run_rounds(market, SEEN + 2)
    number = SEEN + 2
    now = START + number * 100
    assert coordinator.task(USERS[0], "t0") is None
    assert ["duplicate_task"] == reject_codes(
        market.task_bid(USERS[0], f"t{number - 1}", 5, round=number, now=now)
    )
    assert [] == reject_codes(market.task_bid(USERS[0], "t0", 5, round=number, now=now))


def test_redelivery_of_a_forgotten_round_is_refused_and_changes_nothing() -> None:
    """Inputs of a pruned round are refused as late (never applied twice); replay still agrees."""
    coordinator = Coordinator(params(), genesis(balance=10_000), COORD, START, seen_rounds=SEEN)
    market = Market(coordinator)
    market.tick(START)
    run_rounds(market, 2)
    early = list(market.recorded)
    run_rounds(market, 3 * SEEN)
    before = coordinator.state()
    codes = []
    for event in early:
        codes += reject_codes(market.feed(event))
    assert before == coordinator.state()
    assert {"late_bid", "late_proof", "capacity_locked"} == set(codes)
    restored = replayed(
        Coordinator(params(), genesis(balance=10_000), COORD, START, seen_rounds=SEEN),
        market.recorded,
    )
    assert coordinator.state() == restored.state()


def held_entries(obj: object, seen: set[int] | None = None) -> int:
    """Entries in every container `obj` holds, recursively, through any object's fields:
    what the coordinator keeps, however named and wherever nested."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, str | bytes | int | float | Enum | type | None):
        return 0
    if callable(obj) and not hasattr(obj, "__dict__"):
        return 0  # a bound method or builtin: what it points to is counted elsewhere
    seen.add(id(obj))
    if isinstance(obj, dict):
        return len(obj) + sum(held_entries(k, seen) + held_entries(v, seen) for k, v in obj.items())
    if isinstance(obj, set | frozenset | list | tuple | deque):
        return len(obj) + sum(held_entries(v, seen) for v in obj)
    fields = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if hasattr(obj, name):
                fields[name] = getattr(obj, name)
    return sum(held_entries(v, seen) for v in fields.values())


def test_everything_the_coordinator_holds_is_the_same_after_1500_rounds_as_after_300() -> None:
    """Tables, ledger, track records, refusal counts, rations: after 1,500 rounds the core
    holds exactly as many entries as after 300, with the default 64-round horizon."""
    coordinator = Coordinator(params(), genesis(balance=100_000), COORD, START)
    market = Market(coordinator)
    market.tick(START)
    run_rounds(market, 300)
    after_300 = held_entries(coordinator)
    run_rounds(market, 1200)
    assert after_300 == held_entries(coordinator)
    assert [] == check_invariants(coordinator)
