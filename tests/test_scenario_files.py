"""Scenario files: loading, one-line errors for bad files, and every example in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from coordinator.report import market_report
from deploy.scenario import ScenarioError, load_scenario, make_plan, parse_scenario, run_in_memory
from deploy.scenario.memory import ScenarioSimulation
from deploy.scenario.result import honest_problems
from proofmarket.cli import cli

EXAMPLES = Path(__file__).parent.parent / "examples" / "scenarios"
FILES = sorted(EXAMPLES.glob("*.toml"))

BASE = """
rounds = 1
[provers.p1]
capacity = 2
cost = 1
[users.u1]
bids = { 0 = [10] }
"""


def test_every_example_is_found() -> None:
    """The suite sees the four paper examples and the others (a glob that found none would pass)."""
    names = {f.stem for f in FILES}
    assert {f"paper-example-{i}" for i in range(1, 5)} <= names
    assert {"faulty-prover", "coordinator-crash", "broker-restart", "carry-over"} <= names
    assert {"thin-market", "money"} <= names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_example_holds_in_memory(path: Path) -> None:
    """Each example's expectations hold in memory and nobody honest loses."""
    result = run_in_memory(load_scenario(path))
    assert ([], []) == (result.problems, result.mismatches)


def test_every_non_default_mechanism_has_a_scenario() -> None:
    """One example per registered market mechanism besides Proo-phi (references excluded)."""
    from protocol.mechanism import MECHANISMS

    wanted = {m for m in MECHANISMS if not m.endswith("-reference") and m != "prooph"}
    covered = {load_scenario(f).params.mechanism for f in FILES}
    assert wanted <= covered


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 1\n" + BASE, "colour"),
        (BASE + "colour = 1\n", "users.u1.colour"),
        (BASE.replace("rounds = 1", "rounds = 0"), "rounds"),
        (BASE + "[market]\nmechanism = 'nope'\n", "market.mechanism"),
        (BASE + "[market]\np_max = 0\n", "market.p_max"),
        (BASE.replace("capacity = 2", "capacity = -1"), "provers.p1.capacity"),
        (BASE.replace("bids = { 0 = [10] }", "bids = { 3 = [10] }"), "users.u1.bids.3"),
        (BASE.replace("bids = { 0 = [10] }", "bids = { 0 = ['x'] }"), "users.u1.bids.0"),
        (BASE + "[[events]]\nround = 0\nkind = 'explode'\n", "events[0].kind"),
        (BASE + "[[events]]\nround = 0\nkind = 'drop'\nparty = 'u1'\n", "events[0].party"),
        (BASE + "[[events]]\nround = 0\nkind = 'offline'\nparty = 'p1'\n", "events[0].until"),
        (BASE + "[[expect]]\nround = 0\npaid = { zed = 1 }\n", "expect[0].paid.zed"),
        (BASE + "[[expect]]\nuser_price = 3\n", "expect[0].user_price"),
        (BASE + "[[expect]]\nround = 0\nbalances = { u1 = 1 }\n", "expect[0].balances"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    """A bad scenario exits 2 with one line that starts with the offending key."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert key == caught.value.key
    out = CliRunner().invoke(cli, ["scenario", "run", str(path)])
    assert 2 == out.exit_code
    lines = out.output.strip().splitlines()
    assert 1 == len(lines)
    assert f"bad scenario file {path}: {key}: " in lines[0]


def test_not_toml_is_one_line(tmp_path: Path) -> None:
    """A file that is not TOML is refused on one line naming the file."""
    path = tmp_path / "broken.toml"
    path.write_text("rounds = = 2\n")
    out = CliRunner().invoke(cli, ["scenario", "check", str(path)])
    assert (2, 1) == (out.exit_code, len(out.output.strip().splitlines()))
    assert "not a TOML file" in out.output


def test_failed_expectation_exits_1_with_expected_and_actual(tmp_path: Path) -> None:
    """A wrong expectation fails the run and prints what was expected against what happened."""
    text = (EXAMPLES / "paper-example-1.toml").read_text()
    path = tmp_path / "wrong.toml"
    path.write_text(text.replace("user_price = 9", "user_price = 8"))
    out = CliRunner().invoke(cli, ["scenario", "run", str(path)])
    assert 1 == out.exit_code
    assert "FAILED expect[0] (round 0) user_price: expected 8, got 9" in out.output


def test_json_output_holds_the_rounds() -> None:
    """--json prints one document with each round's clearing and money."""
    import json

    out = CliRunner().invoke(
        cli, ["scenario", "run", str(EXAMPLES / "paper-example-1.toml"), "--json"]
    )
    assert 0 == out.exit_code, out.output
    doc = json.loads(out.output)
    assert (True, 9, {"p1": 4}) == (
        doc["ok"],
        doc["rounds"][0]["user_price"],
        doc["rounds"][0]["paid"],
    )


def test_coordinator_restart_in_memory_changes_nothing() -> None:
    """A coordinator rebuilt from its records mid-market gives the outcome of no restart."""
    path = EXAMPLES / "coordinator-crash.toml"
    crashed = load_scenario(path)
    market = ScenarioSimulation(make_plan(crashed))
    market.run()
    assert 1 == market.restarts
    document = _document(path)
    document["events"] = []
    calm = run_in_memory(parse_scenario(document))
    assert calm.rounds == market.outcome().rounds


def test_a_slashed_honest_prover_is_an_honest_loss() -> None:
    """honest_problems names a slashed prover counted as honest (the faulty one, here)."""
    plan = make_plan(load_scenario(EXAMPLES / "faulty-prover.toml"))
    market = ScenarioSimulation(plan)
    market.run()
    report = market_report(market.coordinator, market.result.tally)
    everyone = [plan.keys[p.name] for p in plan.scenario.provers]
    problems = honest_problems(report, everyone, plan.names, plan.scenario.rounds)
    assert ["honest prover p1 was slashed", "honest prover p2 was slashed",
            "honest prover p3 was slashed"] == sorted(problems)  # fmt: skip


def _document(path: Path) -> dict[str, object]:
    import tomllib

    with path.open("rb") as file:
        return tomllib.load(file)


def test_the_first_scenario_in_the_docs_runs(tmp_path: Path) -> None:
    """docs/scenarios.md's Example 1 file, copied as a reader would, passes; so does its diff."""
    text = (Path(__file__).parent.parent / "docs" / "scenarios.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "ex1.toml"
    path.write_text(block)
    out = CliRunner().invoke(cli, ["scenario", "run", str(path)])
    assert (0, True) == (out.exit_code, "ok: 0 failed expectations, 0 honest losses" in out.output)
    path.write_text(block.replace("user_price = 9", "user_price = 8"))
    out = CliRunner().invoke(cli, ["scenario", "run", str(path)])
    assert "FAILED expect[0] (round 0) user_price: expected 8, got 9" in out.output
