"""Wills acted on: a prover whose last will came after its cost bid sits out the clearing,
and one whose will came while it held a batch fails it when its reconnect grace runs out."""

from __future__ import annotations

from test_coordinator_helpers import (
    BID_MS,
    COORD,
    MARKET,
    PROVE_MS,
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
from coordinator.invariants import check_invariants
from coordinator.records import CoordinatorEffect
from coordinator.snapshot import capture, load
from protocol.events import Record, Resumed, Tick, WakeAt
from protocol.messages import (
    Assignment,
    FailureRules,
    ProverOnline,
    ProverWill,
    Reject,
    SettlementNotice,
)

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


# -- a will while holding a batch: the rescue starts after the reconnect grace ------------

GRACE = 20
PROVE_DEADLINE = DEADLINE + PROVE_MS
WILL_AT = DEADLINE + 10  # in round 0's prove window
RESCUE_AT = WILL_AT + GRACE  # well before the prove deadline


def will(connected_at: int) -> ProverWill:
    return ProverWill(market=MARKET, connected_at=connected_at)


def online(connected_at: int) -> ProverOnline:
    return ProverOnline(market=MARKET, connected_at=connected_at)


def holding(**rules: object) -> tuple[Market, Assignment]:
    """Round 0 cleared with a reconnect grace: P0, the cheapest, holds the one batch."""
    market = Market(failures=FailureRules(will_grace_ms=GRACE, **rules))  # type: ignore[arg-type]
    bidding_round(market)
    [assignment] = published(market.tick(DEADLINE), Assignment)
    assert P0 == assignment.to
    return market, assignment.message  # type: ignore[return-value]


def outcomes(effects: list[CoordinatorEffect], to: str) -> list[str]:
    """The settlement outcomes told to `to`, in order."""
    return [e.message.outcome for e in published(effects, SettlementNotice) if e.to == to]  # type: ignore[attr-defined]


def test_a_will_while_holding_a_batch_fails_it_when_the_grace_runs_out() -> None:
    """P0's will in its prove window: its batch fails at will + grace, not at the deadline."""
    market, assignment = holding(rescue=True)
    effects = market.send(P0, will(START), WILL_AT)
    assert [WakeAt(RESCUE_AT)] == [e for e in effects if isinstance(e, WakeAt)]
    before = market.tick(RESCUE_AT - 1)
    effects = market.tick(RESCUE_AT)
    c = market.coordinator
    rescued = [c.task(USERS[i], f"t{i}") for i in range(len(assignment.tasks))]
    assert ([], ["slashed"], {P0: 1}, {}) == (
        before,
        outcomes(effects, P0),
        c.slashes,
        c.pending_rescues(),
    )
    assert [("open", 1, P0)] * len(rescued) == [
        (t.status, t.round, t.failed_by)  # type: ignore[union-attr]
        for t in rescued
    ]
    assert [] == check_invariants(c)


def test_a_prover_back_online_within_the_grace_is_slashed_by_nobody() -> None:
    """P0's will, then its `prover_online` on a new connection: no rescue; its proofs pay."""
    market, assignment = holding(rescue=True)
    market.send(P0, will(START), WILL_AT)
    back = market.send(P0, online(START + 50), WILL_AT + 5)
    quiet = market.tick(RESCUE_AT)
    paid = market.prove(P0, assignment, RESCUE_AT + 10)
    c = market.coordinator
    assert (1, [], ["paid"], {}, False) == (
        sum(isinstance(e, Record) for e in back),
        quiet,
        outcomes(paid, P0),
        c.slashes,
        c._provers[P0].offline,
    )


def test_a_proof_within_the_grace_counts_as_back_online() -> None:
    """P0's will, then its proofs before the grace runs out: paid, nothing slashed."""
    market, assignment = holding(rescue=True)
    market.send(P0, will(START), WILL_AT)
    paid = market.prove(P0, assignment, RESCUE_AT - 1)
    assert (["paid"], {}, {}, []) == (
        outcomes(paid, P0),
        market.coordinator.slashes,
        market.coordinator.pending_rescues(),
        market.tick(RESCUE_AT),
    )


def test_a_broker_restart_delivering_every_will_slashes_nobody_who_comes_back() -> None:
    """Every prover's will at once, every one back within the grace: the batch is paid."""
    market, assignment = holding(rescue=True)
    for prover in PROVERS:
        market.send(prover, will(START), WILL_AT)
    for prover in PROVERS:
        market.send(prover, online(START + 50), WILL_AT + 15)
    market.tick(RESCUE_AT)
    paid = market.prove(P0, assignment, PROVE_DEADLINE - 1)
    assert (["paid"], {}) == (outcomes(paid, P0), market.coordinator.slashes)


def test_a_will_of_an_older_connection_than_the_newest_online_is_stale() -> None:
    """The broker delivers the old connection's will after the new one said it is up."""
    market, _ = holding()
    market.send(P0, online(START + 50), WILL_AT - 5)
    stale = market.send(P0, will(START), WILL_AT)
    assert ([], {}, False) == (
        stale,
        market.coordinator.pending_rescues(),
        market.coordinator._provers[P0].offline,
    )


def test_an_online_of_the_connection_whose_will_came_is_stale() -> None:
    """A delayed online of the very connection the will buried does not call off the rescue."""
    market, _ = holding()
    market.send(P0, will(START), WILL_AT)
    assert ([], {P0: RESCUE_AT}) == (
        market.send(P0, online(START), WILL_AT + 1),
        market.coordinator.pending_rescues(),
    )


def test_a_will_without_a_batch_starts_no_rescue() -> None:
    """A will from a prover holding no batch marks it offline only."""
    market, _ = holding()
    effects = market.send(P1, will(START), WILL_AT)
    assert ([Record(market.last_event)], {}) == (  # type: ignore[arg-type]
        effects,
        market.coordinator.pending_rescues(),
    )


def test_a_batch_whose_deadline_comes_first_settles_then() -> None:
    """With a grace past the deadline, the will changes nothing of the settlement."""
    market, _ = holding()
    market.send(P0, will(START), PROVE_DEADLINE - 5)
    effects = market.tick(PROVE_DEADLINE)
    assert (["slashed"], {}, []) == (
        outcomes(effects, P0),
        market.coordinator.pending_rescues(),
        market.tick(PROVE_DEADLINE - 5 + GRACE),
    )


def test_an_outage_moves_the_pending_rescue() -> None:
    """The coordinator down from the will on: the grace ends the outage's length later."""
    market, _ = holding()
    market.send(P0, will(START), WILL_AT)
    market.feed(Resumed(now=WILL_AT + 1_000, since=WILL_AT))
    assert {P0: RESCUE_AT + 1_000} == market.coordinator.pending_rescues()


def test_replay_and_snapshot_give_the_same_rescue() -> None:
    """Folding the records, or loading a snapshot, keeps the pending grace and its outcome."""
    market, _ = holding(rescue=True)
    market.send(P0, will(START), WILL_AT)
    fresh = Coordinator(market.params, genesis(), COORD, START)
    rebuilt = replayed(fresh, market.recorded)
    blank = Coordinator(market.params, genesis(), COORD, START)
    restored = load(blank, capture(market.coordinator, len(market.recorded)))
    state = market.coordinator.state()
    assert (state, state) == (rebuilt.state(), restored.state())
    live = market.tick(RESCUE_AT)
    assert (live, live) == (rebuilt.handle(Tick(RESCUE_AT)), restored.handle(Tick(RESCUE_AT)))
    again = replayed(Coordinator(market.params, genesis(), COORD, START), market.recorded)
    assert market.coordinator.state() == again.state()
