"""Every mechanism on one book: one row each, with its efficiency against the optimum."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.mechanism import (
    COMPARED,
    MechanismParams,
    Outcome,
    ProverBid,
    TaskBid,
    make_mechanism,
)


@dataclass(frozen=True, slots=True)
class Row:
    """One mechanism's clearing of the book."""

    mechanism: str
    trades: int
    provers: int
    user_price: int | None
    prover_price: int | None
    surplus: int
    welfare: int
    efficiency: float | None  # welfare / the optimum's welfare; None when that is 0
    outcome: Outcome

    def as_json(self) -> dict[str, object]:
        return {
            "mechanism": self.mechanism,
            "trades": self.trades,
            "provers": self.provers,
            "user_price": self.user_price,
            "prover_price": self.prover_price,
            "surplus": self.surplus,
            "welfare": self.welfare,
            "efficiency": self.efficiency,
        }


def efficiency(welfare: int, best: int) -> float | None:
    return round(welfare / best, 4) if best else None


def compare(
    tasks: Sequence[TaskBid],
    provers: Sequence[ProverBid],
    params: MechanismParams | None = None,
    *,
    seed: bytes = b"",
    names: Sequence[str] = COMPARED,
) -> list[Row]:
    """Clear the same bids with each named mechanism (BidError if a bid is bad)."""
    best = make_mechanism("optimum").clear(tasks, provers, seed=seed).welfare
    rows = []
    for name in names:
        out = make_mechanism(name, params).clear(tasks, provers, seed=seed)
        rows.append(
            Row(
                name,
                out.allocated_tasks,
                out.allocated_provers,
                out.user_price,
                out.prover_price,
                out.surplus,
                out.welfare,
                efficiency(out.welfare, best),
                out,
            )
        )
    return rows
