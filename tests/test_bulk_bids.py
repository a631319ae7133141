"""Bulk task bids: many task bids under one signature, each judged and answered on its own."""

from __future__ import annotations

import random

import msgspec
import pytest
from test_coordinator_helpers import (
    BID_MS,
    COORD,
    MARKET,
    P_MAX,
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
from coordinator.service import coalesce_notices
from protocol.envelope import bid_ref
from protocol.events import MessageReceived, Publish, Record
from protocol.messages import (
    TASK_BIDS_MAX,
    BidReceipt,
    BidReceipts,
    Message,
    Notices,
    ReceiptEntry,
    Reject,
    RejectEntry,
    Rejects,
    RoundAnnouncement,
    SettlementNotice,
    TaskBidEntry,
    TaskBidMessage,
    TaskBids,
    UserReceipt,
)
from protocol.split import envelope_size, split_to_fit
from user_client.core import UserCore

REF = b"\x42" * 16


def bulk(*entries: tuple[str, int], round: int = 0, late_to_next: bool = False) -> TaskBids:
    bids = [TaskBidEntry(task_id, fee, task_id.encode()) for task_id, fee in entries]
    return TaskBids(market=MARKET, round=round, bids=bids, late_to_next=late_to_next)


def receipts_in(effects: list[object]) -> list[ReceiptEntry]:
    """The bid receipts `effects` send, alone or as entries of a `bid_receipts`."""
    out: list[ReceiptEntry] = []
    for e in effects:
        message = getattr(e, "message", None)
        if isinstance(message, BidReceipts):
            out.extend(message.receipts)
        elif isinstance(message, BidReceipt):
            out.append(ReceiptEntry(message.round, message.ref, message.escrowed))
    return out


def open_market() -> Market:
    market = Market()
    market.tick(START)
    return market


def test_each_entry_is_receipted_under_its_bid_ref_and_recorded_once() -> None:
    """Three entries: three receipts under bid_ref(ref, i), three tasks escrowed, one record."""
    market = open_market()
    effects = market.send(USERS[0], bulk(("a", 3), ("b", 4), ("c", 5)), START + 1, ref=REF)
    receipts = receipts_in(effects)
    assert [bid_ref(REF, i) for i in range(3)] == [r.ref for r in receipts]
    assert [3, 4, 5] == [r.escrowed for r in receipts]
    assert (1, 1) == (
        sum(isinstance(e, Record) for e in effects),
        len(published(effects, BidReceipts)),
    )
    assert 12 == market.coordinator.escrow(USERS[0])


def test_a_bulk_is_judged_as_its_single_bids_would_be() -> None:
    """The same bids in bulk or one by one leave the same market state."""
    entries = [("a", 3), ("a", 4), ("b", P_MAX + 1), ("c", 9), ("d", 9)]
    in_bulk = open_market()
    in_bulk.send(USERS[0], bulk(*entries), START + 1)
    one_by_one = open_market()
    for task_id, fee in entries:
        one_by_one.task_bid(USERS[0], task_id, fee, now=START + 1)
    assert one_by_one.coordinator.state() == in_bulk.coordinator.state()


def test_entries_refused_on_their_own_come_back_in_one_rejects() -> None:
    """A duplicate task and a fee above P_max are refused by bid ref; the rest stand."""
    market = open_market()
    effects = market.send(
        USERS[0], bulk(("a", 3), ("a", 4), ("b", P_MAX + 1), ("c", 2)), START + 1, ref=REF
    )
    [rejects] = [e.message for e in published(effects, Rejects)]
    assert isinstance(rejects, Rejects)
    expected = [("duplicate_task", bid_ref(REF, 1)), ("fee_above_p_max", bid_ref(REF, 2))]
    assert expected == [(r.code, r.ref) for r in rejects.rejects]
    assert [bid_ref(REF, 0), bid_ref(REF, 3)] == [r.ref for r in receipts_in(effects)]
    assert 5 == market.coordinator.escrow(USERS[0])


def test_a_lone_refused_entry_gets_a_plain_reject() -> None:
    """One refused entry is answered with a `reject` naming its bid ref."""
    market = open_market()
    effects = market.send(USERS[0], bulk(("a", 3), ("b", P_MAX + 1)), START + 1, ref=REF)
    [reject] = [e.message for e in published(effects, Reject)]
    assert isinstance(reject, Reject)
    assert ("fee_above_p_max", bid_ref(REF, 1)) == (reject.code, reject.ref)


def test_a_bulk_for_a_closed_round_is_refused_as_one_envelope() -> None:
    """A late bulk that does not ask to move gets one `late_bid` naming the envelope."""
    market = open_market()
    market.tick(START + BID_MS)
    effects = market.send(USERS[0], bulk(("a", 3), ("b", 4)), START + BID_MS + 1, ref=REF)
    [reject] = [e.message for e in published(effects, Reject)]
    assert (["late_bid"], REF) == (reject_codes(effects), reject.ref)  # type: ignore[attr-defined]
    assert not any(isinstance(e, Record) for e in effects)


def test_a_late_bulk_that_asks_stands_for_the_open_round() -> None:
    """With late_to_next, every entry is receipted in round 1."""
    market = open_market()
    market.tick(START + BID_MS)
    late = bulk(("a", 3), ("b", 4), late_to_next=True)
    effects = market.send(USERS[0], late, START + BID_MS + 1)
    assert [1, 1] == [r.round for r in receipts_in(effects)]


def test_a_copy_of_a_taken_bulk_is_a_replay_and_changes_nothing() -> None:
    """The same envelope again: one `replay`, the state as it was."""
    market = open_market()
    market.send(USERS[0], bulk(("a", 3), ("b", 4)), START + 1, ref=REF)
    before = market.coordinator.state()
    assert ["replay"] == reject_codes(market.feed(market.recorded[-1]))
    assert before == market.coordinator.state()


def test_replaying_the_record_log_rebuilds_a_bulk_exactly() -> None:
    """A fold of the records (one per bulk) gives the live core's state."""
    market = open_market()
    market.send(USERS[0], bulk(("a", 3), ("a", 4), ("b", P_MAX + 1), ("c", 9)), START + 1)
    market.send(USERS[1], bulk(("x", 1), ("y", 2)), START + 2)
    market.tick(START + BID_MS)
    fresh = Coordinator(params(), genesis(), COORD, START)
    assert market.coordinator.state() == replayed(fresh, market.recorded).state()


def test_the_entry_count_is_bounded_on_the_wire() -> None:
    """A bulk of more than TASK_BIDS_MAX entries does not decode."""
    entries = [TaskBidEntry(f"t{i}", 1, b"") for i in range(TASK_BIDS_MAX + 1)]
    raw = msgspec.msgpack.encode(
        {"type": "task_bids", "v": 1, "market": MARKET, "round": 0, "bids": entries}
    )
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(raw, type=Message)


def test_a_bulk_too_large_for_one_envelope_is_split_into_bulks() -> None:
    """1,000 entries of 4 KiB inputs seal as several bulks, each within the limit, in order."""
    entries = [TaskBidEntry(f"t{i}", 1, bytes(4096)) for i in range(1000)]
    big = TaskBids(market=MARKET, round=0, bids=entries, late_to_next=True)
    parts = split_to_fit(big)
    assert 1 < len(parts)
    assert all(envelope_size(p) <= 1 << 20 for p in parts)
    assert entries == [b for p in parts for b in p.bids]  # type: ignore[attr-defined]
    assert all(p.late_to_next for p in parts)  # type: ignore[attr-defined]


COORD_KEY = "c" * 64


def user_with_bulk(tasks: int) -> tuple[UserCore, TaskBids]:
    user = UserCore("b" * 64, COORD_KEY, MARKET, random.Random(1), tasks, (1, 5))
    announcement = RoundAnnouncement(
        market=MARKET, round=0, epoch=0, bid_deadline=1, prove_deadline=2, params=params()
    )
    [effect] = user.handle(MessageReceived(COORD_KEY, announcement, REF, 0))
    assert isinstance(effect.message, TaskBids)
    user.sent(effect.message, REF)
    return user, effect.message


def from_coordinator(message: Message) -> MessageReceived:
    return MessageReceived(COORD_KEY, message, b"\x01" * 16, 0)


def test_a_user_bids_several_tasks_in_one_bulk() -> None:
    """Three tasks a round: one bulk envelope with three entries, asking to move if late."""
    user, sent = user_with_bulk(3)
    assert (3, True, 3) == (len(sent.bids), sent.late_to_next, user.open_tasks)
    assert isinstance(sent.entry(0), TaskBidMessage)


def test_a_user_matches_receipts_and_rejects_to_entries() -> None:
    """Receipts close the wait of their entries; a `rejects` closes the tasks it names."""
    user, _ = user_with_bulk(3)
    receipts = BidReceipts(market=MARKET, receipts=[ReceiptEntry(0, bid_ref(REF, 0))])
    user.handle(from_coordinator(receipts))
    assert user.awaiting(REF)
    refused = [RejectEntry("duplicate_task", "twice", bid_ref(REF, i), 0) for i in (1, 2)]
    user.handle(from_coordinator(Rejects(market=MARKET, rejects=refused)))
    assert (False, 1, 2, 1) == (
        user.awaiting(REF),
        user.summary.bids_accepted,
        user.summary.bids_rejected,
        user.open_tasks,
    )
    assert {"unacknowledged": 0, "bulk_envelopes": 0} == {
        k: v for k, v in user.size().items() if k in ("unacknowledged", "bulk_envelopes")
    }


def test_a_reject_of_the_whole_envelope_closes_every_task_it_held() -> None:
    """A `reject` naming the bulk's envelope refuses each entry still awaiting an answer."""
    user, _ = user_with_bulk(3)
    user.handle(from_coordinator(BidReceipt(market=MARKET, round=0, ref=bid_ref(REF, 0))))
    reject = Reject(market=MARKET, code="bad_signature", reason="no", ref=REF)
    user.handle(from_coordinator(reject))
    assert (2, 1, False) == (user.summary.bids_rejected, user.open_tasks, user.awaiting(REF))


def test_a_users_notices_of_a_batch_go_in_one_envelope() -> None:
    """Two users' receipts and settlements: one `notices` each, where its first one was."""
    a, b = "a" * 64, "b" * 64
    notes = [
        UserReceipt(market=MARKET, round=0, task_id="1", allocated=True, price=3),
        UserReceipt(market=MARKET, round=0, task_id="2", allocated=False),
        SettlementNotice(market=MARKET, round=0, outcome="charged", amount=3, task_id="1"),
    ]
    sends = [Publish(notes[0], to=a), Publish(notes[1], to=b), Publish(notes[2], to=a)]
    out = coalesce_notices(sends)
    assert [Publish(Notices(market=MARKET, notices=[notes[0], notes[2]]), to=a), sends[1]] == out


def test_a_user_takes_notices_as_the_notices_they_carry() -> None:
    """A `notices` leaves a user exactly where its receipts and settlements one by one do."""
    one_by_one, together = user_with_bulk(2)[0], user_with_bulk(2)[0]
    ids = [f"{'b' * 8}-0-{i}" for i in range(2)]
    notes: list[UserReceipt | SettlementNotice] = [
        UserReceipt(market=MARKET, round=0, task_id=ids[0], allocated=True, price=3),
        UserReceipt(market=MARKET, round=0, task_id=ids[1], allocated=False),
        SettlementNotice(market=MARKET, round=0, outcome="released", amount=2, task_id=ids[1]),
    ]
    for note in notes:
        one_by_one.handle(from_coordinator(note))
    together.handle(from_coordinator(Notices(market=MARKET, notices=notes)))
    assert one_by_one.summary == together.summary
    assert (1, 1) == (together.summary.allocated, together.summary.released)
