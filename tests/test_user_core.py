"""The user's pure core and fleet: task bids per round, receipts, settlements, summary."""

from __future__ import annotations

import random

import pytest

from protocol import workload
from protocol.envelope import bid_ref
from protocol.events import MessageReceived, Publish, Tick
from protocol.messages import (
    BidReceipt,
    ClearingResult,
    MarketParams,
    Message,
    Reject,
    RoundAnnouncement,
    SettlementNotice,
    TaskBidMessage,
    TaskBids,
    UserReceipt,
)
from user_client.core import UserCore, UserFleet

USER = "b" * 64
USER2 = "d" * 64
COORD = "c" * 64
OTHER = "e" * 64
MARKET = "m1"
REF = b"r" * 32


def params(p_max: int = 100, difficulty: int = 8) -> MarketParams:
    return MarketParams(
        market=MARKET,
        p_max=p_max,
        epoch_rounds=4,
        capacity_factor=2,
        mechanism="prooph",
        difficulty=difficulty,
        setup=2,
        bid_window_ms=1000,
        prove_window_ms=2000,
    )


def announce(round: int, p_max: int = 100, market: str = MARKET) -> RoundAnnouncement:
    return RoundAnnouncement(
        market=market,
        round=round,
        epoch=0,
        bid_deadline=1000,
        prove_deadline=3000,
        params=params(p_max),
    )


def received(msg: Message, sender: str = COORD) -> MessageReceived:
    return MessageReceived(sender=sender, message=msg, ref=REF, now=0)


def fake_verify(task_input: bytes, proof: bytes, difficulty: int) -> bool:
    """A stand-in proof scheme: the proof is the input reversed, tagged with difficulty."""
    return proof == task_input[::-1] + bytes([difficulty])


def make(
    tasks: int = 3, fee_range: tuple[int, int] = (10, 50), seed: int = 1, carry: bool = False
) -> UserCore:
    return UserCore(
        USER, COORD, MARKET, random.Random(seed), tasks, fee_range, carry, verify=fake_verify
    )


def bids(effects: list[Publish]) -> list[TaskBidMessage]:
    """The task bids `effects` send, a bulk envelope's entries as the bids they stand for."""
    out = []
    for effect in effects:
        assert COORD == effect.to
        message = effect.message
        if isinstance(message, TaskBids):
            out.extend(message.entry(i) for i in range(len(message.bids)))
        else:
            assert isinstance(message, TaskBidMessage)
            out.append(message)
    return out


def test_announcement_yields_k_task_bids_within_fee_range() -> None:
    """Each round a user sends tasks_per_round bids, fees in range, unique ids and inputs."""
    core = make(tasks=5)
    sent = bids(core.handle(received(announce(7))))
    assert 5 == len(sent)
    assert all(10 <= b.fee <= 50 for b in sent)
    assert [f"{USER[:8]}-7-{i}" for i in range(5)] == [b.task_id for b in sent]
    assert 5 == len({b.task_input for b in sent})
    assert all(7 == b.round and MARKET == b.market for b in sent)
    assert 5 == core.summary.tasks_bid
    assert sum(b.fee for b in sent) == core.summary.fees_bid


def test_fees_are_clipped_to_p_max() -> None:
    """A fee drawn above the market's P_max is lowered to P_max."""
    core = make(tasks=4, fee_range=(200, 300))
    sent = bids(core.handle(received(announce(0, p_max=120))))
    assert [120] * 4 == [b.fee for b in sent]


def test_same_seed_same_bids() -> None:
    """Two users with the same seed bid identically: randomness comes only from rng."""
    first = bids(make(seed=42).handle(received(announce(0))))
    second = bids(make(seed=42).handle(received(announce(0))))
    assert first == second


def test_carry_over_flag_is_set_on_bids() -> None:
    """A user configured to carry over marks every bid so."""
    sent = bids(make(carry=True).handle(received(announce(0))))
    assert all(b.carry_over for b in sent)


def test_duplicate_announcement_bids_once() -> None:
    """A redelivered announcement does not produce a second set of bids."""
    core = make()
    core.handle(received(announce(0)))
    assert [] == core.handle(received(announce(0)))
    assert 3 == core.summary.tasks_bid


