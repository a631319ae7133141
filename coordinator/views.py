"""A coordinator's whole state in one comparable, ordered form, and its size.

Two cores are in the same state exactly when their `comparable_state`s are equal: what
the replay, snapshot and restart tests compare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.state import ProverState, Round, TaskState

if TYPE_CHECKING:
    from coordinator.market_state import MarketState


def comparable_state(core: MarketState) -> dict[str, object]:
    """Everything that defines the market's state of `core`, sorted."""
    return {
        "bidding": core._bidding,
        "started": core._started,
        "shift": core._shift,
        "ledger": sorted((a.kind.value, a.owner, b) for a, b in core.accounts.snapshot().items()),
        "tasks": sorted(_task_row(t) for t in core._tasks.values()),
        "rounds": sorted(_round_row(r) for r in core._rounds.values()),
        "grants": sorted(core._grants.items()),
        "slashes": sorted(core.slashes.items()),
        "provers": sorted(_prover_row(k, p) for k, p in core._provers.items()),
        "rescues": sorted(core._rescues.items()),
    }


def state_size(core: MarketState) -> dict[str, int]:
    """How many entries the state of `core` holds, by kind: what must stay bounded."""
    return {
        "rounds": len(core._rounds),
        "tasks": len(core._tasks),
        "wire_ids": len(core._wire),
        "refs": sum(len(refs) for refs in core._refs.values()),
        "declaration_refs": sum(len(refs) for refs in core._declaration_refs.values()),
        "capacities": sum(len(p.capacities) for p in core._provers.values()),
        "provers": len(core._provers),
        "accounts": len(core.accounts.snapshot()),
        "grants": len(core._grants),
    }


def _task_row(t: TaskState) -> tuple[object, ...]:
    return (
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


def _round_row(r: Round) -> tuple[object, ...]:
    batches = (
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
    return (
        r.number,
        r.phase.value,
        tuple(r.tasks),
        tuple(sorted((k, b.cost) for k, b in r.cost_bids.items())),
        tuple(sorted(batches)),
    )


def _prover_row(key: str, p: ProverState) -> tuple[object, ...]:
    record = p.record
    return (
        key,
        tuple(sorted(p.capacities.items())),
        tuple(sorted(p.open_rounds)),
        p.offline,
        (p.will_at, p.online_at),
        (record.won, record.proved, record.late, record.failed),
        tuple(record.times),
        tuple(record.recent),
    )
