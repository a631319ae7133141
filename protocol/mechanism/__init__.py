"""Clearing mechanisms: pure functions from a round's bids to an outcome.

Every mechanism is registered by name in MECHANISMS; a new one (McAfee, posted price,
pay-as-bid, VCG, ...) is one more entry implementing base.Mechanism.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocol.mechanism.arrays import (
    ArrayClearing,
    check_arrays,
    clear_optimum_arrays,
    clear_prooph_arrays,
)
from protocol.mechanism.base import BidError, Mechanism, Outcome, ProverBid, TaskBid
from protocol.mechanism.bids import check_bids, parse_bids
from protocol.mechanism.clearing import ArrayMechanism, outcome_from_arrays
from protocol.mechanism.reference import clear_optimum_reference, clear_prooph_reference
from protocol.mechanism.ties import tie_key, tie_keyer


@dataclass(frozen=True)
class _Plain:
    """A mechanism given as a plain function over bid objects."""

    name: str
    rule: Callable[..., Outcome]

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        return self.rule(tasks, provers, seed=seed)


MECHANISMS: dict[str, Mechanism] = {
    "prooph": ArrayMechanism("prooph", clear_prooph_arrays),
    "optimum": ArrayMechanism("optimum", clear_optimum_arrays),
    "prooph-reference": _Plain("prooph", clear_prooph_reference),
    "optimum-reference": _Plain("optimum", clear_optimum_reference),
}


def get_mechanism(name: str) -> Mechanism:
    """The mechanism registered under `name`; KeyError names the known ones."""
    try:
        return MECHANISMS[name]
    except KeyError:
        known = ", ".join(sorted(MECHANISMS))
        raise KeyError(f"unknown mechanism {name!r}; known: {known}") from None


__all__ = [
    "MECHANISMS",
    "ArrayClearing",
    "ArrayMechanism",
    "BidError",
    "Mechanism",
    "Outcome",
    "ProverBid",
    "TaskBid",
    "check_arrays",
    "check_bids",
    "clear_optimum_arrays",
    "clear_optimum_reference",
    "clear_prooph_arrays",
    "clear_prooph_reference",
    "get_mechanism",
    "outcome_from_arrays",
    "parse_bids",
    "tie_key",
    "tie_keyer",
]
