"""No cliff at the deadline: a late task bid may stand for the round open when it arrives."""

from __future__ import annotations

from test_coordinator_helpers import (
    BID_MS,
    COORD,
    MARKET,
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
from protocol.messages import BidReceipt, ClearingResult, Reject, TaskBidMessage

LATE = START + BID_MS + 10  # round 0 has cleared, round 1 is open


def late_bid(late_to_next: bool) -> TaskBidMessage:
    """A bid for round 0, sent after round 0's deadline."""
    return TaskBidMessage(
        market=MARKET, round=0, task_id="t", fee=5, task_input=b"t", late_to_next=late_to_next
    )


def market_in_round_1() -> Market:
    """Round 0 cleared, round 1 open for bids."""
    market = Market()
    market.tick(START)
    market.tick(START + BID_MS)
    return market


def test_a_late_bid_that_asks_stands_for_the_open_round() -> None:
    """Its receipt names round 1 and the task is escrowed there."""
    market = market_in_round_1()
    effects = market.send(USERS[0], late_bid(True), LATE)
    [receipt] = published(effects, BidReceipt)
    task = market.coordinator.task(USERS[0], "t")
    assert (1, 1, 5) == (
        receipt.message.round,
        task.round if task else None,
        market.coordinator.escrow(USERS[0]),
    )  # type: ignore[attr-defined]


def test_a_late_bid_that_does_not_ask_is_refused_naming_the_open_round() -> None:
    """Refused `late_bid`, its reason tells the bidder which round is open now."""
    market = market_in_round_1()
    effects = market.send(USERS[0], late_bid(False), LATE)
    [reject] = published(effects, Reject)
    assert ["late_bid"] == reject_codes(effects)
    assert "round 1 is open" in reject.message.reason  # type: ignore[attr-defined]


def test_a_copy_of_a_moved_bid_is_a_replay() -> None:
    """The moved bid's envelope again changes nothing."""
    market = market_in_round_1()
    market.send(USERS[0], late_bid(True), LATE)
    before = market.coordinator.state()
    assert ["replay"] == reject_codes(market.feed(market.recorded[-1]))
    assert before == market.coordinator.state()


def market_past_its_deadline() -> Market:
    """Round 0 past its bid deadline, its clearing tick not come yet (a busy coordinator)."""
    market = Market()
    market.tick(START)
    market.task_bid(USERS[1], "on-time", 5)
    return market


def test_a_late_bid_before_the_clearing_tick_stands_for_the_next_round() -> None:
    """Round 0 clears first (on time bids only), then the late bid stands in round 1."""
    market = market_past_its_deadline()
    effects = market.send(USERS[0], late_bid(True), LATE)
    [receipt] = published(effects, BidReceipt)
    cleared = [e for e in effects if isinstance(getattr(e, "message", None), ClearingResult)]
    assert (1, 1, 1) == (
        receipt.message.round,  # type: ignore[attr-defined]
        len(cleared),
        cleared[0].message.tasks_bid,  # type: ignore[attr-defined]
    )


def test_a_late_bid_that_does_not_ask_names_the_round_opened_by_its_arrival() -> None:
    """Refused `late_bid`, its reason names round 1, opened as the deadline is caught up."""
    market = market_past_its_deadline()
    effects = market.send(USERS[0], late_bid(False), LATE)
    [reject] = published(effects, Reject)
    assert "round 1 is open" in reject.message.reason  # type: ignore[attr-defined]


def test_catching_up_replays_to_the_same_market() -> None:
    """The clearing a late bid brought forward is recorded as its tick: replay agrees."""
    market = market_past_its_deadline()
    market.send(USERS[0], late_bid(True), LATE)
    fresh = Coordinator(params(), genesis(), COORD, START)
    assert market.coordinator.state() == replayed(fresh, market.recorded).state()
