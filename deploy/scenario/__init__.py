"""Scripted markets: scenario files, run in memory or over a real broker (docs/scenarios.md)."""

from deploy.scenario.memory import ScenarioSimulation, run_in_memory
from deploy.scenario.plan import ScenarioPlan, make_plan
from deploy.scenario.result import RunResult
from deploy.scenario.spec import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "RunResult",
    "Scenario",
    "ScenarioError",
    "ScenarioPlan",
    "ScenarioSimulation",
    "load_scenario",
    "make_plan",
    "parse_scenario",
    "run_in_memory",
]
