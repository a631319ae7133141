"""The failure rules, one test each: rescue, graded lateness, the track record, suspension."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_coordinator_helpers import (
    BID_MS,
    P_MAX,
    PROVERS,
    START,
    USERS,
    Market,
    params,
    published,
    reject_codes,
)

from coordinator.accounts import SLASHED
from coordinator.invariants import check_invariants
from coordinator.settlement import plan_settlement
from coordinator.state import Batch, TaskState, TrackRecord, wire_task_id
from coordinator.track_record import median_ms, note_failed, note_proved, suspended
from protocol.events import Resumed
from protocol.messages import (
    Assignment,
    ClearingResult,
    FailureRules,
    ProverRecord,
    SettlementNotice,
    UserReceipt,
)

U0, U1, U2, U3 = USERS
P0, P1, P2 = PROVERS
BID_DEADLINE = START + BID_MS
PROVE = 50  # shorter than the bid window: a failure is known while round 1 takes bids
PROVE_DEADLINE = BID_DEADLINE + PROVE
GRACE = 40


def round_0(**rules: object) -> tuple[Market, Assignment]:
    """Round 0 cleared under `rules`: P0 (cost 1) wins t0, t1 at price 7 and is paid 10.

    P2 declares capacity too, for the later rounds (under Proo-phi one bidder never trades).
    """
    market = Market(epoch_rounds=10, prove_window_ms=PROVE, failures=FailureRules(**rules))
    market.tick(START)
    market.declare(P0, 2)
    market.declare(P1, 2)
    market.declare(P2, 2)
    market.cost_bid(P0, 1)
    market.cost_bid(P1, 5)
    for i, fee in enumerate([9, 8, 7, 3]):
        market.task_bid(USERS[i], f"t{i}", fee)
    [assignment] = published(market.tick(BID_DEADLINE), Assignment)
    return market, assignment.message  # type: ignore[return-value]


def bid_more(market: Market, now: int) -> None:
    """Two more task bids in round 1, fees 7 and 3: with fees 9 and 8 a trade clears."""
    market.task_bid(U2, "n2", 7, round=1, now=now)
    market.task_bid(U3, "n3", 3, round=1, now=now)


def notices(effects: list[object], outcome: str) -> list[tuple[str | None, int]]:
    """(task id, amount) of every settlement notice with `outcome`, in order."""
    told = [e.message for e in published(effects, SettlementNotice)]  # type: ignore[arg-type]
    return [(n.task_id, n.amount) for n in told if n.outcome == outcome]  # type: ignore[attr-defined]


# -- rescue --------------------------------------------------------------------------


def test_rescue_compensates_and_moves_failed_tasks_into_the_next_round() -> None:
    """A failed batch's tasks keep their fees escrowed, their users get P_max, round 1 has them."""
    market, _ = round_0(rescue=True)
    effects = market.tick(PROVE_DEADLINE)
    c = market.coordinator
    assert [("t0", P_MAX), ("t1", P_MAX)] == notices(effects, "rescued")
    assert [] == notices(effects, "refunded")
    assert [1, 1] == [r.message.carried_to for r in published(effects, UserReceipt)]  # type: ignore[attr-defined]
    assert (100 - 9 + P_MAX, 9, "open", 1, P0) == (
        c.balance(U0),
        c.escrow(U0),
        c.task(U0, "t0").status,  # type: ignore[union-attr]
        c.task(U0, "t0").round,  # type: ignore[union-attr]
        c.task(U0, "t0").failed_by,  # type: ignore[union-attr]
    )
    assert [] == check_invariants(c)


