"""The core's plan functions on their own: bids, proofs, locks, clearing, schedule, notices."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_coordinator_helpers import MARKET, P_MAX, PROVERS, USERS, genesis, params

from coordinator.accounts import balance_of, deposit_of
from coordinator.bids import plan_cost_bid, plan_task_bid, round_for_task_bid, round_open_for_bid
from coordinator.capacity import lock_excess, lock_top_up, stale_capacities
from coordinator.clearing import plan_batches, plan_subsidy, plan_task_fates, round_seed
from coordinator.funds import funds_account, opening_accounts
from coordinator.notices import batch_notices, task_notices, user_receipt
from coordinator.proofs import batch_for_proofs, check_proofs
from coordinator.schedule import (
    forget_below,
    new_round,
    next_deadline,
    next_due,
    outage_moves,
    outage_rescues,
)
from coordinator.settlement import SettlementPlan, TaskSettlement
from coordinator.state import (
    Batch,
    CostBid,
    OpeningBalances,
    Phase,
    ProverState,
    Refusal,
    Round,
    TaskState,
    TrackRecord,
    wire_task_id,
)
from coordinator.status import QueryRation, admit_query
from coordinator.track_record import note_settled
from protocol.mechanism import Outcome
from protocol.mechanism.clearing import IndexedOutcome, indexed_from_outcome
from protocol.messages import (
    FailureRules,
    ProofSubmission,
    ProverCostBid,
    SettlementNotice,
    TaskBidMessage,
    TaskProof,
    UserReceipt,
)
from protocol.rejects import RejectCode
from protocol.tie_proof import plain_seed, seed_from_proof, tie_message
from protocol.workload import prove

U0, U1 = USERS[:2]
P0, P1 = PROVERS[:2]


def code_of(call: Callable[[], object]) -> RejectCode:
    """The reject code `call` (a plan, its arguments bound) refuses with."""
    with pytest.raises(Refusal) as refused:
        call()
    return refused.value.code


def rounds_from(*phases: Phase) -> dict[int, Round]:
    """Rounds 0.. in the given phases, round n's bid deadline at 100*(n+1)."""
    return {
        n: Round(n, 0, 100 * (n + 1), 100 * (n + 1) + 50, phase) for n, phase in enumerate(phases)
    }


def task_bid(round: int = 0, fee: int = 5, *, late_to_next: bool = False) -> TaskBidMessage:
    return TaskBidMessage(MARKET, round, "t", fee, b"input", late_to_next=late_to_next)


# -- bids ---------------------------------------------------------------------------------


def test_a_bid_for_a_closed_round_names_the_open_one() -> None:
    """Round 0 cleared and round 1 open: a bid for 0 is late and its reason names round 1."""
    rounds = rounds_from(Phase.PROVE, Phase.BID)
    with pytest.raises(Refusal) as refused:
        round_open_for_bid(rounds, 1, 0, now=150)
    assert RejectCode.LATE_BID == refused.value.code
    assert refused.value.reason.endswith("; round 1 is open until 200")
    assert RejectCode.WRONG_ROUND == code_of(lambda: round_open_for_bid(rounds, 1, 2, 150))
    assert 1 == round_open_for_bid(rounds, 1, 1, now=150).number


def test_a_late_task_bid_stands_in_the_open_round_only_if_it_asks_to() -> None:
    """late_to_next moves a late bid to the round open now; without it the bid is late."""
    rounds = rounds_from(Phase.PROVE, Phase.BID)
    assert 1 == round_for_task_bid(rounds, 1, task_bid(late_to_next=True), 150).number
    assert RejectCode.LATE_BID == code_of(lambda: round_for_task_bid(rounds, 1, task_bid(), 150))


def test_a_task_bid_plan_is_the_task_it_adds_or_the_first_rule_it_breaks() -> None:
    """The new task carries its wire id and round; fee, duplicate and balance are refused."""
    r = rounds_from(Phase.BID)[0]
    task = plan_task_bid(task_bid(), U0, r, tasks={}, wire={}, available=5, p_max=P_MAX)
    assert (U0, "t", wire_task_id(U0, "t"), 5, 0) == (
        task.user,
        task.task_id,
        task.wire_id,
        task.fee,
        task.round,
    )
    taken = {(U0, "t"): task}
    assert RejectCode.DUPLICATE_TASK == code_of(
        lambda: plan_task_bid(task_bid(), U0, r, tasks=taken, wire={}, available=9, p_max=P_MAX)
    )
    assert RejectCode.FEE_ABOVE_P_MAX == code_of(
        lambda: plan_task_bid(
            task_bid(fee=P_MAX + 1), U0, r, tasks=taken, wire={}, available=99, p_max=P_MAX
        )
    )
    assert RejectCode.INSUFFICIENT_BALANCE == code_of(
        lambda: plan_task_bid(task_bid(), U1, r, tasks=taken, wire={}, available=4, p_max=P_MAX)
    )


