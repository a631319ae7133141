"""One test per coordinator rule and per reject code, driven by hand-built messages."""

from __future__ import annotations

import pytest
from test_coordinator_helpers import (
    BID_MS,
    COORD,
    FAUCET,
    MARKET,
    P_MAX,
    PROVE_MS,
    PROVERS,
    START,
    USERS,
    Market,
    genesis,
    params,
    proofs_for,
    published,
    reject_codes,
    replayed,
)

from coordinator.accounts import TREASURY
from coordinator.core import SEEN_ROUNDS, Coordinator
from coordinator.invariants import check_invariants
from coordinator.records import CoordinatorEffect
from coordinator.state import wire_task_id
from protocol.events import Record, WakeAt
from protocol.messages import (
    Assignment,
    BidReceipt,
    ClearingResult,
    FundingNotice,
    ProverCostBid,
    Reject,
    RoundAnnouncement,
    SettlementNotice,
    UserReceipt,
    WithdrawalReceipt,
)

U0, U1, U2, U3 = USERS
P0, P1, P2 = PROVERS
BID_DEADLINE = START + BID_MS
PROVE_DEADLINE = BID_DEADLINE + PROVE_MS


def opened(**changes: object) -> Market:
    market = Market(**changes)
    market.tick(START)
    return market


def clear_round_0() -> tuple[Market, list[CoordinatorEffect]]:
    """Round 0 cleared: provers P0 (cost 1) and P1 (cost 5), capacity 2 each; four bids."""
    market = opened()
    market.declare(P0, 2)
    market.declare(P1, 2)
    market.cost_bid(P0, 1)
    market.cost_bid(P1, 5)
    for i, fee in enumerate([9, 8, 7, 3]):
        market.task_bid(USERS[i], f"t{i}", fee)
    return market, market.tick(BID_DEADLINE)


def cleared_market() -> tuple[Market, Assignment]:
    """Round 0 with one winning prover (P0, capacity 2) and four task bids."""
    market, effects = clear_round_0()
    [assignment] = published(effects, Assignment)
    return market, assignment.message  # type: ignore[return-value]


def notices(effects: list[object], outcome: str) -> list[SettlementNotice]:
    told = [e.message for e in published(effects, SettlementNotice)]  # type: ignore[arg-type]
    return [n for n in told if n.outcome == outcome]  # type: ignore[attr-defined, misc]


# -- rounds and time -------------------------------------------------------------------


def test_first_tick_opens_round_zero() -> None:
    """The tick at start_ms records itself, announces round 0 and asks to wake at its deadline."""
    market = Market()
    assert [] == market.tick(START - 1)
    effects = market.tick(START)
    assert isinstance(effects[0], Record)
    [announce] = published(effects, RoundAnnouncement)
    assert (0, 0, BID_DEADLINE, PROVE_DEADLINE) == (
        announce.message.round,  # type: ignore[attr-defined]
        announce.message.epoch,  # type: ignore[attr-defined]
        announce.message.bid_deadline,  # type: ignore[attr-defined]
        announce.message.prove_deadline,  # type: ignore[attr-defined]
    )
    assert WakeAt(BID_DEADLINE) == effects[-1]


def test_rounds_pipeline_next_round_bids_while_previous_proves() -> None:
    """Clearing round 0 opens round 1, which takes bids while round 0 is proving."""
    market, _ = cleared_market()
    assert 1 == market.coordinator.bidding_round
    effects = market.task_bid(U0, "next", 5, round=1, now=BID_DEADLINE + 1)
    assert 1 == len(published(effects, BidReceipt))


def test_every_accepted_input_is_recorded_before_its_effects() -> None:
    """An accepted bid yields Record first; a rejected one yields no Record at all."""
    market = opened()
    accepted = market.task_bid(U0, "t", 5)
    rejected = market.task_bid(U0, "t", 5)
    assert isinstance(accepted[0], Record)
    assert not any(isinstance(e, Record) for e in rejected)


# -- rejects ---------------------------------------------------------------------------


def test_wrong_market_rejected() -> None:
    """A message for another market is refused with wrong_market."""
    market = opened()
    msg = ProverCostBid(market="other", round=0, cost=1)
    assert ["wrong_market"] == reject_codes(market.send(P0, msg, START))