def test_ignores_non_coordinator_and_other_market() -> None:
    """Announcements from another key or for another market produce no bids."""
    core = make()
    assert [] == core.handle(received(announce(0), sender=OTHER))
    assert [] == core.handle(received(announce(0, market="zz")))
    assert [] == core.handle(Tick(now=5))
    assert 0 == core.summary.tasks_bid


def test_receipts_are_tracked_per_task() -> None:
    """Bid receipts, allocated and unallocated user receipts are counted once each."""
    core = make(tasks=3)
    sent = bids(core.handle(received(announce(0))))
    ids = [b.task_id for b in sent]
    for i, bid in enumerate(sent):
        core.sent(bid, bytes([i]) * 16)
        receipt = BidReceipt(market=MARKET, round=0, ref=bytes([i]) * 16, escrowed=10)
        core.handle(received(receipt))
        core.handle(received(receipt))  # a restarted coordinator's resend counts nothing
    alloc = UserReceipt(market=MARKET, round=0, task_id=ids[0], allocated=True, price=9)
    core.handle(received(alloc))
    core.handle(received(alloc))
    core.handle(received(UserReceipt(market=MARKET, round=0, task_id=ids[1], allocated=False)))
    core.handle(
        received(UserReceipt(market=MARKET, round=0, task_id=ids[2], allocated=False, carried_to=1))
    )
    s = core.summary
    assert (3, 1, 1, 1) == (s.bids_accepted, s.allocated, s.unallocated, s.carried)
    assert "allocated" == core.task_state(ids[0])


def test_receipt_for_unknown_task_is_ignored() -> None:
    """A receipt naming a task this user never bid changes nothing."""
    core = make()
    core.handle(received(UserReceipt(market=MARKET, round=0, task_id="nope", allocated=True)))
    assert 0 == core.summary.allocated


def charged(task_id: str, amount: int, proof: bytes | None) -> SettlementNotice:
    return SettlementNotice(
        market=MARKET, round=0, outcome="charged", amount=amount, task_id=task_id, proof=proof
    )


def test_charged_settlement_verifies_the_proof() -> None:
    """A charged task's proof is checked against the task input and the round's difficulty."""
    core = make(tasks=3)
    sent = bids(core.handle(received(announce(0))))
    good = sent[0].task_input[::-1] + bytes([8])
    core.handle(received(charged(sent[0].task_id, 9, good)))
    core.handle(received(charged(sent[1].task_id, 9, b"wrong")))
    core.handle(received(charged(sent[2].task_id, 9, None)))
    s = core.summary
    assert (3, 27, 1, 2) == (s.charged, s.charged_total, s.proofs_verified, s.proofs_invalid)


def test_refund_and_release_are_totalled() -> None:
    """Refunded and released settlements add to their counts and totals."""
    core = make(tasks=3)
    ids = [b.task_id for b in bids(core.handle(received(announce(0))))]
    core.handle(
        received(
            SettlementNotice(market=MARKET, round=0, outcome="refunded", amount=100, task_id=ids[0])
        )
    )
    core.handle(
        received(
            SettlementNotice(market=MARKET, round=0, outcome="released", amount=33, task_id=ids[1])
        )
    )
    s = core.summary
    assert (1, 100, 1, 33) == (s.refunded, s.refunded_total, s.released, s.released_total)


def test_a_task_settles_once() -> None:
    """A redelivered or contradictory second settlement of a task is ignored."""
    core = make(tasks=1)
    [bid] = bids(core.handle(received(announce(0))))
    core.handle(received(charged(bid.task_id, 9, None)))
    core.handle(received(charged(bid.task_id, 9, None)))
    core.handle(
        received(
            SettlementNotice(
                market=MARKET, round=0, outcome="refunded", amount=100, task_id=bid.task_id
            )
        )
    )
    s = core.summary
    assert (1, 9, 0) == (s.charged, s.charged_total, s.refunded)


def test_forged_settlement_is_ignored() -> None:
    """A settlement from someone other than the coordinator is not counted."""
    core = make(tasks=1)
    [bid] = bids(core.handle(received(announce(0))))
    core.handle(received(charged(bid.task_id, 9, None), sender=OTHER))
    assert 0 == core.summary.charged


def test_rejects_are_counted() -> None:
    """Each reject from the coordinator is counted."""
    core = make()
    core.handle(received(Reject(market=MARKET, code="fee_too_high", reason="x", ref=REF)))
    assert 1 == core.summary.rejects