def test_a_cost_bid_needs_p_max_per_unit_of_capacity_locked() -> None:
    """A prover with capacity 3 for the epoch must have 3*P_max locked; the rules refuse."""
    r = rounds_from(Phase.BID)[0]
    rules = params(failures=FailureRules(suspend_after_failures=1, suspend_window=4))
    prover = ProverState(capacities={0: 3})
    bid = ProverCostBid(MARKET, 0, 2)
    assert 3 * P_MAX == plan_cost_bid(bid, P0, r, prover, rules)
    assert RejectCode.CAPACITY_NOT_DECLARED == code_of(
        lambda: plan_cost_bid(bid, P0, r, None, rules)
    )
    r.cost_bids[P0] = CostBid(2, b"ref")
    assert RejectCode.DUPLICATE_BID == code_of(lambda: plan_cost_bid(bid, P0, r, prover, rules))
    failed = ProverState(capacities={0: 3}, record=TrackRecord(failed=1, recent=[(0, True)]))
    assert RejectCode.PROVER_SUSPENDED == code_of(lambda: plan_cost_bid(bid, P1, r, failed, rules))


# -- proofs -------------------------------------------------------------------------------


def proving_round() -> tuple[dict[int, Round], dict[tuple[str, str], TaskState]]:
    """Round 0 in its prove phase with P0's batch of two tasks, a and b."""
    tasks = {
        (U0, t): TaskState(t, U0, wire_task_id(U0, t), 5, t.encode(), False, 0, "assigned")
        for t in ("a", "b")
    }
    rounds = rounds_from(Phase.PROVE)
    rounds[0].batches[P0] = Batch(P0, 0, tuple(tasks), payment=4)
    return rounds, tasks


def test_proofs_go_to_the_senders_batch_or_are_refused() -> None:
    """A round below the floor is late; a round with no batch of the sender's is not assigned."""
    rounds, _ = proving_round()
    submission = ProofSubmission(MARKET, 0, [])
    assert P0 == batch_for_proofs(submission, P0, rounds, floor=0)[1].prover
    assert RejectCode.NOT_ASSIGNED == code_of(lambda: batch_for_proofs(submission, P1, rounds, 0))
    old = ProofSubmission(MARKET, 0, [])
    assert RejectCode.LATE_PROOF == code_of(lambda: batch_for_proofs(old, P0, {}, floor=1))


def test_only_each_tasks_first_proof_is_checked() -> None:
    """A valid proof, an invalid one, a second proof for the same task: two verdicts, in order."""
    rounds, tasks = proving_round()
    r, batch = rounds[0], rounds[0].batches[P0]
    wa, wb = (tasks[(U0, t)].wire_id for t in ("a", "b"))
    good = prove(b"a", difficulty=1)
    msg = ProofSubmission(
        MARKET, 0, [TaskProof(wa, good), TaskProof(wb, b"\0" * 3), TaskProof(wa, b"\1" * 32)]
    )
    checked = check_proofs(msg, r, batch, tasks, now=160, settle_at=170, difficulty=1)
    assert [((U0, "a"), good), ((U0, "b"), None)] == list(checked.items())
    batch.proofs.update(checked)
    assert {} == check_proofs(msg, r, batch, tasks, now=160, settle_at=170, difficulty=1)


def test_proofs_after_the_grace_or_for_another_task_are_refused() -> None:
    """Past settle_at the proofs are late; a task id outside the batch is not assigned."""
    rounds, tasks = proving_round()
    r, batch = rounds[0], rounds[0].batches[P0]
    stray = ProofSubmission(MARKET, 0, [TaskProof("f" * 32, b"p")])
    assert RejectCode.LATE_PROOF == code_of(
        lambda: check_proofs(stray, r, batch, tasks, now=171, settle_at=170, difficulty=1)
    )
    assert RejectCode.NOT_ASSIGNED == code_of(
        lambda: check_proofs(stray, r, batch, tasks, now=160, settle_at=170, difficulty=1)
    )


