"""The deterministic market simulation and `proofmarket sim`."""

from __future__ import annotations

import json
import subprocess
import sys

from coordinator.report import round_summaries
from deploy.simulation import SimConfig, Simulation, run_simulation
from protocol.messages import ClearingResult, SettlementNotice

ROUND_KEYS = [
    "round",
    "tasks_bid",
    "provers_bid",
    "allocated_provers",
    "allocated_tasks",
    "user_price",
    "prover_price",
    "proofs_valid",
    "slashed_provers",
    "refunded_tasks",
    "surplus",
    "offers",
    "carried",
    "late",
    "refused",
]


def test_same_seed_same_report() -> None:
    """Two runs with one seed give byte-identical JSON; another seed gives another market."""
    config = SimConfig(rounds=12, provers=5, users=40, seed=11, faulty_provers=2)
    first = json.dumps(run_simulation(config).report)
    second = json.dumps(run_simulation(config).report)
    other = json.dumps(
        run_simulation(SimConfig(rounds=12, provers=5, users=40, seed=12, faulty_provers=2)).report
    )
    assert first == second
    assert first != other


def test_honest_market_conserves_money_and_proves_everything() -> None:
    """Without faults every allocated task is proven, nobody is slashed, money is conserved."""
    report = run_simulation(SimConfig(rounds=10, provers=4, users=30, seed=3)).report
    rounds = report["rounds"]
    assert isinstance(rounds, list)
    assert 10 == len(rounds)
    assert [r["allocated_tasks"] for r in rounds] == [r["proofs_valid"] for r in rounds]
    assert 0 == sum(r["slashed_provers"] for r in rounds)
    assert sum(r["allocated_tasks"] for r in rounds) > 0
    assert {"funded", "withdrawn", "total", "conserved"} == set(report["ledger"])  # type: ignore[arg-type]
    assert report["ledger"]["conserved"] is True  # type: ignore[index]
    assert report["invariants_ok"] is True


def test_faulty_provers_are_slashed_and_their_users_refunded() -> None:
    """Drop, corrupt and late provers are slashed; refunds match their batches' tasks."""
    report = run_simulation(
        SimConfig(rounds=12, provers=3, users=30, seed=9, faulty_provers=3)
    ).report
    rounds = report["rounds"]
    assert isinstance(rounds, list)
    assert sum(r["slashed_provers"] for r in rounds) > 0
    assert sum(r["allocated_tasks"] for r in rounds) == sum(
        r["refunded_tasks"] + r["proofs_valid"] for r in rounds
    )
    assert 0 == sum(r["proofs_valid"] for r in rounds)
    assert report["invariants_ok"] is True


def test_round_summaries_reads_published_messages() -> None:
    """The per-round summary is a function of clearing results and settlement notices."""
    result = ClearingResult(
        market="m",
        round=4,
        mechanism="prooph",
        tasks_bid=5,
        provers_bid=2,
        allocated_provers=1,
        allocated_tasks=2,
        user_price=7,
        prover_price=5,
        winners=["a" * 64],
        surplus=4,
        prove_deadline=0,
        offers=3,
        carried=1,
        refused={"late_bid": 2, "fee_above_p_max": 1},
    )
    notices = [
        SettlementNotice(market="m", round=4, outcome="charged", amount=7, task_id="a"),
        SettlementNotice(market="m", round=4, outcome="refunded", amount=10, task_id="b"),
        SettlementNotice(market="m", round=4, outcome="slashed", amount=20),
    ]
    [row] = round_summaries([*notices, result])
    assert ROUND_KEYS == list(row)
    late_and_refused = [2, {"late_bid": 2, "fee_above_p_max": 1}]
    assert [4, 5, 2, 1, 2, 7, 5, 1, 1, 1, 4, 3, 1, *late_and_refused] == list(row.values())


def test_cli_json_matches_the_documented_shape() -> None:
    """`proofmarket sim --json` (a real process) prints the issue's document, stably."""
    args = [
        sys.executable,
        "-m",
        "proofmarket",
        "sim",
        "--rounds",
        "4",
        "--provers",
        "3",
        "--users",
        "20",
        "--seed",
        "5",
        "--faulty-provers",
        "1",
        "--json",
    ]
    first = subprocess.run(args, capture_output=True, check=True).stdout
    second = subprocess.run(args, capture_output=True, check=True).stdout
    assert first == second
    doc = json.loads(first)
    assert ["rounds", "ledger", "invariants_ok", "slashed", "open_tasks"] == list(doc)
    assert [*ROUND_KEYS, "welfare", "optimum_welfare", "efficiency"] == list(doc["rounds"][0])
    assert [0, 1, 2, 3] == [r["round"] for r in doc["rounds"]]


def test_a_windowed_tally_keeps_only_its_last_rounds() -> None:
    """A live view's tally drops rows behind its window and ignores late news of them."""
    from coordinator.report import RoundTally
    from deploy.simulation import Simulation

    market = Simulation(
        SimConfig(rounds=40, provers=3, users=10, seed=5), tally=RoundTally(keep_rounds=4)
    )
    market.run()
    tally = market.result.tally
    assert [36, 37, 38, 39] == sorted(tally.rows)
    stale = SettlementNotice(market="sim", round=2, outcome="charged", amount=1, task_id="x")
    assert (None, [36, 37, 38, 39]) == (tally.note(stale), sorted(tally.rows))


def test_a_prove_window_shorter_than_the_bid_window_still_runs_every_round() -> None:
    """A round settled early on its proofs leaves a tick with nothing to do; the market goes on."""
    config = SimConfig(
        rounds=5,
        provers=4,
        users=10,
        seed=1,
        tasks_per_round=50,
        bid_window_ms=10_000,
        prove_window_ms=300,
        setup=0,
    )
    sim = Simulation(config)
    sim.run()
    report = sim.finish().report
    assert [0, 1, 2, 3, 4] == [row["round"] for row in report["rounds"]]  # type: ignore[attr-defined]


def test_a_windowed_tally_bounds_the_welfare_rows_too() -> None:
    """With a windowed tally the harness keeps that many welfare rows, not one per round."""
    from coordinator.report import RoundTally

    market = Simulation(
        SimConfig(rounds=60, provers=3, users=10, seed=5), tally=RoundTally(keep_rounds=4)
    )
    held = []
    while not market.done:
        market.run_round()
        held.append(len(market._observed.rows))
    assert len(held) >= 60 and 4 == max(held)
    rounds = market.finish().report["rounds"]
    assert isinstance(rounds, list) and [56, 57, 58, 59] == [r["round"] for r in rounds]
    assert all("efficiency" in r for r in rounds)
