"""The prover's pure core: truthful bids, proving on assignment, fault modes, stats."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from protocol import workload
from protocol.events import MessageReceived, Publish, Tick, WakeAt
from protocol.messages import (
    AssignedTask,
    Assignment,
    CapacityDeclaration,
    MarketParams,
    Message,
    ProofSubmission,
    ProverCostBid,
    Reject,
    RoundAnnouncement,
    SettlementNotice,
    TaskProof,
)
from prover_node.core import ProverCore, ProvingDone, StartProving, corrupt_proof
from prover_node.proving import prove_assignment, prove_tasks, split_batch

PROVER = "a" * 64
COORD = "c" * 64
OTHER = "e" * 64
MARKET = "m1"
REF = b"r" * 32
PARAMS = MarketParams(
    market=MARKET,
    p_max=100,
    epoch_rounds=4,
    capacity_factor=2,
    mechanism="prooph",
    difficulty=8,
    setup=2,
    bid_window_ms=1000,
    prove_window_ms=2000,
)


def received(msg: Message, sender: str = COORD, now: int = 0) -> MessageReceived:
    return MessageReceived(sender=sender, message=msg, ref=REF, now=now)


def announce(round: int, epoch: int = 0, market: str = MARKET) -> RoundAnnouncement:
    return RoundAnnouncement(
        market=market,
        round=round,
        epoch=epoch,
        bid_deadline=round * 1000 + 1000,
        prove_deadline=round * 1000 + 3000,
        params=PARAMS,
    )


TASKS = [AssignedTask("t1", b"in-1"), AssignedTask("t2", b"in-2")]


def assign(round: int = 0, deadline: int = 3000, market: str = MARKET) -> Assignment:
    return Assignment(
        market=market,
        round=round,
        prove_deadline=deadline,
        difficulty=8,
        setup=2,
        payment=10,
        tasks=TASKS,
    )


PROOFS = [TaskProof("t1", b"\x01\x02"), TaskProof("t2", b"\x03\x04")]


def make(fault: str = "none") -> ProverCore:
    return ProverCore(PROVER, COORD, MARKET, capacity=3, cost=7, fault=fault)


def published(effects: Sequence[object]) -> list[Message]:
    return [e.message for e in effects if isinstance(e, Publish)]


def test_first_round_of_epoch_declares_capacity_then_bids_cost() -> None:
    """The first announcement of an epoch yields a capacity declaration and a cost bid."""
    core = make()
    effects = core.handle(received(announce(0, epoch=0)))
    assert [
        Publish(CapacityDeclaration(market=MARKET, epoch=0, capacity=3), to=COORD),
        Publish(ProverCostBid(market=MARKET, round=0, cost=7), to=COORD),
    ] == effects


def test_later_rounds_of_the_same_epoch_bid_cost_only() -> None:
    """Within an epoch capacity is declared once; each round gets only a cost bid."""
    core = make()
    core.handle(received(announce(0, epoch=0)))
    effects = core.handle(received(announce(1, epoch=0)))
    assert [ProverCostBid(market=MARKET, round=1, cost=7)] == published(effects)


def test_new_epoch_declares_capacity_again() -> None:
    """A round of a new epoch triggers a fresh capacity declaration for that epoch."""
    core = make()
    core.handle(received(announce(3, epoch=0)))
    effects = core.handle(received(announce(4, epoch=1)))
    assert CapacityDeclaration(market=MARKET, epoch=1, capacity=3) == published(effects)[0]
    assert 2 == core.stats.epochs_declared


def test_mid_epoch_start_declares_for_that_epoch() -> None:
    """A prover that joins mid-epoch declares capacity at the first round it sees."""
    core = make()
    effects = core.handle(received(announce(6, epoch=1)))
    assert CapacityDeclaration(market=MARKET, epoch=1, capacity=3) == published(effects)[0]


def test_duplicate_announcement_bids_once() -> None:
    """A redelivered announcement does not produce a second bid."""
    core = make()
    core.handle(received(announce(0)))
    assert [] == core.handle(received(announce(0)))
    assert 1 == core.stats.rounds_bid


def test_announcement_from_non_coordinator_is_ignored() -> None:
    """Messages signed by anyone but the coordinator change nothing and cause nothing."""
    core = make()
    assert [] == core.handle(received(announce(0), sender=OTHER))
    assert [] == core.handle(received(assign(), sender=OTHER))
    assert 0 == core.stats.rounds_bid
    assert 0 == core.stats.batches_assigned


def test_messages_for_another_market_are_ignored() -> None:
    """Announcements and assignments for a different market are ignored."""
    core = make()
    assert [] == core.handle(received(announce(0, market="other")))
    assert [] == core.handle(received(assign(market="other")))
    assert 0 == core.stats.rounds_bid
    assert 0 == core.stats.batches_assigned


def test_assignment_starts_proving_the_batch() -> None:
    """An assignment becomes one StartProving effect carrying the batch and its terms."""
    core = make()
    effects = core.handle(received(assign(round=5, deadline=9000)))
    expected = StartProving(round=5, tasks=TASKS, difficulty=8, setup=2, deadline=9000)
    assert [expected] == effects
    assert 1 == core.stats.batches_assigned
    assert 2 == core.stats.tasks_assigned
    assert [5] == core.pending_rounds


def test_duplicate_assignment_does_not_prove_twice() -> None:
    """A redelivered assignment for a round already in hand starts no second proving."""
    core = make()
    core.handle(received(assign(round=1)))
    assert [] == core.handle(received(assign(round=1)))
    assert 1 == core.stats.batches_assigned


def test_batch_in_parts_is_proved_once_every_part_is_in() -> None:
    """A batch sent in parts starts proving only when the last part arrives, in any order."""
    core = make()
    tasks = [AssignedTask(f"t{i}", b"in") for i in range(6)]
    parts = [
        msgspec.structs.replace(assign(round=2), tasks=tasks[i * 2 : i * 2 + 2], part=i, parts=3)
        for i in range(3)
    ]
    assert [] == core.handle(received(parts[2]))
    assert [] == core.handle(received(parts[0]))
    assert [] == core.handle(received(parts[0]))  # a redelivered part adds nothing
    effects = core.handle(received(parts[1]))
    order = [*tasks[4:6], *tasks[0:2], *tasks[2:4]]
    assert [StartProving(round=2, tasks=order, difficulty=8, setup=2, deadline=3000)] == effects
    assert (1, 6) == (core.stats.batches_assigned, core.stats.tasks_assigned)
    assert [] == core.handle(received(parts[1]))


def test_proving_done_submits_proofs_to_coordinator() -> None:
    """Finished proofs go to the coordinator as one submission for the round."""
    core = make()
    core.handle(received(assign(round=2)))
    effects = core.handle(ProvingDone(round=2, proofs=PROOFS, now=100))
    assert [Publish(ProofSubmission(market=MARKET, round=2, proofs=PROOFS), to=COORD)] == effects
    assert 2 == core.stats.proofs_sent
    assert 1 == core.stats.batches_submitted
    assert [] == core.pending_rounds


def test_proving_done_twice_submits_once() -> None:
    """A second ProvingDone for the same round is ignored."""
    core = make()
    core.handle(received(assign(round=2)))
    core.handle(ProvingDone(round=2, proofs=PROOFS, now=100))
    assert [] == core.handle(ProvingDone(round=2, proofs=PROOFS, now=101))
    assert 2 == core.stats.proofs_sent


def test_proving_done_for_unassigned_round_is_ignored() -> None:
    """Proofs for a round the prover was never assigned are not submitted."""
    core = make()
    assert [] == core.handle(ProvingDone(round=9, proofs=PROOFS, now=100))
    assert 0 == core.stats.proofs_sent


def test_drop_fault_never_proves() -> None:
    """A dropping prover records its assignment but never starts proving."""
    core = make("drop")
    assert [] == core.handle(received(assign(round=1)))
    assert 1 == core.stats.batches_assigned
    assert [] == core.handle(Tick(now=10**9))


def test_drop_fault_still_bids() -> None:
    """A dropping prover bids like an honest one: the fault is in the proving."""
    core = make("drop")
    effects = core.handle(received(announce(0)))
    assert 2 == len(published(effects))


def test_corrupt_fault_flips_proof_bits() -> None:
    """A corrupting prover submits every proof with its bits flipped."""
    core = make("corrupt")
    core.handle(received(assign(round=2)))
    effects = core.handle(ProvingDone(round=2, proofs=PROOFS, now=100))
    [submission] = published(effects)
    assert isinstance(submission, ProofSubmission)
    assert [TaskProof("t1", b"\xfe\xfd"), TaskProof("t2", b"\xfc\xfb")] == submission.proofs


def test_corrupt_proof_differs_even_when_empty() -> None:
    """Corruption never returns the input proof, not even for an empty one."""
    assert b"\xff" == corrupt_proof(b"")
    assert b"\x00\xff" == corrupt_proof(b"\xff\x00")


def test_late_fault_holds_proofs_until_after_deadline() -> None:
    """A late prover asks to wake after the deadline and submits only then."""
    core = make("late")
    core.handle(received(assign(round=2, deadline=3000)))
    assert [WakeAt(3001)] == core.handle(ProvingDone(round=2, proofs=PROOFS, now=100))
    assert [] == core.handle(Tick(now=3000))
    assert 0 == core.stats.proofs_sent
    effects = core.handle(Tick(now=3001))
    assert [Publish(ProofSubmission(market=MARKET, round=2, proofs=PROOFS), to=COORD)] == effects
    assert [] == core.handle(Tick(now=5000))
    assert 2 == core.stats.proofs_sent


def test_late_fault_already_past_deadline_submits_at_once() -> None:
    """A late prover whose proving ran past the deadline anyway submits right away."""
    core = make("late")
    core.handle(received(assign(round=2, deadline=3000)))
    effects = core.handle(ProvingDone(round=2, proofs=PROOFS, now=3500))
    assert 1 == len(published(effects))


def test_settlements_and_rejects_are_counted() -> None:
    """Payments, slashes and rejects are tallied once each, whatever a resend repeats."""
    core = make()
    for number in (1, 2, 3):
        core.handle(received(assign(round=number)))
    for _ in range(2):  # the second copy is a restarted coordinator's resend
        core.handle(received(SettlementNotice(market=MARKET, round=1, outcome="paid", amount=12)))
        core.handle(received(SettlementNotice(market=MARKET, round=2, outcome="paid", amount=8)))
        core.handle(
            received(SettlementNotice(market=MARKET, round=3, outcome="slashed", amount=300))
        )
    # a notice for a batch this prover never had counts nothing either
    core.handle(received(SettlementNotice(market=MARKET, round=9, outcome="paid", amount=5)))
    core.handle(received(Reject(market=MARKET, code="late_bid", reason="x", ref=REF)))
    core.handle(received(Reject(market=MARKET, code="late_bid", reason="y", ref=REF)))
    stats = core.stats.as_dict()
    assert (2, 20, 1, 300, 2) == (
        stats["payments"],
        stats["paid_total"],
        stats["slashes"],
        stats["slashed_total"],
        stats["rejects"],
    )
    assert {"late_bid": 2} == core.stats.reject_codes


def test_settlement_from_non_coordinator_is_not_counted() -> None:
    """A forged payment notice from another key leaves the stats untouched."""
    core = make()
    notice = SettlementNotice(market=MARKET, round=1, outcome="paid", amount=12)
    core.handle(received(notice, sender=OTHER))
    assert 0 == core.stats.paid_total


@pytest.mark.parametrize(
    ("capacity", "cost", "fault"),
    [(0, 1, "none"), (1, -1, "none"), (1, 1, "sometimes"), (True, 1, "none")],
)
def test_bad_configuration_is_refused(capacity: int, cost: int, fault: str) -> None:
    """Non-positive capacity, negative cost or an unknown fault mode raise ValueError."""
    with pytest.raises(ValueError):
        ProverCore(PROVER, COORD, MARKET, capacity=capacity, cost=cost, fault=fault)


def test_a_long_run_forgets_old_rounds_and_ignores_their_redelivery() -> None:
    """After many rounds, a redelivered ancient assignment is ignored, not proven."""
    core = make()
    core.handle(received(assign(round=0)))
    core.handle(ProvingDone(round=0, proofs=PROOFS, now=1))
    for r in range(1, 1100):
        core.handle(received(announce(r, epoch=r // 4)))
    assert [] == core.handle(received(assign(round=0)))
    assert 1 == core.stats.batches_assigned


def run_batch(core: ProverCore, round: int) -> list[Message]:
    """Assign a batch to `core`, prove it with the real workload, return what it sent."""
    [start] = core.handle(received(assign(round=round)))
    assert isinstance(start, StartProving)
    return published(core.handle(ProvingDone(round, prove_assignment(start), now=1)))


def test_honest_prover_submits_proofs_that_verify() -> None:
    """Proofs from the real sloth workload, submitted as they are, all verify."""
    [submission] = run_batch(make(), 0)
    assert isinstance(submission, ProofSubmission)
    checks = workload.verify_batch(
        [t.task_input for t in TASKS], [p.proof for p in submission.proofs], difficulty=8
    )
    assert [True, True] == checks
    assert ["t1", "t2"] == [p.task_id for p in submission.proofs]


def test_corrupt_prover_submits_proofs_that_fail() -> None:
    """A corrupting prover's real proofs, bit-flipped, all fail verification."""
    [submission] = run_batch(make("corrupt"), 0)
    assert isinstance(submission, ProofSubmission)
    checks = workload.verify_batch(
        [t.task_input for t in TASKS], [p.proof for p in submission.proofs], difficulty=8
    )
    assert [False, False] == checks


