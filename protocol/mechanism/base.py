"""The mechanism contract: a pure function from a round's bids to an outcome.

Following the general model (papers/proposer-selection-general-model.txt), a mechanism
maps signals (bids) to an allocation and payments and nothing else: no clock, no IO,
no global randomness. Any tie-breaking randomness arrives as `seed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class BidError(ValueError):
    """A bid that no mechanism can accept; the message names the bid and the problem."""


@dataclass(frozen=True, slots=True)
class TaskBid:
    """A user's bid: one proving task and the most the user will pay for it."""

    id: str
    fee: int


@dataclass(frozen=True, slots=True)
class ProverBid:
    """A prover's bid: how many tasks it proves this round, at what cost per task."""

    id: str
    capacity: int
    cost: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """Who trades and at what prices. Money is integer; the maps hold allocated ids only."""

    mechanism: str
    assignments: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    charges: Mapping[str, int] = field(default_factory=dict)
    payments: Mapping[str, int] = field(default_factory=dict)
    user_price: int | None = None
    prover_price: int | None = None
    welfare: int = 0

    @property
    def allocated_provers(self) -> int:
        return len(self.assignments)

    @property
    def allocated_tasks(self) -> int:
        return sum(len(batch) for batch in self.assignments.values())

    @property
    def surplus(self) -> int:
        return sum(self.charges.values()) - sum(self.payments.values())


class Mechanism(Protocol):
    """A clearing rule. Implementations are stateless and deterministic in (bids, seed)."""

    @property
    def name(self) -> str: ...

    def clear(
        self,
        tasks: Sequence[TaskBid],
        provers: Sequence[ProverBid],
        *,
        seed: bytes = b"",
    ) -> Outcome: ...