# -- the capacity lock ----------------------------------------------------------------------


def test_the_lock_tops_up_from_free_deposit_or_refuses() -> None:
    """What is locked already counts; too little free deposit is insufficient_deposit."""
    assert 0 == lock_top_up(need=30, locked=30, free=0)
    assert 20 == lock_top_up(need=30, locked=10, free=20)
    assert RejectCode.INSUFFICIENT_DEPOSIT == code_of(lambda: lock_top_up(30, 10, 19))


def test_an_idle_prover_unlocks_what_no_current_or_later_epoch_needs() -> None:
    """Capacity 1 from epoch 1 on, 3 before: of 30 locked, 20 come back; none while busy."""
    rules = params()  # two rounds an epoch
    prover = ProverState(capacities={0: 3, 1: 1})
    assert 30 - P_MAX == lock_excess(prover, 30, bidding=2, params=rules)
    assert 0 == lock_excess(prover, 30, bidding=1, params=rules)
    prover.open_rounds.add(1)
    assert 0 == lock_excess(prover, 30, bidding=2, params=rules)


def test_forgotten_epochs_keep_the_latest_capacity_for_the_factor_rule() -> None:
    """Epochs 0, 1 and 3 declared, epochs before 3 forgotten: only epoch 0 goes."""
    assert [0] == stale_capacities(ProverState(capacities={0: 1, 1: 2, 3: 4}), kept=3)


# -- clearing ---------------------------------------------------------------------------


def deficit() -> IndexedOutcome:
    """One task charged 2 and its prover paid 5: a deficit of 3."""
    outcome = Outcome("vcg", assignments={P0: ("w",)}, charges={"w": 2}, payments={P0: 5})
    return indexed_from_outcome(outcome, ["w"])


def test_a_deficit_draws_its_subsidy_or_clears_nothing() -> None:
    """A rich subsidy account pays the shortfall; a poor one leaves an empty outcome."""
    rich = deficit()
    assert (rich, 3) == plan_subsidy(rich, available=3)
    poor, draw = plan_subsidy(deficit(), available=2)
    assert ("vcg", (), 0) == (poor.mechanism, poor.winners, draw)
    balanced = indexed_from_outcome(
        Outcome("prooph", assignments={P0: ("w",)}, charges={"w": 5}, payments={P0: 5}), ["w"]
    )
    assert (balanced, 0) == plan_subsidy(balanced, available=0)


def test_each_winner_gets_a_batch_of_its_tasks_in_prover_order() -> None:
    """Batches come sorted by prover key, their tasks in the outcome's order, from the book."""
    outcome = Outcome(
        "prooph", assignments={P1: ("w1",), P0: ("w0", "w2")}, payments={P1: 3, P0: 4}
    )
    r = rounds_from(Phase.PROVE)[0]
    tasks = {
        (U0, "a"): _task(U0, "a", "w2"),
        (U1, "b"): _task(U1, "b", "w1"),
        (U0, "c"): _task(U0, "c", "w0"),
    }
    r.tasks = list(tasks)
    indexed = indexed_from_outcome(outcome, ["w2", "w1", "w0"])
    fates = plan_task_fates(r, tasks, indexed, can_carry=False)
    batches = plan_batches(r, fates, now=120)
    expected = sorted([(P0, ((U0, "c"), (U0, "a")), 4), (P1, ((U1, "b"),), 3)])
    assert expected == [(b.prover, b.tasks, b.payment) for b in batches]
    assert {120} == {b.assigned_ms for b in batches}


def test_unallocated_tasks_carry_once_or_are_released() -> None:
    """Left out: a carry-over bid moves on once, a carried or rescued one is released."""
    r = rounds_from(Phase.PROVE)[0]
    tasks = {(U0, n): _task(U0, n, f"w{n}") for n in ("keep", "once", "rescued", "plain")}
    tasks[(U0, "keep")].carry_over = True
    tasks[(U0, "once")].carry_over, tasks[(U0, "once")].carried_from = True, 0
    tasks[(U0, "rescued")].carry_over, tasks[(U0, "rescued")].rescued_from = True, 0
    r.tasks = list(tasks)
    nothing = indexed_from_outcome(Outcome("prooph"), [t.wire_id for t in tasks.values()])
    fates = plan_task_fates(r, tasks, nothing, can_carry=True)
    assert ([(U0, "keep")], [(U0, "once"), (U0, "rescued"), (U0, "plain")]) == (
        fates.carried,
        fates.released,
    )
    assert [] == plan_task_fates(r, tasks, nothing, can_carry=False).carried