def test_rescued_tasks_go_to_another_prover_and_are_charged_once() -> None:
    """In the round that rescues its tasks the failed prover is left out; P1 proves; one charge."""
    market, _ = round_0(rescue=True)
    market.tick(PROVE_DEADLINE)
    market.cost_bid(P0, 1, round=1, now=PROVE_DEADLINE)
    market.cost_bid(P1, 2, round=1, now=PROVE_DEADLINE)
    market.cost_bid(P2, 5, round=1, now=PROVE_DEADLINE)
    bid_more(market, PROVE_DEADLINE)
    effects = market.tick(START + 2 * BID_MS)
    assert ["rescue_excluded"] == reject_codes(effects)
    [assignment] = published(effects, Assignment)
    assert P1 == assignment.to
    wire = {t.task_id for t in assignment.message.tasks}  # type: ignore[attr-defined]
    assert {wire_task_id(U0, "t0"), wire_task_id(U1, "t1")} <= wire
    settled = market.prove(P1, assignment.message, START + 2 * BID_MS + 10)  # type: ignore[arg-type]
    c = market.coordinator
    charged = dict(notices(settled, "charged"))
    assert (1, 1) == (c.task(U0, "t0").settlements, c.task(U1, "t1").settlements)  # type: ignore[union-attr]
    assert 100 - charged["t0"] + P_MAX == c.balance(U0)
    assert [] == check_invariants(c)


def test_a_rescued_task_that_fails_again_is_refunded() -> None:
    """Rescue happens once: a rescued task whose new batch fails too is refunded fee + P_max."""
    market, _ = round_0(rescue=True)
    market.tick(PROVE_DEADLINE)
    market.cost_bid(P1, 2, round=1, now=PROVE_DEADLINE)
    market.cost_bid(P2, 5, round=1, now=PROVE_DEADLINE)
    bid_more(market, PROVE_DEADLINE)
    market.tick(START + 2 * BID_MS)
    effects = market.tick(START + 2 * BID_MS + PROVE)
    c = market.coordinator
    assert [("t0", P_MAX), ("t1", P_MAX)] == sorted(notices(effects, "refunded"))
    assert (100 + 2 * P_MAX, 0) == (c.balance(U0), c.escrow(U0))
    assert [] == check_invariants(c)


def test_a_rescued_task_left_unallocated_is_released() -> None:
    """No prover takes the rescued tasks: their fees come back at the clearing, no carry."""
    market, _ = round_0(rescue=True)
    market.tick(PROVE_DEADLINE)
    effects = market.tick(START + 2 * BID_MS)
    assert [("t0", 9), ("t1", 8)] == notices(effects, "released")
    assert 100 + P_MAX == market.coordinator.balance(U0)
    assert [] == check_invariants(market.coordinator)


def test_without_a_round_open_a_failed_task_is_refunded() -> None:
    """The market's last round: nothing to rescue into, so the refund is today's."""
    market = Market(epoch_rounds=10, prove_window_ms=PROVE, failures=FailureRules(rescue=True))
    market.coordinator.rounds_limit = 1
    market.tick(START)
    market.declare(P0, 2)
    market.declare(P1, 2)
    market.cost_bid(P0, 1)
    market.cost_bid(P1, 5)
    for i, fee in enumerate([9, 8, 7, 3]):
        market.task_bid(USERS[i], f"t{i}", fee)
    market.tick(BID_DEADLINE)
    effects = market.tick(PROVE_DEADLINE)
    assert [("t0", P_MAX)] == notices(effects, "refunded")[:1]
    assert [] == notices(effects, "compensated")


def test_without_rescue_a_failed_task_is_refunded() -> None:
    """The default market: a failed batch's tasks are refunded fee + P_max, as before."""
    market, _ = round_0()
    effects = market.tick(PROVE_DEADLINE)
    assert [("t0", P_MAX), ("t1", P_MAX)] == sorted(notices(effects, "refunded"))


# -- graded lateness ---------------------------------------------------------------------