def test_unexpected_message_rejected() -> None:
    """A coordinator-only message kind sent to the coordinator is refused."""
    market = opened()
    msg = Reject(market=MARKET, code="x", reason="", ref=bytes(16))
    assert ["unexpected_message"] == reject_codes(market.send(P0, msg, START))


def test_late_bid_rejected_after_deadline() -> None:
    """A bid stamped after the round's bid deadline is late."""
    market = opened()
    assert ["late_bid"] == reject_codes(market.task_bid(U0, "t", 5, now=BID_DEADLINE + 1))


def test_bid_for_cleared_round_is_late() -> None:
    """A bid for a round that has already cleared is late, whatever its timestamp."""
    market, _ = cleared_market()
    assert ["late_bid"] == reject_codes(market.task_bid(U0, "x", 5, round=0, now=START))


def test_bid_for_future_round_is_wrong_round() -> None:
    """A bid for a round not yet open is refused with wrong_round."""
    market = opened()
    assert ["wrong_round"] == reject_codes(market.task_bid(U0, "t", 5, round=3))


def test_fee_above_p_max_rejected() -> None:
    """A task's fee may not exceed P_max."""
    market = opened()
    assert ["fee_above_p_max"] == reject_codes(market.task_bid(U0, "t", P_MAX + 1))


def test_insufficient_balance_rejected_and_nothing_escrowed() -> None:
    """A fee above the user's balance is refused and escrows nothing."""
    coordinator = Coordinator(params(), genesis(balance=4), COORD, START)
    market = Market(coordinator)
    market.tick(START)
    assert ["insufficient_balance"] == reject_codes(market.task_bid(U0, "t", 5))
    assert (4, 0) == (coordinator.balance(U0), coordinator.escrow(U0))


def test_task_bid_escrows_fee() -> None:
    """An accepted task bid moves its fee from balance to escrow and says so in the receipt."""
    market = opened()
    effects = market.task_bid(U0, "t", 7)
    [receipt] = published(effects, BidReceipt)
    assert 7 == receipt.message.escrowed  # type: ignore[attr-defined]
    assert (93, 7) == (market.coordinator.balance(U0), market.coordinator.escrow(U0))


def test_duplicate_task_rejected() -> None:
    """A user's second bid for one of its own task ids is refused with duplicate_task."""
    market = opened()
    market.task_bid(U0, "t", 5)
    assert ["duplicate_task"] == reject_codes(market.task_bid(U0, "t", 6, now=START + 1))
    assert (95, 5) == (market.coordinator.balance(U0), market.coordinator.escrow(U0))


def test_task_ids_belong_to_their_user() -> None:
    """Another user bidding the same task id is accepted: one user cannot squat another's id."""
    market = opened()
    market.task_bid(U0, "t", 5)
    assert [] == reject_codes(market.task_bid(U1, "t", 6))
    c = market.coordinator
    assert (5, 6) == (c.task(U0, "t").fee, c.task(U1, "t").fee)  # type: ignore[union-attr]
    assert {(U0, "t"): 5, (U1, "t"): 6} == c.open_bids()


def test_same_task_id_from_two_users_settles_separately() -> None:
    """Two users' tasks named alike get distinct wire ids, and each user hears its own id."""
    market = opened()
    for prover, cost in ((P0, 1), (P1, 5)):
        market.declare(prover, 2)
        market.cost_bid(prover, cost)
    market.task_bid(U0, "same", 9)
    market.task_bid(U1, "same", 8)
    market.task_bid(U2, "same", 7)
    market.task_bid(U3, "same", 3)
    effects = market.tick(BID_DEADLINE)
    [assignment] = published(effects, Assignment)
    wire = [t.task_id for t in assignment.message.tasks]  # type: ignore[attr-defined]
    assert sorted([wire_task_id(U0, "same"), wire_task_id(U1, "same")]) == sorted(wire)
    receipts = {
        (e.to, e.message.task_id, e.message.allocated)  # type: ignore[attr-defined]
        for e in published(effects, UserReceipt)
    }
    assert {(u, "same", u in (U0, U1)) for u in USERS} == receipts
    settled = market.prove(P0, assignment.message, BID_DEADLINE + 10)  # type: ignore[arg-type]
    charged = {
        (e.to, e.message.task_id)  # type: ignore[attr-defined]
        for e in published(settled, SettlementNotice)
    }
    assert {(U0, "same"), (U1, "same"), (P0, None)} == charged
    assert [] == check_invariants(market.coordinator)


