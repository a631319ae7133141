"""Wills acted on: a prover whose last will came after its cost bid sits out the clearing."""

from __future__ import annotations

from test_coordinator_helpers import (
    BID_MS,
    COORD,
    MARKET,
    PROVERS,
    START,
    USERS,
    Market,
    genesis,
    params,
    published,
    replayed,
)

from coordinator.core import Coordinator
from coordinator.snapshot import capture, load
from protocol.events import Tick
from protocol.messages import Assignment, ProverWill, Reject

P0, P1, P2 = PROVERS
DEADLINE = START + BID_MS
WILL = ProverWill(market=MARKET, connected_at=START - 1)


def bidding_round(market: Market) -> None:
    """Round 0 open: three provers declared and bid, four tasks bid."""
    market.tick(START)
    for prover, cost in ((P0, 1), (P1, 3), (P2, 5)):
        market.declare(prover, 2)
        market.cost_bid(prover, cost)
    for i, fee in enumerate([9, 8, 7, 6]):
        market.task_bid(USERS[i], f"t{i}", fee)


def winners(effects: list[object]) -> set[str]:
    return {e.to for e in published(effects, Assignment)}  # type: ignore[arg-type,attr-defined,misc]


def test_a_prover_whose_will_came_after_its_cost_bid_wins_nothing() -> None:
    """P0, the cheapest, died after bidding: it is refused `prover_offline`; others trade."""
    market = Market()
    bidding_round(market)
    market.send(P0, WILL, START + 2)
    effects = market.tick(DEADLINE)
    refused = [e for e in published(effects, Reject) if e.to == P0]
    assert (["prover_offline"], False, True) == (
        [e.message.code for e in refused],  # type: ignore[attr-defined]
        P0 in winners(effects),
        bool(winners(effects)),
    )


def test_a_prover_that_bids_again_after_its_will_is_back() -> None:
    """Its next input taken clears the mark: it can win again."""
    market = Market()
    market.tick(START)
    for prover in PROVERS:
        market.declare(prover, 2)
    market.send(P0, WILL, START + 1)
    for prover, cost in ((P0, 1), (P1, 3), (P2, 5)):
        market.cost_bid(prover, cost, now=START + 2)
    for i, fee in enumerate([9, 8, 7, 6]):
        market.task_bid(USERS[i], f"t{i}", fee)
    assert P0 in winners(market.tick(DEADLINE))


def test_a_will_from_a_stranger_changes_nothing() -> None:
    """A will from a key that never declared capacity is not recorded."""
    market = Market()
    market.tick(START)
    before = market.coordinator.state()
    assert [] == market.send(USERS[0], WILL, START + 1)
    assert before == market.coordinator.state()


def test_the_offline_mark_survives_replay_and_snapshot() -> None:
    """A fold of the records, and a snapshot, give the same offline prover."""
    market = Market()
    bidding_round(market)
    market.send(P0, WILL, START + 2)
    fresh = Coordinator(params(), genesis(), COORD, START)
    rebuilt = replayed(fresh, market.recorded)
    restored = load(Coordinator(params(), genesis(), COORD, START), capture(market.coordinator, 0))
    state = market.coordinator.state()
    assert (state, state) == (rebuilt.state(), restored.state())
    assert "prover_offline" in str(published(restored.handle(Tick(DEADLINE)), Reject))
