"""Mechanisms over bid objects, run on the array path.

The bids are checked, put into tie-key order (protocol.mechanism.ties) so that the array
path's positional tie rule is the tie-key rule, cleared as arrays, and turned back into an
Outcome keyed by bid id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from protocol.mechanism.arrays import ArrayClearing, Int64Array
from protocol.mechanism.base import Outcome, ProverBid, TaskBid
from protocol.mechanism.bids import check_bids
from protocol.mechanism.ties import tie_keyer

ArrayRule = Callable[[Int64Array, Int64Array, Int64Array], ArrayClearing]


def outcome_from_arrays(
    name: str, clearing: ArrayClearing, task_ids: Sequence[str], prover_ids: Sequence[str]
) -> Outcome:
    """An Outcome keyed by id from an index-based clearing over bids in the given order."""
    tasks = clearing.tasks.tolist()
    charges = clearing.charges.tolist()
    assignments: dict[str, tuple[str, ...]] = {}
    payments: dict[str, int] = {}
    start = 0
    for p, size, pay in zip(
        clearing.provers.tolist(), clearing.batch_sizes.tolist(), clearing.payments, strict=True
    ):
        assignments[prover_ids[p]] = tuple(sorted(task_ids[t] for t in tasks[start : start + size]))
        payments[prover_ids[p]] = pay
        start += size
    return Outcome(
        mechanism=name,
        assignments=assignments,
        charges={task_ids[t]: c for t, c in zip(tasks, charges, strict=True)},
        payments=payments,
        user_price=clearing.user_price,
        prover_price=clearing.prover_price,
        welfare=clearing.welfare,
    )


@dataclass(frozen=True)
class ArrayMechanism:
    """A Mechanism whose rule is an array-level clearing function."""

    name: str
    rule: ArrayRule

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        check_bids(tasks, provers)
        key = tie_keyer(seed)
        ts = sorted(tasks, key=lambda t: key(t.id))
        ps = sorted(provers, key=lambda p: key(p.id))
        fees = np.fromiter((t.fee for t in ts), dtype=np.int64, count=len(ts))
        caps = np.fromiter((p.capacity for p in ps), dtype=np.int64, count=len(ps))
        costs = np.fromiter((p.cost for p in ps), dtype=np.int64, count=len(ps))
        clearing = self.rule(fees, caps, costs)
        return outcome_from_arrays(self.name, clearing, [t.id for t in ts], [p.id for p in ps])