def test_duplicate_delivery_changes_nothing() -> None:
    """The same envelope delivered twice gets `replay`, quoting its ref, and nothing more."""
    market = opened()
    market.task_bid(U0, "t", 5)
    before = market.coordinator.state()
    copy = market.recorded[-1]
    effects = market.feed(copy)
    assert ["replay"] == reject_codes(effects)
    assert [copy.ref] == [e.message.ref for e in published(effects, Reject)]  # type: ignore[attr-defined]
    assert before == market.coordinator.state()


def test_capacity_not_declared_rejected() -> None:
    """A cost bid needs a capacity declared for the round's epoch."""
    market = opened()
    assert ["capacity_not_declared"] == reject_codes(market.cost_bid(P0, 1))


def test_declaration_locks_p_max_times_capacity() -> None:
    """Declaring capacity s locks P_max * s of the prover's free deposit."""
    market = opened()
    effects = market.declare(P0, 3)
    assert 1 == len(published(effects, BidReceipt))
    assert (3 * P_MAX, 100 - 3 * P_MAX) == (
        market.coordinator.locked(P0),
        market.coordinator.deposit(P0),
    )


def test_insufficient_deposit_rejected() -> None:
    """A capacity whose P_max * s exceeds the free deposit is refused."""
    market = opened()
    assert ["insufficient_deposit"] == reject_codes(market.declare(P0, 11))
    assert (0, 100) == (market.coordinator.locked(P0), market.coordinator.deposit(P0))


def test_capacity_locked_within_epoch() -> None:
    """A different capacity for an epoch already declared is refused with capacity_locked."""
    market = opened()
    market.declare(P0, 2)
    assert ["capacity_locked"] == reject_codes(market.declare(P0, 3))
    assert 2 == market.coordinator.capacity(P0, 0)


def test_capacity_declaration_closes_when_epoch_first_round_clears() -> None:
    """After an epoch's first round has cleared, no new declaration for it is taken."""
    market, _ = cleared_market()
    assert ["capacity_locked"] == reject_codes(market.declare(P2, 2, now=BID_DEADLINE + 1))


def test_capacity_change_too_large_rejected() -> None:
    """At an epoch boundary capacity may change by at most the factor m."""
    market = opened()
    market.declare(P0, 2)
    assert ["capacity_change_too_large"] == reject_codes(market.declare(P0, 5, epoch=1))
    assert [] == reject_codes(market.declare(P0, 4, epoch=1))


def test_capacity_shrink_too_large_rejected() -> None:
    """Capacity may not shrink by more than the factor m either."""
    market = opened()
    market.declare(P0, 5)
    assert ["capacity_change_too_large"] == reject_codes(market.declare(P0, 2, epoch=1))


def test_wrong_epoch_rejected() -> None:
    """Declarations more than one epoch ahead are refused."""
    market = opened()
    assert ["wrong_epoch"] == reject_codes(market.declare(P0, 2, epoch=2))


def test_cost_above_p_max_rejected() -> None:
    """A prover's unit cost may not exceed P_max."""
    market = opened()
    market.declare(P0, 2)
    assert ["cost_above_p_max"] == reject_codes(market.cost_bid(P0, P_MAX + 1))


def test_duplicate_cost_bid_rejected() -> None:
    """A second, different cost bid for the same round is refused."""
    market = opened()
    market.declare(P0, 2)
    market.cost_bid(P0, 1)
    assert ["duplicate_bid"] == reject_codes(market.cost_bid(P0, 2))


def test_redelivered_proofs_after_settlement_change_nothing() -> None:
    """The same proof envelope again, after its batch settled, is a `replay`, nothing more."""
    market, assignment = cleared_market()
    market.prove(P0, assignment, BID_DEADLINE + 10)
    before = market.coordinator.state()
    assert ["replay"] == reject_codes(market.feed(market.recorded[-1]))
    assert before == market.coordinator.state()


def test_not_assigned_proof_rejected() -> None:
    """Proofs from a prover with no batch in the round are refused."""
    market, assignment = cleared_market()
    effects = market.send(P1, proofs_for(assignment), BID_DEADLINE + 10)
    assert ["not_assigned"] == reject_codes(effects)


