"""Clearing mechanisms: pure functions from a round's bids to an outcome.

Every mechanism is registered by name (protocol.mechanism.registry); `make_mechanism`
builds one with a market's parameters. A new rule is one more builder there, implementing
base.Mechanism.
"""

from __future__ import annotations

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
from protocol.mechanism.registry import (
    COMPARED,
    MECHANISMS,
    PROPERTIES,
    MechanismParams,
    make_mechanism,
    market_mechanism,
)
from protocol.mechanism.ties import tie_key, tie_keyer


def get_mechanism(name: str) -> Mechanism:
    """The mechanism registered under `name`, default parameters; KeyError names the known."""
    return make_mechanism(name)


__all__ = [
    "COMPARED",
    "MECHANISMS",
    "PROPERTIES",
    "ArrayClearing",
    "ArrayMechanism",
    "BidError",
    "Mechanism",
    "MechanismParams",
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
    "make_mechanism",
    "market_mechanism",
    "outcome_from_arrays",
    "parse_bids",
    "tie_key",
    "tie_keyer",
]
