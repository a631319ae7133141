"""A restarted coordinator stops the market's clock for its outage: nobody pays for it."""

from __future__ import annotations

from test_coordinator_helpers import (
    BID_MS,
    PROVE_MS,
    PROVERS,
    START,
    USERS,
    Market,
    published,
    reject_codes,
    replayed,
)

from coordinator.core import Coordinator
from coordinator.records import decode_record, encode_record
from protocol.events import Resumed
from protocol.messages import Assignment, SettlementNotice

BID_DEADLINE = START + BID_MS
OUTAGE = 5_000


def market_with_provers() -> Market:
    """Round 0 open with two provers bid in it."""
    market = Market()
    market.tick(START)
    for prover, cost in zip(PROVERS[:2], (1, 5), strict=False):
        market.declare(prover, 2)
        market.cost_bid(prover, cost)
    return market


def test_a_bid_waiting_out_the_outage_is_taken() -> None:
    """A bid that reaches a coordinator back after the bid deadline fell is not late."""
    market = market_with_provers()
    back = BID_DEADLINE + OUTAGE
    market.feed(Resumed(now=back, since=START + 10))
    assert [] == reject_codes(market.task_bid(USERS[0], "t0", 9, now=back))
    assert (BID_DEADLINE + back - START - 10, 0) == (
        market.coordinator.round_deadlines(0)[0],
        market.coordinator.current_round,
    )


def test_without_the_resume_the_same_bid_is_late() -> None:
    """The guard above is needed: judged by the old deadline, that bid is refused."""
    market = market_with_provers()
    market.tick(BID_DEADLINE + OUTAGE)
    assert ["late_bid"] == reject_codes(
        market.task_bid(USERS[0], "t0", 9, round=0, now=BID_DEADLINE + OUTAGE)
    )


def test_proofs_made_during_the_outage_are_on_time() -> None:
    """A prover whose proofs waited at the broker while the coordinator was down is paid."""
    market = market_with_provers()
    for i, fee in enumerate([9, 8, 7]):
        market.task_bid(USERS[i], f"t{i}", fee)
    [assignment] = published(market.tick(BID_DEADLINE), Assignment)
    back = BID_DEADLINE + PROVE_MS + OUTAGE
    market.feed(Resumed(now=back, since=BID_DEADLINE))
    effects = market.tick(back)  # the old prove deadline has passed: nothing settles
    assert [] == published(effects, SettlementNotice)
    effects = market.prove(PROVERS[0], assignment.message, back)  # type: ignore[arg-type]
    outcomes = [n.message.outcome for n in published(effects, SettlementNotice)]  # type: ignore[attr-defined]
    assert ({"paid"}, {}) == (
        {o for o in outcomes if o in ("paid", "slashed")},
        market.coordinator.slashes,
    )


def test_the_schedule_moves_as_a_whole() -> None:
    """Rounds after the outage keep the bid window; none opens already due."""
    market = market_with_provers()
    market.feed(Resumed(now=START + OUTAGE, since=START))
    market.tick(BID_DEADLINE + OUTAGE)
    first, later = (market.coordinator.round_deadlines(n)[0] for n in (0, 1))
    assert (BID_DEADLINE + OUTAGE, BID_MS, 1) == (
        first,
        later - first,
        market.coordinator.current_round,
    )


def test_a_resume_is_recorded_and_replays() -> None:
    """The resume is a record: replaying the log gives the same market, deadlines and all."""
    market = market_with_provers()
    market.feed(Resumed(now=BID_DEADLINE + OUTAGE, since=START))
    market.task_bid(USERS[0], "t0", 9, now=BID_DEADLINE + OUTAGE)
    events = [decode_record(encode_record(e)) for e in market.recorded]
    again = replayed(
        Coordinator(market.params, market.coordinator.genesis, market.coordinator.key, START),
        events,
    )
    assert market.coordinator.state() == again.state()
    assert any(isinstance(e, Resumed) for e in events)