def test_proof_for_task_outside_batch_rejected() -> None:
    """A proof naming a task outside the prover's batch is refused whole."""
    market, assignment = cleared_market()
    other = Assignment(
        market=MARKET,
        round=0,
        prove_deadline=0,
        difficulty=1,
        setup=0,
        payment=0,
        tasks=[*assignment.tasks[:1], type(assignment.tasks[0])("t3", b"t3")],
    )
    effects = market.send(P0, proofs_for(other), BID_DEADLINE + 10)
    assert ["not_assigned"] == reject_codes(effects)


def test_late_proof_rejected_and_prover_slashed() -> None:
    """At the deadline the prover is slashed; proofs that arrive after it are refused."""
    market, assignment = cleared_market()
    effects = market.tick(PROVE_DEADLINE)
    assert 1 == len(notices(effects, "slashed"))
    assert ["late_proof"] == reject_codes(market.prove(P0, assignment, PROVE_DEADLINE + 1))


def test_a_late_proof_before_the_deadlines_tick_is_judged_after_the_deadline() -> None:
    """A proof that arrives after the deadline, before its tick: the slash comes first."""
    market, assignment = cleared_market()
    effects = market.prove(P0, assignment, PROVE_DEADLINE + 1)
    assert (1, ["late_proof"]) == (len(notices(effects, "slashed")), reject_codes(effects))
    assert [] == market.tick(PROVE_DEADLINE + 2)


def test_prover_busy_excluded_when_previous_batch_open() -> None:
    """With a prove window longer than the bid window, an open batch keeps a prover out."""
    market = Market(prove_window_ms=3 * BID_MS)
    market.tick(START)
    market.declare(P0, 2)
    market.cost_bid(P0, 1)
    market.declare(P1, 2)
    market.cost_bid(P1, 5)
    for i in range(3):
        market.task_bid(USERS[i], f"t{i}", 9)
    market.tick(BID_DEADLINE)
    market.cost_bid(P0, 1, round=1, now=BID_DEADLINE)
    effects = market.tick(BID_DEADLINE + BID_MS)
    assert ["prover_busy"] == reject_codes(effects)


# -- clearing and settlement ------------------------------------------------------------


def test_clearing_publishes_result_assignment_and_receipts() -> None:
    """Proo-phi at the bid deadline: P0 wins 2 tasks at user price 7, prover price 5."""
    market, assignment = cleared_market()
    assert (wire_task_id(U0, "t0"), wire_task_id(U1, "t1")) == tuple(
        t.task_id for t in assignment.tasks
    )
    assert 2 * 5 == assignment.payment
    [result] = [
        m
        for m in market.coordinator.state()["rounds"]  # type: ignore[attr-defined]
        if m[0] == 0
    ]
    assert "prove" == result[1]
    statuses = {t.task_id: t.status for t in market.coordinator.tasks()}
    assert {U0, U1, U2, U3} == {t.user for t in market.coordinator.tasks()}
    assert {"t0": "assigned", "t1": "assigned", "t2": "released", "t3": "released"} == statuses


def test_clearing_result_fields() -> None:
    """The public clearing result carries counts and prices but no bid contents."""
    _, effects = clear_round_0()
    [result] = published(effects, ClearingResult)
    msg = result.message
    assert (4, 2, 1, 2, 7, 5, 2 * (7 - 5), None) == (
        msg.tasks_bid,  # type: ignore[attr-defined]
        msg.provers_bid,  # type: ignore[attr-defined]
        msg.allocated_provers,  # type: ignore[attr-defined]
        msg.allocated_tasks,  # type: ignore[attr-defined]
        msg.user_price,  # type: ignore[attr-defined]
        msg.prover_price,  # type: ignore[attr-defined]
        msg.surplus,  # type: ignore[attr-defined]
        result.to,
    )
    receipts = {e.message.task_id: e.message.allocated for e in published(effects, UserReceipt)}  # type: ignore[attr-defined]
    assert {"t0": True, "t1": True, "t2": False, "t3": False} == receipts


def test_valid_proofs_charge_users_pay_prover_surplus_to_treasury() -> None:
    """Full valid proofs settle at once: users charged 7 with their proof, P0 paid 10."""
    market, assignment = cleared_market()
    effects = market.prove(P0, assignment, BID_DEADLINE + 10)
    charged = notices(effects, "charged")
    assert [7, 7] == [n.amount for n in charged]
    assert all(n.proof is not None for n in charged)
    assert [10] == [n.amount for n in notices(effects, "paid")]
    c = market.coordinator
    assert (100 - 7, 100 - 7, 10, 4) == (
        c.balance(U0),
        c.balance(U1),
        c.balance(P0),
        c.accounts.balance(TREASURY),
    )
    assert {} == c.open_bids()
    assert [] == check_invariants(c)


