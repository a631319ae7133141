"""Snapshots: snapshot + tail folds to exactly the full replay; bad snapshots are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from coordinator.core import Coordinator
from coordinator.record_log import RecordLog, RunMeta, fold, open_record_log
from coordinator.records import CoordinatorEvent, encode_record
from coordinator.snapshot import SnapshotCorrupt, SnapshotForeign, capture, load
from coordinator.state import OpeningBalances
from coordinator.store import MemoryStore, SqliteStore
from deploy.simulation import SimConfig, Simulation
from protocol.events import Publish
from runtime.process import configure_logging


def recorded_market(config: SimConfig) -> tuple[Simulation, list[CoordinatorEvent]]:
    """A simulated market run to its end, with every event its coordinator recorded."""
    events: list[CoordinatorEvent] = []
    market = Simulation(config, on_record=events.append)
    market.run()
    return market, events


def blank_of(core: Coordinator) -> Coordinator:
    return Coordinator(core.params, core.genesis, core.key, core.start_ms, rounds=core.rounds_limit)


def fold_events(core: Coordinator, events: list[CoordinatorEvent]) -> list[object]:
    """Feed `events` to `core`; the messages they produce, in order."""
    return [e.message for ev in events for e in core.handle(ev) if isinstance(e, Publish)]


markets = st.builds(
    SimConfig,
    rounds=st.integers(2, 9),
    provers=st.integers(1, 4),
    users=st.integers(1, 7),
    seed=st.integers(0, 10_000),
    faulty_provers=st.integers(0, 1),
    tasks_per_round=st.integers(0, 2),
    carry_over=st.booleans(),
    epoch_rounds=st.integers(1, 4),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=markets, cut=st.floats(0, 1))
def test_snapshot_and_tail_fold_to_the_full_replay(config: SimConfig, cut: float) -> None:
    """For a random market cut at a random record, snapshot + tail == the full replay."""
    market, events = recorded_market(config)
    at = round(cut * len(events))
    full = blank_of(market.coordinator)
    full_head = fold_events(full, events[:at])
    full_tail = fold_events(full, events[at:])
    head = blank_of(market.coordinator)
    assert full_head == fold_events(head, events[:at])
    restored = load(blank_of(market.coordinator), capture(head, at), position=at)
    assert full_tail == fold_events(restored, events[at:])
    assert full.state() == restored.state()
    assert full.accounts.snapshot() == restored.accounts.snapshot()
    assert capture(full, len(events)) == capture(restored, len(events))
    assert market.coordinator.state() == restored.state()


def market_log(snapshot_every: int) -> tuple[Simulation, RecordLog]:
    """A finished small market whose records went through a snapshotting record log."""
    config = SimConfig(rounds=12, provers=3, users=6, seed=4, faulty_provers=1)
    market = Simulation(config)
    c = market.coordinator
    log = RecordLog(
        MemoryStore(),
        RunMeta(c.key, c.start_ms, c.params, c.genesis),
        snapshot_every=snapshot_every,
    )
    log.attach(c)
    market.on_record = lambda event: log.append_many([encode_record(event)])
    market.run()
    log.mark_published(len(log) - 1)
    return market, log


def test_a_restart_loads_the_newest_snapshot_and_replays_only_the_tail() -> None:
    """fold starts from the last snapshot, replays fewer records, and gets the same state."""
    market, log = market_log(snapshot_every=20)
    folded = fold(log, rounds=market.config.rounds)
    assert folded.snapshot == log.snapshots()[-1]
    assert len(log) - folded.snapshot == len(folded.tail) < 20
    assert market.coordinator.state() == folded.core.state()
    assert 3 == len(log.snapshots())  # only the newest few are kept


def test_a_snapshot_past_the_published_watermark_is_not_used() -> None:
    """Records whose messages may be unsent are replayed, so their messages are resent."""
    market, log = market_log(snapshot_every=20)
    newest = log.snapshots()[-1]
    log.store._published = newest - 5  # type: ignore[attr-defined]
    folded = fold(log, rounds=market.config.rounds)
    assert folded.snapshot is not None and folded.snapshot <= newest - 4
    full = fold(log, rounds=market.config.rounds, use_snapshot=False)
    assert [p.message for p in full.resend] == [p.message for p in folded.resend]
    assert full.core.state() == folded.core.state()


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_a_corrupt_or_foreign_snapshot_is_refused_and_the_full_log_used(damage: str) -> None:
    """A damaged or other run's snapshot is logged as refused; the full replay is used."""
    market, log = market_log(snapshot_every=10_000)
    position = len(log)
    body = capture(market.coordinator, position)
    if damage == "flip":
        body = body[:-3] + bytes([body[-3] ^ 0x01]) + body[-2:]
    elif damage == "truncate":
        body = body[: len(body) // 2]
    else:
        c = market.coordinator
        other = Coordinator(c.params, OpeningBalances(balances={"x": 1}), c.key, c.start_ms)
        body = capture(other, position)
    log.store.save_snapshot(position, body)
    configure_logging("console", "info")  # an earlier test may have raised the level
    with capture_logs() as logs:
        folded = fold(log, rounds=market.config.rounds)
    [refused] = [e for e in logs if e["event"] == "record_log.snapshot_refused"]
    assert (position, "replaying the full record log") == (refused["position"], refused["fallback"])
    assert (None, len(log)) == (folded.snapshot, len(folded.tail))
    assert market.coordinator.state() == folded.core.state()


def test_load_names_what_is_wrong() -> None:
    """Damage is SnapshotCorrupt; another run or another position is SnapshotForeign."""
    market, _ = recorded_market(SimConfig(rounds=3, provers=1, users=2, seed=1))
    body = capture(market.coordinator, 7)
    with pytest.raises(SnapshotCorrupt):
        load(blank_of(market.coordinator), b"PMSNAP\x01" + b"\x00" * 40)
    with pytest.raises(SnapshotForeign):
        load(blank_of(market.coordinator), body, position=8)
    c = market.coordinator
    with pytest.raises(SnapshotForeign):
        load(Coordinator(c.params, c.genesis, "f" * 64, c.start_ms, rounds=3), body)


def test_snapshots_survive_reopening_a_ledger_file(tmp_path: Path) -> None:
    """A SQLite ledger keeps its snapshots: reopened, the restart starts from one."""
    config = SimConfig(rounds=6, provers=2, users=4, seed=2)
    market = Simulation(config)
    c = market.coordinator
    ledger = str(tmp_path / "ledger.sqlite")
    kwargs = {"key": c.key, "params": c.params, "genesis": c.genesis, "start_ms": c.start_ms}
    log = open_record_log(ledger, snapshot_every=20, **kwargs)  # type: ignore[arg-type]
    log.attach(c)
    pending: list[bytes] = []
    market.on_record = lambda event: pending.append(encode_record(event))
    while not market.done:
        market.run_round()
        log.append_many(pending, published=len(log) + len(pending) - 1)
        pending.clear()
    log.close()
    reopened = open_record_log(ledger, snapshot_every=20, **kwargs)  # type: ignore[arg-type]
    try:
        assert reopened.snapshots() and isinstance(reopened.store, SqliteStore)
        folded = fold(reopened, rounds=config.rounds)
        assert folded.snapshot == reopened.snapshots()[-1]
        assert c.state() == folded.core.state()
    finally:
        reopened.close()


def test_forked_snapshots_are_filed_as_files_and_fold_to_the_same_state(tmp_path: Path) -> None:
    """Captured in forked children while the market goes on, they fold to its exact state."""
    config = SimConfig(rounds=8, provers=3, users=6, seed=5, faulty_provers=1)
    market = Simulation(config)
    c = market.coordinator
    ledger = str(tmp_path / "ledger.sqlite")
    kwargs = {"key": c.key, "params": c.params, "genesis": c.genesis, "start_ms": c.start_ms}
    log = open_record_log(ledger, snapshot_every=15, **kwargs)  # type: ignore[arg-type]
    log.attach(c, forked=True)
    filed: list[int] = []

    def write(event: CoordinatorEvent) -> None:
        log.append_many([encode_record(event)])
        # Filing waits for a child, never the write: the first write that makes one due
        # only starts it.
        done = log.snapshot_soon()
        filed.extend([] if done is None else [done])

    market.on_record = write
    market.run()
    last = log.finish_snapshot()
    filed.extend([] if last is None else [last])
    log.mark_published(len(log) - 1)
    store = log.store
    assert isinstance(store, SqliteStore)
    files = sorted(p.name for p in Path(store.snapshot_dir).iterdir())
    assert filed and filed[-1] == log.snapshots()[-1]
    assert [f"{p:012d}.snapshot" for p in log.snapshots()] == files  # pruned ones removed
    folded = fold(log, rounds=config.rounds)
    assert folded.snapshot == filed[-1]
    assert c.state() == folded.core.state()
    log.close()


def test_a_snapshot_whose_file_is_lost_is_refused_and_an_older_one_used(tmp_path: Path) -> None:
    """A file-backed snapshot that went missing reads as damaged; the fold falls back."""
    store = SqliteStore(tmp_path / "ledger.sqlite")
    try:
        store.append_many([b"a", b"b", b"c"])
        Path(store.snapshot_dir).mkdir()
        for position in (1, 2, 3):
            (Path(store.snapshot_dir) / f"{position}.snap").write_bytes(b"body %d" % position)
            store.save_snapshot_file(position, f"{position}.snap", keep=2)
        assert ([2, 3], ["2.snap", "3.snap"]) == (
            store.snapshots(),
            sorted(p.name for p in Path(store.snapshot_dir).iterdir()),
        )
        assert b"body 3" == store.read_snapshot(3)
        (Path(store.snapshot_dir) / "3.snap").unlink()
        assert b"" == store.read_snapshot(3)
        store.discard_before(3)
        assert [] == list(Path(store.snapshot_dir).iterdir())
        with pytest.raises(ValueError, match="no snapshot file"):
            store.save_snapshot_file(3, "missing.snap")
    finally:
        store.close()
