"""Settling a batch, as a plan: the postings and the outcome of each task and the prover.

A batch with a valid proof for every task is proven: each user pays the clearing price
out of escrow (the rest of the fee comes back), and the prover is paid from the treasury.
Otherwise each task without a valid proof is refunded in full plus P_max from the
slashed pool, and the prover forfeits its whole locked deposit to that pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from coordinator.accounts import SLASHED, TREASURY, Account, balance_of, escrow_of, locked_of
from coordinator.state import Batch, TaskKey, TaskState


@dataclass(frozen=True, slots=True)
class TaskSettlement:
    """One task's settlement: charged `amount` (with its proof), or refunded `amount`."""

    key: TaskKey
    outcome: Literal["charged", "refunded"]
    amount: int
    proof: bytes | None = None


@dataclass(frozen=True, slots=True)
class SettlementPlan:
    """Everything settling one batch changes, for the core to apply in one transfer."""

    postings: list[tuple[Account, int]]
    tasks: list[TaskSettlement]
    proven: bool
    prover_amount: int  # paid when proven, else forfeited


def plan_settlement(
    batch: Batch, tasks: Mapping[TaskKey, TaskState], *, p_max: int, locked: int
) -> SettlementPlan:
    """How `batch` settles; `locked` is its prover's locked deposit now."""
    postings: list[tuple[Account, int]] = []
    settled: list[TaskSettlement] = []
    for key in batch.tasks:
        task = tasks[key]
        proof = batch.proofs.get(key)
        if proof is not None:
            price = task.price or 0
            postings += [
                (escrow_of(task.user), -task.fee),
                (balance_of(task.user), task.fee - price),
                (TREASURY, price),
            ]
            settled.append(TaskSettlement(key, "charged", price, proof))
        else:
            postings += [
                (escrow_of(task.user), -task.fee),
                (balance_of(task.user), task.fee + p_max),
                (SLASHED, -p_max),
            ]
            settled.append(TaskSettlement(key, "refunded", p_max))
    proven = all(batch.proofs.get(key) is not None for key in batch.tasks)
    if proven:
        amount = batch.payment
        if amount:
            postings += [(TREASURY, -amount), (balance_of(batch.prover), amount)]
    else:
        amount = locked
        if amount:
            postings += [(locked_of(batch.prover), -amount), (SLASHED, amount)]
    return SettlementPlan(postings, settled, proven, amount)