def test_unallocated_tasks_released_at_clearing() -> None:
    """Losing task bids get their whole fee back at clearing, with a released notice."""
    market, _ = cleared_market()
    c = market.coordinator
    assert (100, 100) == (c.balance(U2), c.balance(U3))
    assert ("released", 1) == (c.task(U2, "t2").status, c.task(U2, "t2").settlements)  # type: ignore[union-attr]


def test_carry_over_moves_unallocated_bid_to_next_round() -> None:
    """An unallocated bid asking for carry-over stays escrowed and joins the next round."""
    market = opened()
    market.task_bid(U0, "t", 5, carry_over=True)
    effects = market.tick(BID_DEADLINE)
    [receipt] = published(effects, UserReceipt)
    assert 1 == receipt.message.carried_to  # type: ignore[attr-defined]
    task = market.coordinator.task(U0, "t")
    assert (1, "open", 5) == (task.round, task.status, market.coordinator.escrow(U0))  # type: ignore[union-attr]


def test_carried_bid_released_if_unallocated_again() -> None:
    """A bid is carried once; unallocated in its second round too, it is released."""
    market = opened()
    market.task_bid(U0, "t", 5, carry_over=True)
    market.tick(BID_DEADLINE)
    effects = market.tick(BID_DEADLINE + BID_MS)
    [receipt] = published(effects, UserReceipt)
    assert None is receipt.message.carried_to  # type: ignore[attr-defined]
    assert ("released", 100) == (
        market.coordinator.task(U0, "t").status,
        market.coordinator.balance(U0),
    )  # type: ignore[union-attr]


def test_missing_proof_slashes_and_refunds_p_max() -> None:
    """No proof by the deadline: deposit forfeited, users refunded P_max, not charged, no pay."""
    market, _ = cleared_market()
    effects = market.tick(PROVE_DEADLINE)
    c = market.coordinator
    assert [P_MAX, P_MAX] == [n.amount for n in notices(effects, "refunded")]
    assert [2 * P_MAX] == [n.amount for n in notices(effects, "slashed")]
    assert [] == notices(effects, "paid")
    assert (100 + P_MAX, 100 + P_MAX, 0, 0) == (
        c.balance(U0),
        c.balance(U1),
        c.locked(P0),
        c.balance(P0),
    )
    assert [] == check_invariants(c)


def test_invalid_proof_slashes_prover() -> None:
    """One wrong proof: its user is refunded, the valid task is charged, the prover is slashed."""
    market, assignment = cleared_market()
    effects = market.prove(P0, assignment, BID_DEADLINE + 10, corrupt=[wire_task_id(U1, "t1")])
    assert ["t0"] == [n.task_id for n in notices(effects, "charged")]
    assert ["t1"] == [n.task_id for n in notices(effects, "refunded")]
    assert 1 == len(notices(effects, "slashed"))
    assert [] == check_invariants(market.coordinator)


def test_nothing_settled_twice() -> None:
    """Proofs after a batch settled are refused and the deadline settles nothing again."""
    market, assignment = cleared_market()
    market.prove(P0, assignment, BID_DEADLINE + 10)
    assert ["late_proof"] == reject_codes(market.prove(P0, assignment, BID_DEADLINE + 11))
    assert [] == published(market.tick(PROVE_DEADLINE), SettlementNotice)
    assert all(t.settlements <= 1 for t in market.coordinator.tasks())


def test_a_settled_batch_keeps_neither_its_proofs_nor_its_tasks_inputs() -> None:
    """Settled, a batch drops its proofs and its closed tasks their inputs; late proofs bounce."""
    market, assignment = cleared_market()
    market.prove(P0, assignment, BID_DEADLINE + 10)
    c = market.coordinator
    batch = c._rounds[0].batches[P0]
    closed = [c.task(*key) for key in batch.tasks]
    assert (True, {}, {b""}) == (batch.settled, batch.proofs, {t.task_input for t in closed})  # type: ignore[union-attr]
    assert ["late_proof"] == reject_codes(market.prove(P0, assignment, BID_DEADLINE + 11))