def reject(ref: bytes, code: str = "late_bid") -> MessageReceived:
    return received(Reject(market=MARKET, code=code, reason="x", ref=ref, round=0))


def test_a_rejected_bid_closes_its_task() -> None:
    """A Reject naming a sent bid's envelope closes that task; the user can then finish."""
    core = UserCore(USER, COORD, MARKET, random.Random(1), 2, (1, 9), verify=fake_verify, rounds=1)
    first, second = bids(core.handle(received(announce(0))))
    core.sent(first, b"ref-1")
    core.sent(second, b"ref-2")
    core.handle(reject(b"ref-1"))
    assert (None, "bid") == (core.task_state(first.task_id), core.task_state(second.task_id))
    assert (1, 1, 1) == (core.summary.rejects, core.summary.bids_rejected, core.open_tasks)
    core.handle(reject(b"ref-2", code="insufficient_balance"))
    assert (True, 0, 2) == (core.finished, core.open_tasks, core.summary.bids_rejected)


def test_a_reject_after_the_receipt_leaves_the_bid_standing() -> None:
    """Once a bid is acknowledged, a Reject naming it (a redelivered copy) closes nothing."""
    core = make(tasks=2)
    first, second = bids(core.handle(received(announce(0))))
    core.sent(first, b"ref-1")
    core.sent(second, b"ref-2")
    core.handle(received(BidReceipt(market=MARKET, round=0, ref=b"ref-1", escrowed=first.fee)))
    core.handle(reject(b"ref-1"))
    core.handle(reject(b"ref-2", code="replay"))
    assert ("bid", "bid") == (core.task_state(first.task_id), core.task_state(second.task_id))
    assert (2, 0, 2) == (core.summary.rejects, core.summary.bids_rejected, core.open_tasks)


def test_fleet_routes_sent_refs_to_their_identity() -> None:
    """A fleet hands a bid's envelope ref to the identity that sent it, and only to it."""
    fleet = UserFleet([USER, USER2], COORD, MARKET, random.Random(1), 1, (1, 9))
    sent = fleet.handle(received(announce(0)))
    (key, effect), _ = sent
    assert isinstance(effect.message, TaskBidMessage)
    fleet.sent(key, effect.message, b"ref-1")
    fleet.handle(reject(b"ref-1"), key)
    sender, other = fleet.users[key], fleet.users[USER2 if key == USER else USER]
    assert (1, 0, 1) == (sender.summary.bids_rejected, sender.open_tasks, other.open_tasks)


@pytest.mark.parametrize(
    ("tasks", "fee_range"), [(-1, (1, 2)), (1, (5, 2)), (1, (-1, 2)), (1, (1.5, 2))]
)
def test_bad_configuration_is_refused(tasks: int, fee_range: tuple[int, int]) -> None:
    """Negative task counts and malformed fee ranges raise ValueError."""
    with pytest.raises(ValueError):
        UserCore(USER, COORD, MARKET, random.Random(0), tasks, fee_range)


def test_fleet_broadcast_reaches_every_identity() -> None:
    """A fleet answers an announcement with each identity's bids, signed by that identity."""
    fleet = UserFleet([USER, USER2], COORD, MARKET, random.Random(3), 2, (1, 9))
    effects = fleet.handle(received(announce(0)))
    assert [USER, USER2] == [key for key, _ in effects]  # each identity's bids in one bulk
    ids = [b.task_id for _, e in effects for b in bids([e])]
    assert 4 == len(set(ids))
    assert (4, 1) == (fleet.summary().tasks_bid, fleet.summary().rounds_seen)


def test_fleet_directed_message_reaches_only_its_identity() -> None:
    """A receipt addressed to one identity updates that identity only."""
    fleet = UserFleet([USER, USER2], COORD, MARKET, random.Random(3), 1, (1, 9))
    for key, effect in fleet.handle(received(announce(0))):
        assert isinstance(effect.message, TaskBidMessage)
        fleet.sent(key, effect.message, REF)  # the same ref in both: only the recipient counts
    receipt = BidReceipt(market=MARKET, round=0, ref=REF)
    fleet.handle(received(receipt), recipient=USER2)
    fleet.handle(received(receipt), recipient="f" * 64)
    assert 0 == fleet.users[USER].summary.bids_accepted
    assert 1 == fleet.users[USER2].summary.bids_accepted
    assert 1 == fleet.summary().bids_accepted


