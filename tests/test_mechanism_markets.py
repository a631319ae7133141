"""Mechanisms as a market runs them: market-file parameters, the wire, coordinator, sim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from coordinator.core import Coordinator
from coordinator.state import OpeningBalances
from deploy.market import DEFAULT_MARKET, MarketFileError, dump_market, load_market
from deploy.simulation import SimConfig, run_simulation
from protocol.mechanism import COMPARED, market_mechanism
from protocol.mechanism.peers import CallMarket, PostedPrice
from protocol.mechanism.registry import ReserveProoph
from protocol.messages import MarketParams


def test_market_file_parameters_build_the_mechanism(tmp_path: Path) -> None:
    """posted_price, call_a_bps and reserve_cost in a market file reach the mechanism."""
    path = tmp_path / "m.toml"
    path.write_text(
        'mechanism = "posted"\nposted_price = 40\ncall_a_bps = 2500\nreserve_cost = 7\n'
    )
    rules = load_market(path)
    assert PostedPrice(40) == market_mechanism(rules)
    as_call = msgspec.structs.replace(rules, mechanism="call-market")
    assert CallMarket(2500) == market_mechanism(as_call)
    assert ReserveProoph(7) == market_mechanism(msgspec.structs.replace(rules, mechanism="prooph"))
    path.write_text(dump_market(rules))
    assert rules == load_market(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [('mechanism = "posted"\n', "posted_price"), ('mechanism = "vcg"\n', "subsidy_account")],
)
def test_market_file_refuses_a_mechanism_without_its_parameter(
    tmp_path: Path, text: str, key: str
) -> None:
    """A posted market without a price, a vcg market without a subsidy account: refused."""
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(MarketFileError) as caught:
        load_market(path)
    assert key == caught.value.key


def test_default_rules_encode_as_before() -> None:
    """Unset mechanism parameters are left off the wire: an old decoder reads new defaults."""

    class OldParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
        market: str
        p_max: int
        epoch_rounds: int
        capacity_factor: int
        mechanism: str
        difficulty: int
        setup: int
        bid_window_ms: int
        prove_window_ms: int

    wire = msgspec.msgpack.encode(DEFAULT_MARKET)
    old = msgspec.msgpack.decode(wire, type=OldParams)
    assert msgspec.msgpack.encode(old) == wire
    assert DEFAULT_MARKET == msgspec.msgpack.decode(wire, type=MarketParams)


def test_coordinator_refuses_vcg_without_a_subsidy_account() -> None:
    """A live VCG market with nobody to pay its deficit does not start."""
    rules = msgspec.structs.replace(DEFAULT_MARKET, mechanism="vcg")
    with pytest.raises(ValueError, match="subsidy_account"):
        Coordinator(rules, OpeningBalances(balances={}, deposits={}), "c" * 64, 0)


@pytest.mark.parametrize("name", COMPARED)
def test_every_mechanism_runs_a_whole_market(name: str) -> None:
    """Each mechanism clears, proves and settles a simulated market; money is conserved,
    and no round's welfare tops the optimum's on the same bids."""
    config = SimConfig(rounds=4, provers=4, users=25, seed=2, mechanism=name, posted_price=45)
    report = run_simulation(config).report
    rows = report["rounds"]
    assert isinstance(rows, list)
    assert report["invariants_ok"] is True
    assert sum(r["allocated_tasks"] for r in rows) > 0
    assert [r["allocated_tasks"] for r in rows] == [r["proofs_valid"] for r in rows]
    assert all(r["welfare"] <= r["optimum_welfare"] for r in rows)
    if name in ("optimum", "vcg"):
        assert all(r["efficiency"] == 1.0 for r in rows)


def test_sim_cli_takes_mechanism_and_market_file(tmp_path: Path) -> None:
    """`sim --market FILE --mechanism NAME` (a real process) runs that rule and reports welfare."""
    path = tmp_path / "m.toml"
    path.write_text('market = "lab"\nposted_price = 30\n')
    args = [sys.executable, "-m", "proofmarket", "sim", "--rounds", "3", "--users", "20"]
    args += ["--market", str(path), "--mechanism", "posted", "--json"]
    doc = json.loads(subprocess.run(args, capture_output=True, check=True).stdout)
    assert [30, 30, 30] == [r["user_price"] for r in doc["rounds"] if r["allocated_tasks"]]
    assert all(0 <= r["efficiency"] <= 1 for r in doc["rounds"])