def test_slashed_prover_must_relock_before_bidding_again() -> None:
    """After a slash the prover's next cost bid locks fresh deposit, or is refused."""
    coordinator = Coordinator(params(prove_window_ms=50), genesis(deposit=25), COORD, START)
    market = Market(coordinator)
    market.tick(START)
    market.declare(P0, 2)
    market.cost_bid(P0, 1)
    market.declare(P1, 2)
    market.cost_bid(P1, 5)
    for i in range(3):
        market.task_bid(USERS[i], f"t{i}", 9)
    market.tick(BID_DEADLINE)
    market.tick(BID_DEADLINE + 50)  # P0 proves nothing: slashed
    assert (0, 5) == (coordinator.locked(P0), coordinator.deposit(P0))
    assert ["insufficient_deposit"] == reject_codes(
        market.cost_bid(P0, 1, round=1, now=BID_DEADLINE + 50)
    )


def test_deposit_unlocked_after_epoch_and_withdrawable() -> None:
    """A prover that declares nothing for the next epoch gets its lock back after the epoch."""
    market = opened()
    market.declare(P0, 2)
    market.tick(START + 2 * BID_MS)  # round 1, the epoch's last, clears
    c = market.coordinator
    assert (0, 100) == (c.locked(P0), c.deposit(P0))
    assert [] == reject_codes(market.withdraw(P0, 100, round=2, now=START + 2 * BID_MS))
    assert (0, 100) == (c.deposit(P0), c.accounts.withdrawn())


# -- withdrawals ------------------------------------------------------------------------


def test_withdrawal_pays_free_deposit_out() -> None:
    """A prover withdraws free deposit: it leaves the market and a receipt says what is left."""
    market = opened()
    effects = market.withdraw(P0, 30)
    assert isinstance(effects[0], Record)
    [receipt] = published(effects, WithdrawalReceipt)
    msg = receipt.message
    assert (P0, "deposit", 30, 70) == (receipt.to, msg.account, msg.amount, msg.remaining)  # type: ignore[attr-defined]
    c = market.coordinator
    assert (70, 30, True) == (c.deposit(P0), c.accounts.withdrawn(), c.accounts.conserved())
    assert [] == check_invariants(c)


def test_withdrawal_from_balance() -> None:
    """A user withdraws spendable balance; escrowed fees stay behind."""
    market = opened()
    market.task_bid(U0, "t", 10)
    market.withdraw(U0, 90, account="balance")
    assert ["insufficient_funds"] == reject_codes(market.withdraw(U0, 1, account="balance"))
    c = market.coordinator
    assert (0, 10, 90) == (c.balance(U0), c.escrow(U0), c.accounts.withdrawn())


def test_withdrawal_of_locked_deposit_rejected() -> None:
    """Deposit locked behind a declared capacity cannot be withdrawn: deposit_locked."""
    market = opened()
    market.declare(P0, 5)  # locks 50 of 100
    assert ["deposit_locked"] == reject_codes(market.withdraw(P0, 51))
    assert (50, 50, 0) == (
        market.coordinator.deposit(P0),
        market.coordinator.locked(P0),
        market.coordinator.accounts.withdrawn(),
    )


def test_withdrawal_above_holdings_rejected() -> None:
    """Asking for more than free and locked deposit together is insufficient_funds."""
    market = opened()
    assert ["insufficient_funds"] == reject_codes(market.withdraw(P0, 101))
    assert 100 == market.coordinator.deposit(P0)


def test_withdrawal_invalid_amount_rejected() -> None:
    """A zero amount (which the decoder already refuses) is refused by the core too."""
    market = opened()
    assert ["invalid_amount"] == reject_codes(market.withdraw(P0, 0))


def test_withdrawal_for_other_round_rejected() -> None:
    """A withdrawal must name the current round (or a remembered one), never a future one."""
    market = opened()
    assert ["wrong_round"] == reject_codes(market.withdraw(P0, 10, round=1))
    market.tick(START + (SEEN_ROUNDS + 1) * BID_MS)
    assert ["wrong_round"] == reject_codes(market.withdraw(P0, 10, round=0))
    assert 100 == market.coordinator.deposit(P0)


def test_redelivered_withdrawal_paid_once() -> None:
    """The same withdrawal envelope twice pays out once; a fresh one pays again."""
    market = opened()
    market.withdraw(P0, 10)
    assert ["replay"] == reject_codes(market.feed(market.recorded[-1]))
    market.withdraw(P0, 10)
    assert (80, 20) == (market.coordinator.deposit(P0), market.coordinator.accounts.withdrawn())


