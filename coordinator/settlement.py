"""Settling a batch, as a plan: the postings and the outcome of each task and the prover.

A batch with a valid proof for every task is proven: each user pays the clearing price
out of escrow (the rest of the fee comes back), and the prover is paid from the treasury.
Otherwise each task without a valid proof is refunded in full plus P_max from the
slashed pool, and the prover forfeits its whole locked deposit to that pool; under the
`rescue` rule a task that can be rescued keeps its fee escrowed instead (only the P_max
is paid to its user) and is offered again in the next round.

A proven batch completed after its prove deadline, within the grace `late_grace_ms`, is
still paid, less a penalty from its prover's locked deposit that grows linearly with the
lateness L: locked·L/grace (rounded down). The user of each task whose proof came late
gets P_max·L/grace of it (rounded down), which is what a slash would have given it, scaled
the same way; the rest goes to the slashed pool. The shares never exceed the penalty,
since the locked deposit backs P_max for every task of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from coordinator.accounts import SLASHED, TREASURY, Account, balance_of, escrow_of, locked_of
from coordinator.state import Batch, TaskKey, TaskState


@dataclass(frozen=True, slots=True)
class TaskSettlement:
    """One task's settlement: charged `amount` (with its proof), or refunded `amount`."""

    key: TaskKey
    outcome: Literal["charged", "refunded", "rescued"]
    amount: int  # charged: the price; refunded: P_max (the fee comes back too); rescued: P_max
    proof: bytes | None = None
    compensation: int = 0  # a late task's share of the penalty, credited besides


@dataclass(frozen=True, slots=True)
class SettlementPlan:
    """Everything settling one batch changes, for the core to apply in one transfer."""

    postings: list[tuple[Account, int]]
    tasks: list[TaskSettlement]
    proven: bool
    prover_amount: int  # paid when proven, else forfeited
    penalty: int = 0  # taken from the locked deposit of a proven batch that was late


def plan_settlement(
    batch: Batch,
    tasks: Mapping[TaskKey, TaskState],
    *,
    p_max: int,
    locked: int,
    prove_deadline: int,
    grace_ms: int = 0,
    rescuable: Callable[[TaskState], bool] = lambda task: False,
) -> SettlementPlan:
    """How `batch` settles; `locked` is its prover's locked deposit now.

    `rescuable` says which failed tasks are rescued rather than refunded.
    """
    proven = all(batch.proofs.get(key) is not None for key in batch.tasks)
    lateness = _lateness(batch, prove_deadline) if proven else 0
    share = p_max * lateness // grace_ms if lateness else 0
    late = set(batch.late)
    postings: list[tuple[Account, int]] = []
    settled: list[TaskSettlement] = []
    for key in batch.tasks:
        task = tasks[key]
        proof = batch.proofs.get(key)
        if proof is not None:
            price = task.price or 0
            bonus = share if key in late else 0
            postings += [
                (escrow_of(task.user), -task.fee),
                (balance_of(task.user), task.fee - price + bonus),
                (TREASURY, price),
            ]
            settled.append(TaskSettlement(key, "charged", price, proof, bonus))
        elif rescuable(task):
            postings += [(balance_of(task.user), p_max), (SLASHED, -p_max)]
            settled.append(TaskSettlement(key, "rescued", p_max))
        else:
            postings += [
                (escrow_of(task.user), -task.fee),
                (balance_of(task.user), task.fee + p_max),
                (SLASHED, -p_max),
            ]
            settled.append(TaskSettlement(key, "refunded", p_max))
    if not proven:
        if locked:
            postings += [(locked_of(batch.prover), -locked), (SLASHED, locked)]
        return SettlementPlan(postings, settled, False, locked)
    penalty = locked * lateness // grace_ms if lateness else 0
    if batch.payment:
        postings += [(TREASURY, -batch.payment), (balance_of(batch.prover), batch.payment)]
    if penalty:
        shares = sum(t.compensation for t in settled)
        postings += [(locked_of(batch.prover), -penalty), (SLASHED, penalty - shares)]
    return SettlementPlan(postings, settled, True, batch.payment, penalty)


def _lateness(batch: Batch, prove_deadline: int) -> int:
    """How long after its prove deadline the batch's last proof arrived (0: on time)."""
    if batch.finished_ms is None:
        return 0
    return max(0, batch.finished_ms - prove_deadline)