def _task(user: str, task_id: str, wire_id: str) -> TaskState:
    return TaskState(task_id, user, wire_id, 1, b"", False, 0)


def test_a_signed_round_seed_comes_from_the_signature_it_publishes() -> None:
    """Unsigned: the public plain seed; signed: the signature's seed, and the signature."""
    assert (plain_seed(MARKET, 3), None) == round_seed(MARKET, 3, None)
    signature = bytes(64)
    signed: list[bytes] = []

    def signer(message: bytes) -> bytes:
        signed.append(message)
        return signature

    assert (seed_from_proof(signature), signature) == round_seed(MARKET, 3, signer)
    assert [tie_message(MARKET, 3)] == signed


# -- money, status, track record ------------------------------------------------------------


def test_the_opening_ledger_funds_only_what_the_genesis_gives() -> None:
    """Zero amounts open no account; a withdrawal names the balance or the deposit."""
    accounts = opening_accounts(OpeningBalances(balances={U0: 7, U1: 0}, deposits={P0: 9}))
    assert (7, 9, 16) == (
        accounts.balance(balance_of(U0)),
        accounts.balance(deposit_of(P0)),
        accounts.funded(),
    )
    assert balance_of(U1) not in accounts.snapshot()
    assert (balance_of(U0), deposit_of(U0)) == (
        funds_account(U0, "balance"),
        funds_account(U0, "deposit"),
    )
    assert 7 * 4 + 100 * 3 == opening_accounts(genesis(balance=7)).funded()


def test_a_status_query_names_a_remembered_round_and_fits_the_ration() -> None:
    """A future round is wrong_round; the second query over a ration of one is too many."""
    ration = QueryRation(per_party=1)
    assert RejectCode.WRONG_ROUND == code_of(
        lambda: admit_query(ration, U0, 3, bidding=2, seen_rounds=4)
    )
    admit_query(ration, U0, 2, bidding=2, seen_rounds=4)
    assert RejectCode.TOO_MANY_QUERIES == code_of(
        lambda: admit_query(ration, U0, 2, bidding=2, seen_rounds=4)
    )


def test_a_settled_batch_is_noted_proven_with_its_time_or_failed() -> None:
    """Proven 30 ms after assignment and late; then a failure of round 1."""
    record = TrackRecord()
    batch = Batch(P0, 0, (), 0, assigned_ms=100, finished_ms=130, late=[(U0, "a")])
    note_settled(record, batch, proven=True, window=4)
    note_settled(record, Batch(P0, 1, (), 0), proven=False, window=4)
    assert (1, 1, 1, [30], [(0, False), (1, True)]) == (
        record.proved,
        record.late,
        record.failed,
        record.times,
        record.recent,
    )


# -- the schedule ---------------------------------------------------------------------------


def test_settling_comes_before_clearing_at_the_same_instant() -> None:
    """Round 0 settles at 200 and round 1 closes for bids at 200: settle first."""
    rounds = rounds_from(Phase.PROVE, Phase.BID)
    rounds[0].prove_deadline = 190
    assert ("settle", 0) == next_due(rounds, {0}, 1, now=200, grace_ms=10)
    assert None is next_due(rounds, {0}, 1, now=199, grace_ms=10)
    assert 200 == next_deadline(rounds, {0}, 1, grace_ms=10)
    assert ("clear", 1) == next_due(rounds, set(), 1, now=200, grace_ms=10)


def test_a_rescue_comes_between_settling_and_clearing_at_the_same_instant() -> None:
    """At 200 round 0 settles, a will's grace ends and round 1 clears: in that order."""
    rounds = rounds_from(Phase.PROVE, Phase.BID)
    rounds[0].prove_deadline = 190
    rescues = {"b" * 64: 200, "a" * 64: 200}
    assert ("settle", 0) == next_due(rounds, {0}, 1, now=200, grace_ms=10, rescues=rescues)
    assert ("rescue", "a" * 64) == next_due(rounds, set(), 1, now=200, grace_ms=10, rescues=rescues)
    assert 150 == next_deadline(rounds, set(), 1, grace_ms=10, rescues={"a" * 64: 150})