def test_withdrawal_after_market_finished() -> None:
    """Once a round-limited market has finished, everyone can still take their money out."""
    market = Market(Coordinator(params(), genesis(), COORD, START, rounds=2))
    market.tick(START + 10 * BID_MS)
    assert market.coordinator.finished
    assert [] == reject_codes(market.withdraw(U0, 100, account="balance", round=1))
    assert 0 == market.coordinator.balance(U0)


# -- faucet -----------------------------------------------------------------------------


def faucet_market() -> Market:
    market = Market(Coordinator(params(), genesis(faucet=FAUCET), COORD, START))
    market.tick(START)
    return market


def test_faucet_grant_funds_balance_or_deposit() -> None:
    """A grant from the genesis's faucet brings new money in, recorded and announced."""
    market = faucet_market()
    effects = market.grant(U0, 50, nonce=1)
    assert isinstance(effects[0], Record)
    assert {U0, FAUCET} == {e.to for e in published(effects, FundingNotice)}
    market.grant(P0, 30, nonce=2, account="deposit")
    c = market.coordinator
    assert (150, 130, 4 * 100 + 3 * 100 + 80) == (c.balance(U0), c.deposit(P0), c.accounts.funded())
    assert [] == check_invariants(c)


def test_faucet_grant_from_other_key_rejected() -> None:
    """Only the faucet key named in the genesis may grant: anyone else gets not_faucet."""
    market = faucet_market()
    assert ["not_faucet"] == reject_codes(market.grant(U0, 50, nonce=1, sender=U0))
    assert 100 == market.coordinator.balance(U0)


def test_faucet_grant_without_faucet_rejected() -> None:
    """A market whose genesis names no faucet takes no grants at all."""
    market = opened()
    assert ["not_faucet"] == reject_codes(market.grant(U0, 50, nonce=1))
    assert 700 == market.coordinator.accounts.funded()


def test_same_faucet_grant_twice_credits_once() -> None:
    """A grant redelivered, or re-signed with its nonce, credits nothing the second time."""
    market = faucet_market()
    market.grant(U0, 50, nonce=7)
    before = market.coordinator.state()
    assert ["replay"] == reject_codes(market.feed(market.recorded[-1]))
    again = market.grant(U0, 50, nonce=7)
    assert not any(isinstance(e, Record) for e in again)
    assert [FAUCET] == [e.to for e in published(again, FundingNotice)]
    assert before == market.coordinator.state()


def test_faucet_nonce_reused_for_another_grant_rejected() -> None:
    """A nonce already taken cannot name a different grant: duplicate_grant."""
    market = faucet_market()
    market.grant(U0, 50, nonce=7)
    assert ["duplicate_grant"] == reject_codes(market.grant(U1, 50, nonce=7))
    assert ["duplicate_grant"] == reject_codes(market.grant(U0, 51, nonce=7))
    assert (150, 100) == (market.coordinator.balance(U0), market.coordinator.balance(U1))


def test_faucet_grant_invalid_amount_rejected() -> None:
    """A zero grant is refused and takes no nonce."""
    market = faucet_market()
    assert ["invalid_amount"] == reject_codes(market.grant(U0, 0, nonce=3))
    assert [] == reject_codes(market.grant(U0, 5, nonce=3))


def test_faucet_grants_survive_replay() -> None:
    """A restored coordinator remembers the grants taken, so a replayed grant credits nothing."""
    market = faucet_market()
    market.grant(U0, 50, nonce=1)
    restored = replayed(
        Coordinator(params(), genesis(faucet=FAUCET), COORD, START), market.recorded
    )
    assert market.coordinator.state() == restored.state()
    assert ["replay"] == reject_codes(Market(restored).grant(U0, 50, nonce=1))
    assert 150 == restored.balance(U0)


@pytest.mark.parametrize("rounds", [1, 3])
def test_round_limit_finishes(rounds: int) -> None:
    """A market with a round limit stops announcing and reports finished once settled."""
    market = Market(Coordinator(params(), genesis(), COORD, START, rounds=rounds))
    market.tick(START + (rounds + 3) * (BID_MS + PROVE_MS))
    assert market.coordinator.finished
    assert market.coordinator.next_wake() is None
