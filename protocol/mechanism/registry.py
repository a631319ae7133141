"""Mechanisms by name, built with a market's parameters; and what each one guarantees.

`make_mechanism(name, params)` is the one way a market (clear, sim, the coordinator)
turns its rules into a Mechanism. The parameters each apply to one rule: `posted_price`
to `posted`, `call_a_bps` to `call-market`, `reserve_cost` to `prooph`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np

from protocol.mechanism.arrays import clear_optimum_arrays, clear_prooph_arrays
from protocol.mechanism.base import Mechanism, Outcome, ProverBid, TaskBid
from protocol.mechanism.clearing import (
    ArrayMechanism,
    IndexedOutcome,
    TaskColumns,
    check_columns,
    clear_objects,
    indexed_from_arrays,
    prover_arrays,
)
from protocol.mechanism.peers import BPS, CallMarket, McAfee, PayAsBid, PostedPrice
from protocol.mechanism.reference import clear_optimum_reference, clear_prooph_reference
from protocol.mechanism.vcg import Vcg


class _Rules(Protocol):
    """Anything carrying a market's mechanism parameters (protocol.messages.MarketParams)."""

    @property
    def mechanism(self) -> str: ...
    @property
    def posted_price(self) -> int | None: ...
    @property
    def call_a_bps(self) -> int: ...
    @property
    def reserve_cost(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class MechanismParams:
    """A market's mechanism parameters; each is read only by the rule it belongs to."""

    posted_price: int | None = None
    call_a_bps: int = BPS // 2
    reserve_cost: int | None = None

    @classmethod
    def of(cls, rules: _Rules) -> MechanismParams:
        return cls(rules.posted_price, rules.call_a_bps, rules.reserve_cost)


@dataclass(frozen=True)
class ReserveProoph:
    """Proo-phi with a reserve: a virtual prover bidding `reserve_cost` for n + 1 units.

    The virtual bid comes last in cost order among equal costs, so it loses every tie.
    Past it S_j > n, so ell stops before it: it can set the prover price (when it is
    prover ell + 1), never trade. A market with one honest prover and more task bids
    than its capacity therefore trades, at the reserve.
    """

    reserve_cost: int
    name: str = "prooph"

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
        n = len(tasks.ids)
        clearing = clear_prooph_arrays(
            tasks.fees,
            np.append(caps, np.int64(n + 1)),
            np.append(costs, np.int64(self.reserve_cost)),
            tasks.tie_order(),
        )
        if len(ps) in clearing.provers.tolist():
            raise AssertionError("the virtual reserve prover was allocated")
        return indexed_from_arrays(self.name, clearing, n, [p.id for p in ps])


@dataclass(frozen=True)
class _Plain:
    """A mechanism given as a plain function over bid objects."""

    name: str
    rule: Callable[..., Outcome]

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        return self.rule(tasks, provers, seed=seed)


def _prooph(params: MechanismParams) -> Mechanism:
    if params.reserve_cost is None:
        return ArrayMechanism("prooph", clear_prooph_arrays)
    return ReserveProoph(params.reserve_cost)


_BUILDERS: Final[dict[str, Callable[[MechanismParams], Mechanism]]] = {
    "prooph": _prooph,
    "mcafee": lambda _: McAfee(),
    "posted": lambda p: PostedPrice(p.posted_price),
    "pay-as-bid": lambda _: PayAsBid(),
    "call-market": lambda p: CallMarket(p.call_a_bps),
    "vcg": lambda _: Vcg(),
    "optimum": lambda _: ArrayMechanism("optimum", clear_optimum_arrays),
    "prooph-reference": lambda _: _Plain("prooph", clear_prooph_reference),
    "optimum-reference": lambda _: _Plain("optimum", clear_optimum_reference),
}

# The mechanisms a market can run and compare, in the order tables list them.
COMPARED: Final = ("prooph", "mcafee", "posted", "pay-as-bid", "call-market", "vcg", "optimum")

# Which of budget balance, individual rationality and the two truthfulness properties
# each rule has (tests/test_mechanism_peers.py checks every entry both ways). McAfee's
# PDSIC holds for unit capacities only; with capacities a prover's own unit can set its price.
PROPERTIES: Final[dict[str, frozenset[str]]] = {
    "prooph": frozenset({"BB", "IR", "UDSIC", "PDSIC"}),
    "mcafee": frozenset({"BB", "IR", "UDSIC"}),
    "posted": frozenset({"BB", "IR", "UDSIC", "PDSIC"}),
    "pay-as-bid": frozenset({"BB", "IR"}),
    "call-market": frozenset({"BB", "IR"}),
    "vcg": frozenset({"IR", "UDSIC", "PDSIC"}),
    "optimum": frozenset({"BB", "IR"}),
}


def make_mechanism(name: str, params: MechanismParams | None = None) -> Mechanism:
    """The mechanism registered under `name`, with `params`; KeyError names the known ones."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        known = ", ".join(sorted(_BUILDERS))
        raise KeyError(f"unknown mechanism {name!r}; known: {known}") from None
    return builder(params or MechanismParams())


def market_mechanism(rules: _Rules) -> Mechanism:
    """The mechanism a market's rules name, built with the rules' parameters."""
    return make_mechanism(rules.mechanism, MechanismParams.of(rules))


MECHANISMS: Final[dict[str, Mechanism]] = {name: make_mechanism(name) for name in _BUILDERS}
