"""Mechanisms over a round's bids, run on the array path.

Task bids come as columns (`TaskColumns`: ids, fees and tie-key prefixes, in any order), so
a coordinator that keeps its book that way clears without one Python object per bid; the
prover bids, a few, are put into tie-key order here. The result is an `IndexedOutcome`, by
position in the columns; `IndexedOutcome.outcome` keys it by id. Bid objects
(`Mechanism.clear`) are turned into columns and take the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from protocol.mechanism.arrays import ArrayClearing, Int64Array, check_arrays
from protocol.mechanism.base import BidError, Mechanism, Outcome, ProverBid, TaskBid
from protocol.mechanism.bids import check_bids
from protocol.mechanism.tie_order import TieOrder, UInt64Array
from protocol.mechanism.ties import tie_keyer, tie_prefix

ArrayRule = Callable[[Int64Array, Int64Array, Int64Array, TieOrder | None], ArrayClearing]


@dataclass(frozen=True, slots=True)
class TaskColumns:
    """A round's task bids as columns: distinct ids, fees, and each id's `tie_prefix` under
    `seed`, all aligned, in any order (arrival order does not enter the outcome)."""

    ids: Sequence[str]
    fees: Int64Array
    ties: UInt64Array
    seed: bytes

    @classmethod
    def of(cls, tasks: Sequence[TaskBid], seed: bytes) -> TaskColumns:
        """Columns of these bids, their tie prefixes computed now (one hash a bid)."""
        key = tie_keyer(seed)
        n = len(tasks)
        return cls(
            ids=[t.id for t in tasks],
            fees=np.fromiter((t.fee for t in tasks), dtype=np.int64, count=n),
            ties=np.fromiter((tie_prefix(key(t.id)) for t in tasks), dtype=np.uint64, count=n),
            seed=seed,
        )

    def tie_order(self) -> TieOrder:
        keyer = tie_keyer(self.seed)
        ids = self.ids
        return TieOrder(self.ties, lambda i: keyer(ids[i]))


@dataclass(frozen=True, slots=True)
class IndexedOutcome:
    """Who trades and at what prices, tasks by their position in the round's columns.

    `winners[w]` proves the tasks at `batches[w]` (in tie order) and is paid `payments[w]`;
    `charges[i]` is what task i pays (0 when not allocated, see `allocated`).
    """

    mechanism: str
    winners: tuple[str, ...] = ()
    batches: tuple[Int64Array, ...] = ()
    payments: tuple[int, ...] = ()
    charges: Int64Array = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    user_price: int | None = None
    prover_price: int | None = None
    welfare: int = 0

    @property
    def allocated_provers(self) -> int:
        return len(self.winners)

    @property
    def allocated_tasks(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def surplus(self) -> int:
        charged = sum(int(self.charges[b].sum()) for b in self.batches)
        return charged - sum(self.payments)

    def winner_of(self, n: int) -> Int64Array:
        """For each of the n tasks, the index in `winners` of its prover, or -1."""
        out = np.full(n, -1, dtype=np.int64)
        for w, batch in enumerate(self.batches):
            out[batch] = w
        return out

    def outcome(self, ids: Sequence[str]) -> Outcome:
        """The same outcome keyed by id (each batch's ids sorted)."""
        charges = self.charges.tolist()
        assignments: dict[str, tuple[str, ...]] = {}
        charged: dict[str, int] = {}
        for prover, batch in zip(self.winners, self.batches, strict=True):
            positions = batch.tolist()
            assignments[prover] = tuple(sorted(ids[i] for i in positions))
            charged.update((ids[i], charges[i]) for i in positions)
        return Outcome(
            mechanism=self.mechanism,
            assignments=assignments,
            charges=charged,
            payments=dict(zip(self.winners, self.payments, strict=True)),
            user_price=self.user_price,
            prover_price=self.prover_price,
            welfare=self.welfare,
        )


def indexed_from_arrays(
    name: str, clearing: ArrayClearing, n: int, prover_ids: Sequence[str]
) -> IndexedOutcome:
    """An IndexedOutcome from a clearing over n tasks and provers in `prover_ids` order."""
    charges = np.zeros(n, dtype=np.int64)
    charges[clearing.tasks] = clearing.charges
    ends = np.cumsum(clearing.batch_sizes).tolist()
    return IndexedOutcome(
        mechanism=name,
        winners=tuple(prover_ids[p] for p in clearing.provers.tolist()),
        batches=tuple(
            clearing.tasks[start:end] for start, end in zip([0, *ends], ends, strict=False)
        ),
        payments=clearing.payments,
        charges=charges,
        user_price=clearing.user_price,
        prover_price=clearing.prover_price,
        welfare=clearing.welfare,
    )


def indexed_from_outcome(outcome: Outcome, ids: Sequence[str]) -> IndexedOutcome:
    """An id-keyed Outcome by position in the columns whose ids are `ids`."""
    position = {task_id: i for i, task_id in enumerate(ids)}
    charges = np.zeros(len(ids), dtype=np.int64)
    for task_id, charge in outcome.charges.items():
        charges[position[task_id]] = charge
    winners = tuple(outcome.assignments)
    return IndexedOutcome(
        mechanism=outcome.mechanism,
        winners=winners,
        batches=tuple(
            np.array([position[t] for t in outcome.assignments[p]], dtype=np.int64) for p in winners
        ),
        payments=tuple(outcome.payments[p] for p in winners),
        charges=charges,
        user_price=outcome.user_price,
        prover_price=outcome.prover_price,
        welfare=outcome.welfare,
    )


def outcome_from_arrays(
    name: str, clearing: ArrayClearing, task_ids: Sequence[str], prover_ids: Sequence[str]
) -> Outcome:
    """An Outcome keyed by id from an index-based clearing over bids in the given order."""
    return indexed_from_arrays(name, clearing, len(task_ids), prover_ids).outcome(task_ids)


@runtime_checkable
class ColumnMechanism(Protocol):
    """A mechanism that clears task bids given as columns."""

    @property
    def name(self) -> str: ...

    def clear_columns(
        self,
        tasks: TaskColumns,
        provers: Sequence[ProverBid],
        prover_ties: Sequence[int] | None = None,
    ) -> IndexedOutcome: ...


def clear_indexed(
    mechanism: Mechanism,
    tasks: TaskColumns,
    provers: Sequence[ProverBid],
    prover_ties: Sequence[int] | None = None,
) -> IndexedOutcome:
    """Clear columns with any mechanism: directly if it takes columns, else as bid objects.

    `prover_ties`, when given, are the prover bids' tie-key prefixes under the columns'
    seed, taken beforehand (as the coordinator does when a cost bid comes in)."""
    if isinstance(mechanism, ColumnMechanism):
        return mechanism.clear_columns(tasks, provers, prover_ties)
    bids = [TaskBid(i, f) for i, f in zip(tasks.ids, tasks.fees.tolist(), strict=True)]
    return indexed_from_outcome(mechanism.clear(bids, provers, seed=tasks.seed), tasks.ids)


def clear_objects(
    mechanism: ColumnMechanism,
    tasks: Sequence[TaskBid],
    provers: Sequence[ProverBid],
    seed: bytes,
) -> Outcome:
    """Bid objects through a column mechanism: checked, made columns, cleared, keyed by id."""
    check_bids(tasks, provers)
    columns = TaskColumns.of(tasks, seed)
    return mechanism.clear_columns(columns, provers).outcome(columns.ids)


def prover_arrays(
    provers: Sequence[ProverBid], seed: bytes, ties: Sequence[int] | None = None
) -> tuple[list[ProverBid], Int64Array, Int64Array]:
    """Checked prover bids in tie-key order, with their capacities and costs as arrays;
    `ties` are their tie-key prefixes if already known."""
    check_bids((), provers)
    key = tie_keyer(seed)
    m = len(provers)
    ids = [p.id for p in provers]
    if ties is None:
        ties = [tie_prefix(key(i)) for i in ids]
    prefixes = np.fromiter(ties, dtype=np.uint64, count=m)
    order = TieOrder(prefixes, lambda i: key(ids[i])).sort(np.arange(m, dtype=np.int64))
    caps = np.fromiter((p.capacity for p in provers), dtype=np.int64, count=m)[order]
    costs = np.fromiter((p.cost for p in provers), dtype=np.int64, count=m)[order]
    return [provers[i] for i in order.tolist()], caps, costs


def check_columns(tasks: TaskColumns) -> None:
    """Raise BidError if the columns disagree in length (values are checked by the rule)."""
    if not len(tasks.ids) == tasks.fees.size == tasks.ties.size:
        raise BidError(
            f"task columns differ in length: {len(tasks.ids)} ids, {tasks.fees.size} fees, "
            f"{tasks.ties.size} tie prefixes"
        )


@dataclass(frozen=True)
class ArrayMechanism:
    """A Mechanism whose rule is an array-level clearing function."""

    name: str
    rule: ArrayRule

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        return clear_objects(self, tasks, provers, seed)

    def clear_columns(
        self,
        tasks: TaskColumns,
        provers: Sequence[ProverBid],
        prover_ties: Sequence[int] | None = None,
    ) -> IndexedOutcome:
        check_columns(tasks)
        ps, caps, costs = prover_arrays(provers, tasks.seed, prover_ties)
        check_arrays(tasks.fees, caps, costs)
        clearing = self.rule(tasks.fees, caps, costs, tasks.tie_order())
        return indexed_from_arrays(self.name, clearing, len(tasks.ids), [p.id for p in ps])