def test_a_proof_within_the_grace_is_paid_less_a_graded_penalty() -> None:
    """10 ms late of a 40 ms grace: a quarter of the lock forfeited, a quarter P_max per user."""
    market, assignment = round_0(late_grace_ms=GRACE)
    assert [] == published(market.tick(PROVE_DEADLINE), SettlementNotice)
    c = market.coordinator
    locked = c.locked(P0)
    effects = market.prove(P0, assignment, PROVE_DEADLINE + 10)
    share = P_MAX * 10 // GRACE
    assert [(None, locked * 10 // GRACE)] == notices(effects, "penalty")
    assert [(None, 10)] == notices(effects, "paid")
    assert [("t0", share), ("t1", share)] == notices(effects, "compensated")
    assert [("t0", 7), ("t1", 7)] == notices(effects, "charged")
    assert (100 - 7 + share, 10, locked - locked * 10 // GRACE) == (
        c.balance(U0),
        c.balance(P0),
        c.locked(P0),
    )
    assert locked * 10 // GRACE - 2 * share == c.accounts.balance(SLASHED)
    assert [] == check_invariants(c)


def test_only_the_tasks_proven_late_get_a_share() -> None:
    """A batch proven half on time, half late: only the late task's user is compensated."""
    market, assignment = round_0(late_grace_ms=GRACE)
    first, second = assignment.tasks
    market.send(P0, _proofs(assignment, [first]), PROVE_DEADLINE - 1)
    effects = market.send(P0, _proofs(assignment, [second]), PROVE_DEADLINE + 20)
    assert [(None, 10)] == notices(effects, "paid")
    assert [("t1", P_MAX * 20 // GRACE)] == notices(effects, "compensated")


def test_past_the_grace_a_proof_is_refused_and_the_batch_slashed() -> None:
    """A proof after deadline + grace is late_proof; at that instant the batch is slashed."""
    market, assignment = round_0(late_grace_ms=GRACE)
    effects = market.prove(P0, assignment, PROVE_DEADLINE + GRACE + 1)
    assert ["late_proof"] == reject_codes(effects)  # judged after the slash that fell due
    assert 1 == len(notices(effects, "slashed"))
    assert [("t0", P_MAX), ("t1", P_MAX)] == sorted(notices(effects, "refunded"))


def test_without_a_grace_a_late_proof_is_refused() -> None:
    """The default market: one millisecond late is late_proof, as before."""
    market, assignment = round_0()
    assert ["late_proof"] == reject_codes(market.prove(P0, assignment, PROVE_DEADLINE + 1))


def _proofs(assignment: Assignment, tasks: list[object]) -> object:
    from test_coordinator_helpers import proofs_for

    full = proofs_for(assignment)
    keep = {t.task_id for t in tasks}  # type: ignore[attr-defined]
    return type(full)(
        market=full.market, round=full.round, proofs=[p for p in full.proofs if p.task_id in keep]
    )


@given(
    lateness=st.integers(0, 1_000),
    grace=st.integers(1, 1_000),
    extra=st.integers(0, 50),
    fees=st.lists(st.integers(0, P_MAX), min_size=1, max_size=5),
    late=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_a_late_batch_plan_balances_and_never_pays_more_than_its_penalty(
    lateness: int, grace: int, extra: int, fees: list[int], late: list[bool]
) -> None:
    """Any lateness within any grace: postings sum to zero and the shares fit in the penalty."""
    lateness = min(lateness, grace)
    keys = [(U0, f"t{i}") for i in range(len(fees))]
    tasks = {
        k: TaskState(k[1], U0, "w", fee, b"", False, 0, "assigned", P0, fee)
        for k, fee in zip(keys, fees, strict=True)
    }
    batch = Batch(P0, 0, tuple(keys), 0, {k: b"p" for k in keys}, finished_ms=1_000 + lateness)
    batch.late = [k for k, is_late in zip(keys, late, strict=False) if is_late]
    locked = P_MAX * len(keys) + extra
    plan = plan_settlement(
        batch, tasks, p_max=P_MAX, locked=locked, prove_deadline=1_000, grace_ms=grace
    )
    assert 0 == sum(amount for _, amount in plan.postings)
    assert plan.penalty >= sum(t.compensation for t in plan.tasks)
    assert (locked * lateness // grace) == plan.penalty


# -- the track record and suspension ------------------------------------------------------


def test_the_next_clearing_publishes_each_bidders_track_record() -> None:
    """P0 proved its round-0 batch 30 ms after clearing; round 1's result carries its record."""
    market, assignment = round_0()
    market.prove(P0, assignment, BID_DEADLINE + 30)
    market.cost_bid(P0, 1, round=1, now=BID_DEADLINE + 30)
    [result] = published(market.tick(START + 2 * BID_MS), ClearingResult)
    assert [ProverRecord(P0, won=1, proved=1, late=0, failed=0, median_proving_ms=30)] == (
        result.message.track_record  # type: ignore[attr-defined]
    )


def test_a_round_without_bidders_publishes_no_track_record() -> None:
    """No cost bid in the round: the field is left out of the clearing result."""
    market = Market()
    market.tick(START)
    [result] = published(market.tick(BID_DEADLINE), ClearingResult)
    assert None is result.message.track_record  # type: ignore[attr-defined]


def test_a_failed_batch_counts_in_the_record_and_a_late_one_as_late() -> None:
    """Failed, then proved late: failed 1, proved 1, late 1, won 2."""
    market, _ = round_0(late_grace_ms=GRACE)
    market.tick(PROVE_DEADLINE + GRACE)
    market.cost_bid(P0, 1, round=1, now=PROVE_DEADLINE + GRACE)
    market.cost_bid(P2, 5, round=1, now=PROVE_DEADLINE + GRACE)
    market.task_bid(U0, "n", 9, round=1, now=PROVE_DEADLINE + GRACE)
    market.task_bid(U1, "m", 8, round=1, now=PROVE_DEADLINE + GRACE)
    bid_more(market, PROVE_DEADLINE + GRACE)
    [assignment] = published(market.tick(START + 2 * BID_MS), Assignment)
    deadline = assignment.message.prove_deadline  # type: ignore[attr-defined]
    market.prove(P0, assignment.message, deadline + 10)  # type: ignore[arg-type]
    record = market.coordinator._provers[P0].record
    assert (2, 1, 1, 1) == (record.won, record.proved, record.late, record.failed)


def test_a_prover_that_failed_k_of_its_last_w_batches_is_suspended_for_w_rounds() -> None:
    """K=1, W=2: failed in round 0, refused in rounds 1 and 2, bids again in round 3."""
    market, _ = round_0(suspend_after_failures=1, suspend_window=2)
    market.tick(PROVE_DEADLINE)
    assert ["prover_suspended"] == reject_codes(market.cost_bid(P0, 1, round=1, now=PROVE_DEADLINE))
    market.tick(START + 2 * BID_MS)
    assert ["prover_suspended"] == reject_codes(
        market.cost_bid(P0, 1, round=2, now=START + 2 * BID_MS)
    )
    market.tick(START + 3 * BID_MS)
    assert [] == reject_codes(market.cost_bid(P0, 1, round=3, now=START + 3 * BID_MS))


def test_suspension_rule_counts_only_the_window() -> None:
    """Two failures then two proven batches with W=2: no longer K=2 failures in the window."""
    rules = params(failures=FailureRules(suspend_after_failures=2, suspend_window=2))
    record = TrackRecord()
    note_failed(record, 0, window=2)
    note_failed(record, 1, window=2)
    assert suspended(record, 2, rules)
    note_proved(record, 2, 5, late=False, window=2)
    assert not suspended(record, 3, rules)
    assert [(1, True), (2, False)] == record.recent


def test_median_is_the_lower_middle() -> None:
    """The median of proving times is an exact integer: the lower middle of an even count."""
    assert (None, 5, 5, 7) == (
        median_ms([]),
        median_ms([5]),
        median_ms([9, 5]),
        median_ms([9, 7, 5]),
    )


def test_an_outage_inside_the_grace_moves_it_too() -> None:
    """Down from 5 ms into the grace for 1 s: a proof 10 ms late on the moved clock is graded."""
    market, assignment = round_0(late_grace_ms=GRACE)
    market.feed(Resumed(now=PROVE_DEADLINE + 5 + 1_000, since=PROVE_DEADLINE + 5))
    effects = market.prove(P0, assignment, PROVE_DEADLINE + 1_000 + 10)
    assert [(None, 10)] == notices(effects, "paid")
    assert [("t0", P_MAX * 10 // GRACE), ("t1", P_MAX * 10 // GRACE)] == notices(
        effects, "compensated"
    )
    assert [] == check_invariants(market.coordinator)
