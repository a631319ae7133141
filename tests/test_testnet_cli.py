"""`proofmarket testnet`, the README's first command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_sim import ROUND_KEYS


def _testnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proofmarket", "testnet", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_testnet_json_reports_the_sim_fields_and_exits_0() -> None:
    """--json prints only the report: sim's round fields, a conserved ledger, all settled."""
    result = _testnet("--rounds", "2", "--provers", "3", "--users", "8", "--json")
    assert 0 == result.returncode, result.stderr
    report = json.loads(result.stdout)
    assert [0, 1] == [r["round"] for r in report["rounds"]]
    assert all(ROUND_KEYS == list(r) for r in report["rounds"])
    ledger = report["ledger"]
    assert (True, True, True) == (
        ledger["conserved"],
        report["invariants_ok"],
        report["all_rounds_settled"],
    )
    assert ledger["funded"] - ledger["withdrawn"] == ledger["total"]
    assert report["wall_s"] > 0
    assert {0} == set(report["processes"].values())


@pytest.mark.slow
def test_testnet_table_ends_with_a_verdict() -> None:
    """Without --json the run ends in a table of settled rounds, the ledger line and 'ok'."""
    result = _testnet("--rounds", "1", "--provers", "2", "--users", "4")
    assert 0 == result.returncode, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert "ok" == lines[-1]
    assert any(line.startswith("ledger: funded") for line in lines)
    assert any(line.startswith("round") and "surplus" in line for line in lines)


@pytest.mark.slow
def test_testnet_runs_vcg_with_a_subsidy_account() -> None:
    """--mechanism vcg: the plan names and funds a subsidy account; every round settles and
    the published surplus (charges - payments + subsidy) is never negative."""
    result = _testnet(
        "--rounds", "2", "--provers", "3", "--users", "8", "--mechanism", "vcg", "--json"
    )
    assert 0 == result.returncode, result.stderr
    report = json.loads(result.stdout)
    assert (True, True) == (report["invariants_ok"], report["all_rounds_settled"])
    assert sum(r["allocated_tasks"] for r in report["rounds"]) > 0
    assert all(r["surplus"] >= 0 for r in report["rounds"])


def test_testnet_refuses_posted_without_a_price() -> None:
    """--mechanism posted without --posted-price stops before starting anything."""
    result = _testnet("--mechanism", "posted")
    assert 2 == result.returncode
    assert "posted_price" in result.stderr
