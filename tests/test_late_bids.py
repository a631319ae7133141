"""No cliff at the deadline: a late task bid may stand for the round open when it arrives."""

from __future__ import annotations

from test_coordinator_helpers import BID_MS, MARKET, START, USERS, Market, published, reject_codes

from protocol.messages import BidReceipt, Reject, TaskBidMessage

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
