"""Retention and `proofmarket ledger`: retired records leave the live store, history verifies."""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from coordinator.audit import export_records, inspect_ledger, verify_ledger
from coordinator.record_log import fold, open_record_log
from coordinator.records import CoordinatorEvent, encode_record
from coordinator.retention import (
    Retention,
    archive_dir,
    read_head,
    read_records,
    segment_files,
)
from deploy.market import MarketFileError, load_ledger_settings, load_market
from deploy.simulation import SimConfig, Simulation
from proofmarket.cli import cli

CONFIG = SimConfig(rounds=14, provers=3, users=6, seed=8, faulty_provers=1)


def run_market(ledger: str, retention: Retention) -> tuple[Simulation, int]:
    """A market whose coordinator's records go round by round into `ledger`; records made."""
    events: list[CoordinatorEvent] = []
    market = Simulation(CONFIG, on_record=events.append)
    c = market.coordinator
    log = open_record_log(
        ledger,
        key=c.key,
        params=c.params,
        genesis=c.genesis,
        start_ms=c.start_ms,
        snapshot_every=40,
        retention=retention,
    )
    log.attach(c)
    written = 0
    try:
        while not market.done:
            market.run_round()
            fresh = [encode_record(e) for e in events[written:]]
            log.append_many(fresh, published=written + len(fresh) - 1)
            written += len(fresh)
    finally:
        log.close()
    return market, written


def reopened_state(ledger: str, market: Simulation) -> dict[str, object]:
    c = market.coordinator
    log = open_record_log(
        ledger, key=c.key, params=c.params, genesis=c.genesis, start_ms=c.start_ms
    )
    try:
        return fold(log, rounds=CONFIG.rounds).core.state()
    finally:
        log.close()


def test_archived_records_leave_the_live_store_and_the_history_verifies(tmp_path: Path) -> None:
    """With retention "archive", the live store starts late; archive + live replay and verify."""
    ledger = str(tmp_path / "ledger.sqlite")
    market, written = run_market(ledger, Retention("archive", audit_rounds=2))
    info = inspect_ledger(ledger)
    live, archive = info["live"], info["archive"]
    assert isinstance(live, dict) and isinstance(archive, dict)
    segments = archive["segments"]
    assert live["first"] > 0 and written == live["records"]
    assert 0 == segments[0][0] and live["first"] == segments[-1][1]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))
    assert market.coordinator.state() == reopened_state(ledger, market)
    assert [] == verify_ledger(ledger)
    assert list(range(written)) == [seq for seq, _ in export_records(ledger)]


def test_dropped_records_are_gone_but_a_restart_still_folds(tmp_path: Path) -> None:
    """With retention "drop", nothing is archived and the restart starts from a snapshot."""
    ledger = str(tmp_path / "ledger.sqlite")
    market, written = run_market(ledger, Retention("drop", audit_rounds=2))
    info = inspect_ledger(ledger)
    live = info["live"]
    assert isinstance(live, dict) and 0 < live["first"] < written
    assert not archive_dir(ledger).exists()
    assert market.coordinator.state() == reopened_state(ledger, market)
    assert [] == verify_ledger(ledger)


def test_a_tampered_archive_fails_verification(tmp_path: Path) -> None:
    """A segment missing one record no longer replays to its end snapshot: verify says so."""
    ledger = str(tmp_path / "ledger.sqlite")
    run_market(ledger, Retention("archive", audit_rounds=2))
    [path, *_] = segment_files(archive_dir(ledger))
    head, records = read_head(path), list(read_records(path))
    frames = [msgspec.msgpack.encode(head), *records[:-1]]  # one record fewer
    path.write_bytes(zlib.compress(b"".join(len(f).to_bytes(4, "big") + f for f in frames)))
    problems = verify_ledger(ledger)
    assert any("does not reach its end snapshot" in p for p in problems)
    outcome = CliRunner().invoke(cli, ["ledger", "verify", ledger])
    assert 1 == outcome.exit_code


def test_the_ledger_command_inspects_and_exports(tmp_path: Path) -> None:
    """`ledger inspect` prints the JSON description; `ledger export` one line per record."""
    ledger = str(tmp_path / "ledger.sqlite")
    _, written = run_market(ledger, Retention())
    runner = CliRunner()
    described = json.loads(runner.invoke(cli, ["ledger", "inspect", ledger]).output)
    assert (0, written) == (described["live"]["first"], described["live"]["records"])
    lines = runner.invoke(cli, ["ledger", "export", ledger]).output.splitlines()
    assert written == len(lines)
    assert {"seq", "kind", "event"} == set(json.loads(lines[0]))
    retired = runner.invoke(cli, ["ledger", "retire", ledger, "--audit-rounds", "3"])
    assert (0, True) == (retired.exit_code, "live records now start at" in retired.output)
    assert 0 == runner.invoke(cli, ["ledger", "verify", ledger]).exit_code


def test_the_market_file_sets_snapshots_and_retention(tmp_path: Path) -> None:
    """A [ledger] table is read beside the rules; a bad retention is refused by name."""
    good = tmp_path / "good.toml"
    good.write_text('p_max = 50\n[ledger]\nsnapshot_every = 100\nretention = "archive"\n')
    settings = load_ledger_settings(good)
    assert (50, 100, Retention("archive", 86_400)) == (
        load_market(good).p_max,
        settings.snapshot_every,
        settings.policy(),
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[ledger]\nretention = "shred"\n')
    with pytest.raises(MarketFileError) as refused:
        load_market(bad)
    assert "retention" == refused.value.key
