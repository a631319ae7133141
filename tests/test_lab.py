"""The mechanism lab: the paper's examples as agent gains, a tiny run, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from deploy.lab.agents import capacity_misreport, fake_tasks, gain, sybil_split
from deploy.lab.markets import Market, Prior, Shape
from deploy.lab.report import PLOTS, write_report
from deploy.lab.run import LabConfig, run_lab
from protocol.mechanism import COMPARED, ProverBid, TaskBid, make_mechanism

PROOPH = make_mechanism("prooph")


def market(fees: tuple[int, ...], bids: tuple[tuple[int, int], ...], attacker: int) -> Market:
    tasks = tuple(TaskBid(f"t{i}", f) for i, f in enumerate(fees))
    provers = tuple(ProverBid(f"p{j}", s, c) for j, (s, c) in enumerate(bids))
    return Market(tasks, provers, attacker, None, None, b"")


def play(m: Market, plan: object) -> tuple[int, int]:
    assert plan is not None
    return gain(PROOPH, m, plan, PROOPH.clear(m.tasks, m.provers))  # type: ignore[arg-type]


def test_example_2_capacity_misreport_gains_6_and_costs_welfare() -> None:
    """Example 2: prover 1 bidding capacity 1 of 4 gains 10 - 4 = 6; welfare falls 40 -> 28."""
    m = market((10, 10, 10, 10, 9, 9, 1, 1), ((4, 0), (2, 1), (2, 10)), attacker=0)
    assert (6, -12) == play(m, capacity_misreport(0.25)(m, Shape()))


def test_example_3_fake_tasks_gain_1() -> None:
    """Example 3: four fake tasks at 9 lift prover 1 from 8 to 36 - 27 = 9."""
    m = market((10, 10, 10, 2, 2, 2, 2, 2), ((4, 0), (2, 2), (2, 9)), attacker=0)
    shape = Shape(fees=Prior("uniform", 9, 9))
    assert 1 == play(m, fake_tasks(1.0, 0.5)(m, shape))[0]


def test_example_4_sybil_split_gains_1_and_raises_welfare() -> None:
    """Example 4 / Prop. 6: prover 2 split into (1, 2) and (1, 3) gains 1, welfare rises 1."""
    m = market((10, 10, 10, 3, 3, 3, 3, 3), ((4, 0), (2, 2), (2, 9)), attacker=1)
    shape = Shape(costs=Prior("uniform", 0, 1))
    assert (1, 1) == play(m, sybil_split(0.5, 0.5)(m, shape))


TINY = replace(
    LabConfig.quick(seed=3),
    markets=3,
    train=2,
    shape=Shape(tasks=10, provers=3),
    rounds=2,
    epoch_markets=1,
    epoch_rounds=1,
)


def test_tiny_run_measures_every_mechanism_and_deviation(tmp_path: Path) -> None:
    """A tiny run covers every mechanism; informed gains are >= 0; same seed, same figures;
    it writes five PNGs and a report that links them."""
    doc = run_lab(TINY)
    assert list(COMPARED) == list(doc["mechanisms"])  # type: ignore[arg-type]
    mechs = doc["mechanisms"]
    assert isinstance(mechs, dict)
    assert 1.0 == mechs["optimum"]["efficiency"] == mechs["vcg"]["efficiency"]
    deviations = doc["deviations"]
    assert isinstance(deviations, dict)
    assert 5 == len(deviations)
    for by in deviations.values():
        assert all(v["informed"]["mean_gain"] >= 0 for v in by.values())
    assert json.dumps(doc) == json.dumps(run_lab(TINY))
    report = write_report(doc, tmp_path)
    for name in PLOTS.values():
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
        assert f"./{name}" in report.read_text()


def test_cli_json_and_out(tmp_path: Path) -> None:
    """`proofmarket lab --json --out DIR` (a real process) prints the document, writes plots."""
    args = [sys.executable, "-m", "proofmarket", "lab", "--markets", "2", "--train", "2"]
    args += ["--tasks", "8", "--provers", "3", "--rounds", "2", "--epoch-markets", "1"]
    args += ["--epoch-rounds", "1", "--json", "--out", str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert 0 == done.returncode, done.stderr
    doc = json.loads(done.stdout)
    assert ["config", "mechanisms", "deviations", "epochs"] == list(doc)
    assert 8 == doc["config"]["tasks"]
    assert (tmp_path / "report.md").exists()


def test_a_profitable_split_can_lower_welfare() -> None:
    """Against Prop. 6 as stated: prover (4, 3), already allocated, splits into (1, 3) and
    (3, 9); it gains 6 - 4 = 2 while welfare falls from 33 to 23 (costs all distinct)."""
    m = market((12, 11, 11, 11, 10, 4, 4, 1), ((4, 28), (4, 3), (2, 4)), attacker=1)
    shape = Shape(costs=Prior("uniform", 0, 30))
    assert (2, -10) == play(m, sybil_split(0.25, 0.2)(m, shape))
