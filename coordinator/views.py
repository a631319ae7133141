"""A coordinator's whole state in one comparable, ordered form.

Two cores are in the same state exactly when their `comparable_state`s are equal: what
the replay, snapshot and restart tests compare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordinator.core import Coordinator


def comparable_state(core: Coordinator) -> dict[str, object]:
    """Everything that defines the market's state of `core`, sorted."""
    return {
        "bidding": core._bidding,
        "started": core._started,
        "shift": core._shift,
        "ledger": sorted((a.kind.value, a.owner, b) for a, b in core.accounts.snapshot().items()),
        "tasks": sorted(
            (
                t.user,
                t.task_id,
                t.wire_id,
                t.fee,
                t.round,
                t.status,
                t.prover,
                t.price,
                t.settlements,
                t.carried_from,
                t.rescued_from,
                t.failed_by,
            )
            for t in core._tasks.values()
        ),
        "rounds": sorted(
            (
                r.number,
                r.phase.value,
                tuple(r.tasks),
                tuple(sorted((k, b.cost) for k, b in r.cost_bids.items())),
                tuple(
                    sorted(
                        (
                            k,
                            b.tasks,
                            b.payment,
                            b.settled,
                            tuple(sorted(b.proofs.items())),
                            b.assigned_ms,
                            b.finished_ms,
                            tuple(b.late),
                        )
                        for k, b in r.batches.items()
                    )
                ),
            )
            for r in core._rounds.values()
        ),
        "grants": sorted(core._grants.items()),
        "slashes": sorted(core.slashes.items()),
        "provers": sorted(
            (
                k,
                tuple(sorted(p.capacities.items())),
                tuple(sorted(p.open_rounds)),
                (p.record.won, p.record.proved, p.record.late, p.record.failed),
                tuple(p.record.times),
                tuple(p.record.recent),
            )
            for k, p in core._provers.items()
        ),
    }
