"""Clearing mechanisms: pure functions from a round's bids to an outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.mechanism.base import BidError, Mechanism, Outcome, ProverBid, TaskBid
from protocol.mechanism.reference import clear_prooph_reference


@dataclass(frozen=True)
class _Prooph:
    name: str = "prooph"

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        return clear_prooph_reference(tasks, provers, seed=seed)


MECHANISMS: dict[str, Mechanism] = {"prooph": _Prooph()}


def get_mechanism(name: str) -> Mechanism:
    """The mechanism registered under `name`; KeyError names the known ones."""
    try:
        return MECHANISMS[name]
    except KeyError:
        raise KeyError(f"unknown mechanism {name!r}; known: {', '.join(sorted(MECHANISMS))}") from None


__all__ = ["BidError", "Mechanism", "Outcome", "ProverBid", "TaskBid", "get_mechanism"]
