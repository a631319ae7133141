"""Clearing a round, as plans: pure functions from the round's state to what should change.

The core applies a plan; nothing here touches the ledger or the state it is given.
`plan_admission` decides which cost bids take part, `plan_subsidy` what a deficit outcome
draws, `plan_batches` each winner's batch and `plan_task_fates` what becomes of each task
bid once the mechanism has spoken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from coordinator.state import Batch, ProverState, Round, TaskKey, TaskState
from protocol.mechanism import ProverBid
from protocol.mechanism.clearing import IndexedOutcome, TaskColumns
from protocol.mechanism.ties import tie_keyer, tie_prefix
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

    task_bids: TaskColumns
    prover_bids: list[ProverBid]
    prover_ties: list[int]  # each prover bid's tie-key prefix
    refused: list[RefusedCostBid]


class WireIds(Sequence[str]):
    """A round's task bids' wire ids, in book order, read from the tasks when asked."""

    def __init__(self, keys: Sequence[TaskKey], tasks: Mapping[TaskKey, TaskState]) -> None:
        self._keys = keys
        self._tasks = tasks

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._tasks[k].wire_id for k in self._keys[i]]
        return self._tasks[self._keys[i]].wire_id


@dataclass(frozen=True, slots=True)
class RoundSeed:
    """A round's tie seed, the signature it came from (if signed), and its tie keyer."""

    seed: bytes
    proof: bytes | None
    key: Callable[[str], bytes]

    @classmethod
    def draw(cls, market: str, number: int, signer: Callable[[bytes], bytes] | None) -> RoundSeed:
        seed, proof = round_seed(market, number, signer)
        return cls(seed, proof, tie_keyer(seed))

    def tie(self, bid_id: str) -> int:
        """The tie-key prefix of the bid with this id (protocol.mechanism.ties)."""
        return tie_prefix(self.key(bid_id))


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
    seed: RoundSeed,
) -> Admission:
    """Which of round `r`'s bids the mechanism sees.

    A prover takes part only if no earlier batch of its is open, its locked deposit
    still backs its declared capacity (a slashing since its bid may have taken it), and
    the round holds no rescued task it failed: the mechanism allocates any task to any
    bidder, so the one way to never hand a failed task back to its prover is to leave
    that prover out of the round the task is rescued into.
    """
    prover_bids: list[ProverBid] = []
    prover_ties: list[int] = []
    refused: list[RefusedCostBid] = []
    for key in sorted(r.cost_bids):
        cost_bid = r.cost_bids[key]
        prover = provers[key]
        capacity = prover.capacities[r.epoch]
        if key in r.excluded:
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
            prover_ties.append(cost_bid.tie)
    task_bids = TaskColumns(
        ids=WireIds(r.tasks, tasks),
        fees=np.frombuffer(r.fees, dtype=np.int64).copy(),
        ties=np.frombuffer(r.ties, dtype=np.uint64).copy(),
        seed=seed.seed,
    )
    return Admission(task_bids, prover_bids, prover_ties, refused)


@dataclass(frozen=True, slots=True)
class Winner:
    """A winning prover's share of the clearing: its tasks (tie order) and their charges."""

    prover: str
    tasks: list[TaskKey]
    charges: list[int]
    payment: int


@dataclass(frozen=True, slots=True)
class TaskFates:
    """What clearing does with a round's task bids: each winner's, to assign; the rest,
    in bid order, to carry into the next round or to release."""

    winners: list[Winner]
    carried: list[TaskKey]
    released: list[TaskKey]


def plan_task_fates(
    r: Round,
    tasks: Mapping[TaskKey, TaskState],
    outcome: IndexedOutcome,
    *,
    can_carry: bool,
) -> TaskFates:
    """Round `r`'s tasks by their fate under `outcome`, winners in prover key order.

    An unallocated task that asked to carry over moves to the next round once
    (`can_carry`: there is a next round), so an unallocatable fee is not escrowed forever;
    a rescued task has had its second chance and is released.
    """
    book = r.tasks
    winners = sorted(
        (
            Winner(prover, [book[i] for i in batch.tolist()], outcome.charges[batch].tolist(), pay)
            for prover, batch, pay in zip(
                outcome.winners, outcome.batches, outcome.payments, strict=True
            )
        ),
        key=lambda w: w.prover,
    )
    carried: list[TaskKey] = []
    released: list[TaskKey] = []
    for i in np.flatnonzero(outcome.winner_of(len(book)) < 0).tolist():
        key = book[i]
        task = tasks[key]
        if (
            task.carry_over
            and task.carried_from is None
            and task.rescued_from is None
            and can_carry
        ):
            carried.append(key)
        else:
            released.append(key)
    return TaskFates(winners, carried, released)


def subsidy_draw(outcome: IndexedOutcome) -> int:
    """What the batches paying out more than their tasks bring in draw from a subsidy.

    Settlement goes batch by batch, so a deficit outcome (VCG) needs each such batch's
    shortfall in the treasury before it settles; zero for any budget-balanced outcome.
    """
    if outcome.surplus >= 0:
        return 0
    return sum(
        max(0, pay - int(outcome.charges[batch].sum()))
        for batch, pay in zip(outcome.batches, outcome.payments, strict=True)
    )


def plan_subsidy(outcome: IndexedOutcome, available: int) -> tuple[IndexedOutcome, int]:
    """The outcome to settle on, and what it draws from a subsidy account holding `available`.

    A subsidy account too poor for the draw clears nothing.
    """
    draw = subsidy_draw(outcome)
    if draw == 0:
        return outcome, 0
    if available < draw:
        return IndexedOutcome(mechanism=outcome.mechanism), 0
    return outcome, draw


def plan_batches(r: Round, fates: TaskFates, now: int) -> list[Batch]:
    """Each winner's batch of round `r`, assigned at `now`, by prover key; a batch's tasks
    in tie order (the outcome's), so no sort of the round's tasks is needed."""
    return [
        Batch(
            prover=w.prover,
            round=r.number,
            tasks=tuple(w.tasks),
            payment=w.payment,
            assigned_ms=now,
        )
        for w in fates.winners
    ]
