"""A scenario in one process: the simulation harness (fake clock, in-memory bus) driving
the scenario's scripted participants and a real coordinator core.

A coordinator restart is a real one in miniature: the core is thrown away and rebuilt
from the events it recorded, as the service rebuilds it from its ledger. A broker restart
changes nothing here (the in-memory bus loses nothing); over a real broker it does.
"""

from __future__ import annotations

from collections.abc import Callable

from coordinator.core import Coordinator
from coordinator.record_log import RecordLog, RunMeta, fold
from coordinator.records import CoordinatorEvent, encode_record
from coordinator.report import market_report
from coordinator.store import MemoryStore
from deploy.scenario.observe import Observer
from deploy.scenario.parties import make_parties
from deploy.scenario.plan import COORDINATOR, ScenarioPlan, make_plan
from deploy.scenario.result import RunResult, check, honest_problems
from deploy.scenario.spec import Scenario
from deploy.simulation import Simulation


class ScenarioSimulation(Simulation):
    """The simulation harness over a scenario's parties; `run()` plays every round."""

    def __init__(self, plan: ScenarioPlan, observer: Observer | None = None) -> None:
        scenario = plan.scenario
        self.plan = plan
        self.observer = observer or Observer(plan.names)
        self.keep_inputs = False
        self.records: list[CoordinatorEvent] = []
        self.on_record: Callable[[CoordinatorEvent], None] | None = self.records.append
        self.coordinator_key = plan.coordinator.public_hex
        scripted = make_parties(scenario, plan.keys, self.coordinator_key, self.observer)
        self.by_name = scripted
        self.parties = {party.key: party for party in scripted.values()}
        self.restarts = 0  # coordinator restarts carried out
        self._restarts = {e.round for e in scenario.events if e.kind == "coordinator_restart"}
        start = plan.params.bid_window_ms
        self._begin(self._new_coordinator([]), None, start)

    def _new_coordinator(self, records: list[CoordinatorEvent]) -> Coordinator:
        """A core folded from `records` by the one replay path a restarted service uses."""
        params = self.plan.params
        store = MemoryStore()
        if records:
            store.append_many([encode_record(e) for e in records], published=len(records) - 1)
        meta = RunMeta(
            key=self.coordinator_key,
            start_ms=params.bid_window_ms,
            params=params,
            genesis=self.plan.genesis,
        )
        signer = self.plan.coordinator.sign if params.signed_ties else None
        log = RecordLog(store, meta)
        try:
            folded = fold(log, rounds=self.plan.scenario.rounds, keep_tail=False, tie_signer=signer)
        finally:
            log.close()
        return folded.core

    def step(self) -> None:
        super().step()
        bidding = self.coordinator.bidding_round
        if bidding in self._restarts:
            self._restarts.discard(bidding)
            self._restart_coordinator()
            self._rearm()  # the rebuilt core's next deadline

    def _restart_coordinator(self) -> None:
        """Throw the core away and rebuild it from its records, as a restarted service does."""
        tally = self.result.tally
        self._everyone = list(self.parties)
        self.coordinator = self._new_coordinator(list(self.records))
        self.restarts += 1
        self.result.coordinator = self.coordinator
        self.result.tally = tally

    def outcome(self) -> RunResult:
        scenario = self.plan.scenario
        report = market_report(self.coordinator, self.result.tally)
        report["finished"] = self.coordinator.finished
        names = {k: n for k, n in self.plan.names.items() if n != COORDINATOR}
        result = RunResult(
            scenario=scenario.name,
            mode="in-memory",
            rounds=self.observer.outcomes(scenario.rounds),
            balances={n: self.coordinator.balance(k) for k, n in names.items()},
            deposits={
                p.name: self.coordinator.deposit(self.plan.keys[p.name]) for p in scenario.provers
            },
            problems=honest_problems(report, self.plan.honest_provers, names, scenario.rounds),
        )
        result.mismatches = check(scenario, result)
        return result


def run_in_memory(scenario: Scenario) -> RunResult:
    """Play `scenario` to the end in memory and check its expectations."""
    market = ScenarioSimulation(make_plan(scenario))
    market.run()
    return market.outcome()


class MemoryRun:
    """The in-memory market with the same start/until/finish steps as BrokerRun."""

    def __init__(self, scenario: Scenario) -> None:
        self.plan = make_plan(scenario)
        self.market = ScenarioSimulation(self.plan)

    @property
    def observer(self) -> Observer:
        return self.market.observer

    async def start(self) -> None:
        """Nothing to start: the fake clock moves only when asked to."""

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Step the market until `done()` holds or it ends (`timeout` is for the network)."""
        while not done() and not self.market.done:
            self.market.step()
        return done()

    async def finish(self) -> RunResult:
        self.market.run()
        return self.market.outcome()

    async def close(self) -> None:
        """Nothing to stop."""

    def balance(self, name: str) -> int:
        return self.market.coordinator.balance(self.plan.keys[name])