def test_fleet_refuses_duplicate_or_no_identities() -> None:
    """A fleet needs distinct identities and at least one."""
    with pytest.raises(ValueError):
        UserFleet([USER, USER], COORD, MARKET, random.Random(0), 1, (1, 2))
    with pytest.raises(ValueError):
        UserFleet([], COORD, MARKET, random.Random(0), 1, (1, 2))


def test_default_verifier_is_the_sloth_workload() -> None:
    """Without an injected verifier, real sloth proofs verify and flipped ones do not."""
    core = UserCore(USER, COORD, MARKET, random.Random(5), 2, (1, 9))
    sent = bids(core.handle(received(announce(0))))
    good = workload.prove(sent[0].task_input, difficulty=8)
    bad = workload.prove(sent[1].task_input, difficulty=7)
    core.handle(received(charged(sent[0].task_id, 4, good)))
    core.handle(received(charged(sent[1].task_id, 4, bad)))
    assert (1, 1) == (core.summary.proofs_verified, core.summary.proofs_invalid)


def test_round_limit_stops_bidding_and_finishes_when_settled() -> None:
    """With rounds=R a user bids in R rounds only, and is finished once all settle."""
    core = UserCore(USER, COORD, MARKET, random.Random(1), 1, (1, 9), verify=fake_verify, rounds=2)
    [first] = bids(core.handle(received(announce(0))))
    [second] = bids(core.handle(received(announce(1))))
    assert [] == core.handle(received(announce(2)))
    assert (True, False, 2) == (core.bidding_done, core.finished, core.open_tasks)
    core.handle(received(charged(first.task_id, 3, None)))
    core.handle(
        received(
            SettlementNotice(
                market=MARKET, round=1, outcome="released", amount=5, task_id=second.task_id
            )
        )
    )
    assert core.finished
    assert 3000 == core.last_prove_deadline


def test_unbounded_user_never_finishes() -> None:
    """Without a round limit a user keeps bidding and is never finished."""
    core = make(tasks=0)
    core.handle(received(announce(0)))
    assert (False, False) == (core.bidding_done, core.finished)


def _bounded(rounds: int) -> UserCore:
    return UserCore(
        USER, COORD, MARKET, random.Random(1), 1, (1, 9), verify=fake_verify, rounds=rounds
    )


def test_a_lost_announcement_does_not_keep_a_bounded_user_bidding() -> None:
    """Rounds count by number from the first seen: missing round 11 still ends at round 12."""
    core = _bounded(3)
    assert 1 == len(bids(core.handle(received(announce(10)))))
    assert 1 == len(bids(core.handle(received(announce(12)))))
    assert (True, []) == (core.bidding_done, core.handle(received(announce(13))))


def clearing(round: int) -> ClearingResult:
    return ClearingResult(
        market=MARKET,
        round=round,
        mechanism="prooph",
        tasks_bid=1,
        provers_bid=0,
        allocated_provers=0,
        allocated_tasks=0,
        user_price=None,
        prover_price=None,
        winners=[],
        surplus=0,
        prove_deadline=0,
    )


def test_the_clearing_before_the_last_round_does_not_end_bidding() -> None:
    """Round r cleared means r + 1 opened, not that the user bid there: not done yet."""
    core = _bounded(2)
    core.handle(received(announce(0)))
    core.handle(received(clearing(0)))
    assert not core.bidding_done
    assert [] != bids(core.handle(received(announce(1))))
    assert core.bidding_done


def test_a_clearing_result_tells_a_user_the_market_moved_on() -> None:
    """With its last announcement lost, the clearing of that last round ends bidding."""
    core = _bounded(2)
    core.handle(received(announce(0)))
    core.handle(received(clearing(0)))
    core.handle(received(clearing(1)))
    assert core.bidding_done


