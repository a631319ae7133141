"""Keys, rules and genesis of a scenario: the same for the in-memory and networked runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from coordinator.state import OpeningBalances
from deploy.scenario.parties import scenario_identity
from deploy.scenario.spec import FAUCET, SUBSIDY, Scenario
from protocol.identity import Identity
from protocol.messages import MarketParams

COORDINATOR = "coordinator"


@dataclass(frozen=True, slots=True)
class ScenarioPlan:
    """Every participant's identity, the market's rules with keys filled in, and the genesis."""

    scenario: Scenario
    identities: Mapping[str, Identity]  # participant name -> identity (coordinator included)
    params: MarketParams
    genesis: OpeningBalances

    @property
    def keys(self) -> dict[str, str]:
        return {name: i.public_hex for name, i in self.identities.items()}

    @property
    def names(self) -> dict[str, str]:
        """Public key -> participant name."""
        return {i.public_hex: name for name, i in self.identities.items()}

    @property
    def coordinator(self) -> Identity:
        return self.identities[COORDINATOR]

    @property
    def honest_provers(self) -> list[str]:
        """Keys of provers no fault event touches (offline ones are honest: they do not bid)."""
        faulty = {e.party for e in self.scenario.events if e.kind in ("drop", "corrupt", "late")}
        return [self.keys[p.name] for p in self.scenario.provers if p.name not in faulty]


def make_plan(scenario: Scenario) -> ScenarioPlan:
    names = [COORDINATOR, *scenario.names, *scenario.extra_parties]
    identities = {n: scenario_identity(scenario.seed, n) for n in names}
    keys = {n: i.public_hex for n, i in identities.items()}
    params = scenario.params
    for field, name in scenario.market_names.items():
        params = msgspec.structs.replace(params, **{field: keys[name]})
    balances = {keys[u.name]: u.balance for u in scenario.users}
    if SUBSIDY in keys:
        # VCG's deficit: enough for every fee a user could bid, twice over.
        balances[keys[SUBSIDY]] = 2 * max(1, sum(balances.values()))
    if FAUCET in keys:
        balances[keys[FAUCET]] = 0
    genesis = OpeningBalances(
        balances=balances,
        deposits={keys[p.name]: p.deposit for p in scenario.provers},
        faucet=keys.get(FAUCET),
    )
    return ScenarioPlan(scenario, identities, params, genesis)
