"""Clearing a round, as plans: pure functions from the round's state to what should change.

The core applies a plan; nothing here touches the ledger or the state it is given.
`plan_admission` decides which cost bids take part, `plan_subsidy` what a deficit outcome
draws, `plan_batches` each winner's batch and `plan_task_fates` what becomes of each task
bid once the mechanism has spoken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from coordinator.state import Batch, ProverState, Round, TaskKey, TaskState
from protocol.mechanism import Outcome, ProverBid, TaskBid
from protocol.rejects import RejectCode
from protocol.tie_proof import plain_seed, seed_from_proof, tie_message


@dataclass(frozen=True, slots=True)
class RefusedCostBid:
    """A cost bid accepted during bidding that may not take part in the clearing."""

    prover: str
    ref: bytes
    code: RejectCode
    reason: str


@dataclass(frozen=True, slots=True)
class Admission:
    """The bids a round clears on, and the cost bids left out with their reasons."""

    task_bids: list[TaskBid]
    prover_bids: list[ProverBid]
    refused: list[RefusedCostBid]


def round_seed(
    market: str, number: int, signer: Callable[[bytes], bytes] | None
) -> tuple[bytes, bytes | None]:
    """The seed round `number`'s ties break on, and the signature it came from, if signed.

    With `signed_ties` the seed is derived from the coordinator's deterministic signature,
    which the clearing result publishes so anyone can check the draw.
    """
    if signer is None:
        return plain_seed(market, number), None
    proof = signer(tie_message(market, number))
    return seed_from_proof(proof), proof


def plan_admission(
    r: Round,
    tasks: Mapping[TaskKey, TaskState],
    provers: Mapping[str, ProverState],
    locked: Callable[[str], int],
    p_max: int,
) -> Admission:
    """Which of round `r`'s bids the mechanism sees.

    A prover takes part only if no earlier batch of its is open, its locked deposit
    still backs its declared capacity (a slashing since its bid may have taken it), and
    the round holds no rescued task it failed: the mechanism allocates any task to any
    bidder, so the one way to never hand a failed task back to its prover is to leave
    that prover out of the round the task is rescued into.
    """
    prover_bids: list[ProverBid] = []
    refused: list[RefusedCostBid] = []
    failed = {tasks[k].failed_by for k in r.tasks}
    for key in sorted(r.cost_bids):
        cost_bid = r.cost_bids[key]
        prover = provers[key]
        capacity = prover.capacities[r.epoch]
        if key in failed:
            refused.append(
                RefusedCostBid(
                    key,
                    cost_bid.ref,
                    RejectCode.RESCUE_EXCLUDED,
                    "the round rescues a task you failed",
                )
            )
        elif prover.offline:
            refused.append(
                RefusedCostBid(
                    key,
                    cost_bid.ref,
                    RejectCode.PROVER_OFFLINE,
                    "your last will came after your cost bid: offline at clearing",
                )
            )
        elif prover.open_rounds:
            refused.append(
                RefusedCostBid(
                    key, cost_bid.ref, RejectCode.PROVER_BUSY, "an earlier batch is still open"
                )
            )
        elif locked(key) < p_max * capacity:
            refused.append(
                RefusedCostBid(
                    key, cost_bid.ref, RejectCode.INSUFFICIENT_DEPOSIT, "locked deposit was slashed"
                )
            )
        else:
            prover_bids.append(ProverBid(id=key, capacity=capacity, cost=cost_bid.cost))
    task_bids = [TaskBid(id=tasks[k].wire_id, fee=tasks[k].fee) for k in r.tasks]
    return Admission(task_bids, prover_bids, refused)


Fate = Literal["assigned", "carried", "released"]


@dataclass(frozen=True, slots=True)
class TaskFate:
    """What clearing does with one task bid: assign it, carry it, or release its fee."""

    key: TaskKey
    fate: Fate
    prover: str | None = None
    price: int | None = None


def plan_task_fates(
    r: Round,
    tasks: Mapping[TaskKey, TaskState],
    wire: Mapping[str, TaskKey],
    outcome: Outcome,
    *,
    can_carry: bool,
) -> list[TaskFate]:
    """Each of round `r`'s tasks, in bid order, with its fate under `outcome`.

    An unallocated task that asked to carry over moves to the next round once
    (`can_carry`: there is a next round), so an unallocatable fee is not escrowed forever;
    a rescued task has had its second chance and is released.
    """
    assigned: dict[TaskKey, TaskFate] = {}
    for prover, wire_ids in outcome.assignments.items():
        for w in wire_ids:
            key = wire[w]
            assigned[key] = TaskFate(key, "assigned", prover, outcome.charges[w])
    fates: list[TaskFate] = []
    for key in r.tasks:
        task = tasks[key]
        if key in assigned:
            fates.append(assigned[key])
        elif (
            task.carry_over
            and task.carried_from is None
            and task.rescued_from is None
            and can_carry
        ):
            fates.append(TaskFate(key, "carried"))
        else:
            fates.append(TaskFate(key, "released"))
    return fates


def subsidy_draw(outcome: Outcome) -> int:
    """What the batches paying out more than their tasks bring in draw from a subsidy.

    Settlement goes batch by batch, so a deficit outcome (VCG) needs each such batch's
    shortfall in the treasury before it settles; zero for any budget-balanced outcome.
    """
    if outcome.surplus >= 0:
        return 0
    return sum(
        max(0, pay - sum(outcome.charges[t] for t in outcome.assignments[p]))
        for p, pay in outcome.payments.items()
    )


def plan_subsidy(outcome: Outcome, available: int) -> tuple[Outcome, int]:
    """The outcome to settle on, and what it draws from a subsidy account holding `available`.

    A subsidy account too poor for the draw clears nothing.
    """
    draw = subsidy_draw(outcome)
    if draw == 0:
        return outcome, 0
    if available < draw:
        return Outcome(mechanism=outcome.mechanism), 0
    return outcome, draw


def plan_batches(r: Round, outcome: Outcome, wire: Mapping[str, TaskKey], now: int) -> list[Batch]:
    """Each winner's batch of round `r` under `outcome`, assigned at `now`, by prover key."""
    return [
        Batch(
            prover=key,
            round=r.number,
            tasks=tuple(wire[w] for w in outcome.assignments[key]),
            payment=outcome.payments[key],
            assigned_ms=now,
        )
        for key in sorted(outcome.assignments)
    ]