def test_an_outage_moves_only_the_rescues_after_it_began() -> None:
    """Since 160, 40 ms down: a grace ending at 170 moves to 210; one at 160 stays."""
    moved = outage_rescues({"a": 170, "b": 160}, since=160, outage=40)
    assert {"a": 210, "b": 160} == moved


def test_an_outage_moves_only_deadlines_after_it_began() -> None:
    """Since 160: round 1's bid deadline (200) moves; round 0's settlement (150+10) does not."""
    rounds = rounds_from(Phase.PROVE, Phase.BID)
    bids, proofs = outage_moves(rounds.values(), since=160, grace_ms=10)
    assert ([1], [1]) == ([r.number for r in bids], [r.number for r in proofs])
    _, proofs = outage_moves(rounds.values(), since=159, grace_ms=10)
    assert [0, 1] == [r.number for r in proofs]


def test_the_floor_stops_at_the_first_round_not_settled() -> None:
    """Rounds 0 and 2 settled, 1 proving: the floor rises to 1 and no further."""
    rounds = rounds_from(Phase.SETTLED, Phase.PROVE, Phase.SETTLED)
    assert 1 == forget_below(rounds, floor=0, bidding=10, seen_rounds=2)
    assert 0 == forget_below(rounds, floor=0, bidding=1, seen_rounds=2)


def test_a_new_round_opens_with_its_shifted_deadlines_and_epoch() -> None:
    """Round 3 of a market started at 100, shifted 7 ms: deadlines 507 and 607, epoch 1."""
    rules = params()  # two rounds an epoch, windows of 100 ms
    assert Round(3, 1, 507, 607) == new_round(rules, start_ms=100, shift=7, number=3)


def test_a_rescued_task_is_open_again_and_settles_once() -> None:
    """Rescue reopens the task in the next round without settling it; closing settles it."""
    task = TaskState("a", U0, "w", 5, b"", False, 2)
    task.assign(P0, 4)
    task.rescue(3, failed_in=2, failed_by=P0)
    assert ("open", None, None, 3, 2, P0, 0) == (
        task.status,
        task.prover,
        task.price,
        task.round,
        task.rescued_from,
        task.failed_by,
        task.settlements,
    )
    task.close("refunded")
    assert ("refunded", 1) == (task.status, task.settlements)


# -- notices --------------------------------------------------------------------------------


def test_a_rescued_task_hears_of_its_p_max_and_its_new_round() -> None:
    """Rescued into round 3: a `rescued` notice of P_max, then a receipt carried to 3."""
    settled = TaskSettlement((U0, "a"), "rescued", P_MAX)
    assert [
        SettlementNotice(MARKET, 2, "rescued", P_MAX, task_id="a"),
        UserReceipt(MARKET, 2, "a", allocated=False, carried_to=3),
    ] == task_notices(MARKET, 2, "a", settled, carried_to=3)


def test_a_late_charged_task_hears_of_its_share_before_its_charge() -> None:
    """Charged 4 with a share of 2: `compensated` 2, then `charged` 4 with the proof."""
    settled = TaskSettlement((U0, "a"), "charged", 4, b"proof", compensation=2)
    assert [
        SettlementNotice(MARKET, 2, "compensated", 2, task_id="a"),
        SettlementNotice(MARKET, 2, "charged", 4, task_id="a", proof=b"proof"),
    ] == task_notices(MARKET, 2, "a", settled, carried_to=None)


def test_a_prover_hears_of_its_penalty_then_its_pay() -> None:
    """A late proven batch: `penalty` then `paid`; a failed one: `slashed` alone."""
    late = SettlementPlan([], [], proven=True, prover_amount=8, penalty=3)
    assert [
        SettlementNotice(MARKET, 1, "penalty", 3),
        SettlementNotice(MARKET, 1, "paid", 8),
    ] == batch_notices(MARKET, 1, late)
    failed = SettlementPlan([], [], proven=False, prover_amount=30)
    assert [SettlementNotice(MARKET, 1, "slashed", 30)] == batch_notices(MARKET, 1, failed)


def test_a_user_receipt_is_allocated_exactly_when_it_names_a_prover() -> None:
    """With a prover and price it is allocated; carried or released it is not."""
    assert user_receipt(MARKET, 0, "a", prover=P0, price=4).allocated
    assert not user_receipt(MARKET, 0, "a", carried_to=1).allocated