def test_working_state_stays_bounded_over_many_rounds() -> None:
    """Settled tasks leave at once and open ones with their round: entries stop growing."""
    from user_client.core import ANNOUNCE_ROUNDS, RETAIN_ROUNDS

    core = make(tasks=2)
    sizes = {}
    for r in range(3 * RETAIN_ROUNDS):
        settled, left_open = bids(core.handle(received(announce(r))))
        core.sent(settled, bytes([r % 256]) * 8 + r.to_bytes(8, "big"))
        notice = SettlementNotice(
            market=MARKET, round=r, outcome="released", amount=settled.fee, task_id=settled.task_id
        )
        core.handle(received(notice))
        core.handle(received(notice))  # a redelivery finds the task gone and changes nothing
        sizes[r] = core.size()
    last = 3 * RETAIN_ROUNDS - 1
    assert sizes[2 * RETAIN_ROUNDS] == sizes[last]
    assert RETAIN_ROUNDS + 1 >= sizes[last]["tasks"]
    assert 0 == sizes[last]["unacknowledged"]
    assert ANNOUNCE_ROUNDS + 1 >= sizes[last]["rounds"]
    assert (3 * RETAIN_ROUNDS, 2 * 3 * RETAIN_ROUNDS) == (
        core.summary.released,
        core.summary.tasks_bid,
    )
    assert (None, "bid") == (core.task_state(settled.task_id), core.task_state(left_open.task_id))
    assert sizes[last]["tasks"] == core.open_tasks


def test_a_rescue_credit_keeps_the_task_open_and_counts_once() -> None:
    """A `rescued` notice (and a resent copy) counts once and leaves the task to be charged."""
    core = make(tasks=1)
    [bid] = bids(core.handle(received(announce(0))))
    rescued = SettlementNotice(
        market=MARKET, round=0, outcome="rescued", amount=100, task_id=bid.task_id
    )
    core.handle(received(rescued))
    core.handle(received(rescued))
    core.handle(received(charged(bid.task_id, 9, None)))
    s = core.summary
    assert (1, 100, 1, 9) == (s.rescued, s.rescued_total, s.charged, s.charged_total)


def held_entries(obj: object) -> int:
    """Entries in every container `obj` holds, recursively: what a core keeps, however named."""
    if isinstance(obj, dict):
        return len(obj) + sum(held_entries(k) + held_entries(v) for k, v in obj.items())
    if isinstance(obj, set | frozenset | list | tuple):
        return len(obj) + sum(held_entries(v) for v in obj)
    slots = getattr(type(obj), "__slots__", None)
    if slots is not None and hasattr(obj, "__dataclass_fields__"):
        return sum(held_entries(getattr(obj, name)) for name in slots)
    return 0


def play_rounds(core: UserCore, rounds: range, open_for: int = 2) -> None:
    """Rounds as a coordinator plays them: of the three bids of a round's bulk envelope two
    are taken (each receipt comes twice) and settle `open_for` rounds later, and one is
    refused (the refusal twice); a receipt of a bid the user never sent comes too."""
    for r in rounds:
        (effect,) = core.handle(received(announce(r)))
        assert isinstance(effect.message, TaskBids)
        envelope = r.to_bytes(16, "big")
        core.sent(effect.message, envelope)
        for i in (0, 1):
            receipt = BidReceipt(market=MARKET, round=r, ref=bid_ref(envelope, i))
            core.handle(received(receipt))
            core.handle(received(receipt))
        core.handle(reject(bid_ref(envelope, 2)))
        core.handle(reject(bid_ref(envelope, 2)))
        core.handle(received(BidReceipt(market=MARKET, round=r, ref=b"x" * 16)))  # not ours
        old = r - open_for
        if old >= 0:
            for i in (0, 1):
                notice = SettlementNotice(
                    market=MARKET,
                    round=old,
                    outcome="released",
                    amount=1,
                    task_id=f"{USER[:8]}-{old}-{i}",
                )
                core.handle(received(notice))


def test_retained_state_is_bounded_by_the_rounds_still_open() -> None:
    """What a user holds after 1,500 rounds equals what it held after 300: its open tasks only."""
    core = make(tasks=3)
    play_rounds(core, range(300))
    after_300 = held_entries(vars(core))
    play_rounds(core, range(300, 1500))
    after_1500 = held_entries(vars(core))
    assert after_300 == after_1500
    assert {"tasks": 4, "round_buckets": 2, "unacknowledged": 0, "bulk_envelopes": 0} == {
        k: v for k, v in core.size().items() if k != "rounds"
    }
    s = core.summary
    assert (3000, 1500, 1500 * 2 - 4, 4) == (
        s.bids_accepted,
        s.bids_rejected,
        s.released,
        core.open_tasks,
    )
