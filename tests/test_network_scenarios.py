"""Example scenarios over a real broker, held side by side with their in-memory runs.

The coordinator is a real process (killed and restarted in coordinator-crash), the
participants talk to it over amqtt with real signatures and encryption; the clearing,
prices, assignments and settlements of every round, and the balances at the end, must
equal the in-memory run's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy.scenario import load_scenario, run_in_memory
from deploy.scenario.network import run_on_broker
from proofmarket.api import Market

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).parent.parent
OVER_A_BROKER = (
    "coordinator-crash",
    "broker-restart",
    "faulty-prover",
    "money",
    "carry-over",
    "paper-example-2",
    "mechanism-vcg",
)
"""One of each path the network takes differently: a crash, a broker restart, failed
batches, money in and out, carried bids, a deviation, a subsidy. The other examples differ
only in their mechanism or numbers, which the wire does not see; every one of them runs in
memory in the suite (tests/test_scenario_files.py) and over a broker with
`proofmarket scenario run --broker embedded FILE`."""
FILES = [ROOT / "examples" / "scenarios" / f"{name}.toml" for name in OVER_A_BROKER]


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_example_over_a_broker_equals_in_memory(path: Path, tmp_path: Path) -> None:
    """Round by round, the networked run of an example is its in-memory run."""
    scenario = load_scenario(path)
    memory = run_in_memory(scenario)
    network = await run_on_broker(scenario, "embedded", workdir=tmp_path)
    assert ([], []) == (network.problems, network.mismatches)
    assert memory.rounds == network.rounds
    assert memory.balances == network.balances
    assert memory.deposits == network.deposits


async def test_api_over_a_broker_reads_rounds_balances_and_proofs() -> None:
    """The Python API over a broker: a script's bids clear, its proofs arrive, money adds up."""
    async with Market(rounds=1, broker="embedded") as market:
        market.add_prover("p1", capacity=2, cost=1)
        market.add_prover("p2", capacity=2, cost=3)
        market.add_user("me", balance=100)
        market.bid("me", 0, [20, 20, 5])
        outcome = await market.round(0)
        assert ["me/0.0", "me/0.1"] == sorted(market.proofs("me"))
    assert ({"p1": ["me/0.0", "me/0.1"]}, {"me": 10}) == (outcome["assigned"], outcome["charged"])
    assert 90 == market.balance("me")


@pytest.mark.parametrize("mode", [[], ["--broker", "embedded"]], ids=["in-memory", "broker"])
def test_python_example_runs(mode: list[str]) -> None:
    """examples/scripted_market.py runs to a zero exit both ways."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "scripted_market.py"), *mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-2000:]
    assert "round 0: 4 tasks at 9" in done.stdout