def test_split_batch_keeps_order_and_balances_chunks() -> None:
    """A batch splits into near-equal contiguous chunks that rejoin in the same order."""
    tasks = [AssignedTask(f"t{i}", bytes([i])) for i in range(7)]
    chunks = split_batch(tasks, 3)
    assert [3, 2, 2] == [len(c) for c in chunks]
    assert tasks == [t for c in chunks for t in c]


def test_split_batch_never_makes_empty_chunks() -> None:
    """More workers than tasks gives one chunk per task; an empty batch gives one chunk."""
    assert [[TASKS[0]], [TASKS[1]]] == split_batch(TASKS, 8)
    assert [[]] == split_batch([], 4)


def test_chunked_proofs_equal_whole_batch_proofs() -> None:
    """Proving a batch in chunks yields exactly the proofs of proving it whole."""
    tasks = [AssignedTask(f"t{i}", bytes([i]) * 4) for i in range(5)]
    whole = prove_tasks(tasks, difficulty=6, setup=3)
    chunked = [p for c in split_batch(tasks, 2) for p in prove_tasks(c, difficulty=6, setup=3)]
    assert whole == chunked


def test_working_state_stays_bounded_over_many_rounds() -> None:
    """Bids, batches and epochs are forgotten with their rounds: entries stop growing."""
    from prover_node.core import RETAIN_ROUNDS

    core = make()
    sizes = {}
    for r in range(3 * RETAIN_ROUNDS):
        core.handle(received(announce(r, epoch=r // 4)))
        core.handle(received(assign(round=r, deadline=r * 1000 + 3000)))
        core.handle(ProvingDone(round=r, proofs=PROOFS, now=r * 1000 + 10))
        sizes[r] = core.size()
    last = 3 * RETAIN_ROUNDS - 1
    assert sizes[2 * RETAIN_ROUNDS] == sizes[last]
    assert RETAIN_ROUNDS + 1 >= sizes[last]["batches"]
    assert RETAIN_ROUNDS // 4 + 2 >= sizes[last]["epochs"]
    assert (3 * RETAIN_ROUNDS, 3 * RETAIN_ROUNDS // 4) == (
        core.stats.batches_submitted,
        core.stats.epochs_declared,
    )


def test_a_settled_batch_leaves_and_its_resent_assignment_is_ignored() -> None:
    """Paid batches are not held: after 1,500 rounds only the last round's open batch is."""
    core = make()
    for r in range(1500):
        core.handle(received(announce(r, epoch=r // 4)))
        core.handle(received(assign(round=r, deadline=r * 1000 + 3000)))
        core.handle(ProvingDone(round=r, proofs=PROOFS, now=r * 1000 + 10))
        if r >= 1:
            paid = SettlementNotice(market=MARKET, round=r - 1, outcome="paid", amount=5)
            core.handle(received(paid))
            core.handle(received(paid))  # a resend counts nothing
            assert [] == core.handle(received(assign(round=r - 1)))  # nor is it proved again
    assert (1, 1499 * 5, 1500) == (
        core.size()["batches"],
        core.stats.paid_total,
        core.stats.batches_submitted,
    )
