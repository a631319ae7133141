"""Event sourcing: record serialisation, and crash-and-replay through the SQLite record store."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_coordinator_helpers import (
    FAUCET,
    PROVERS,
    START,
    USERS,
    Market,
    genesis,
    params,
    replayed,
)

from coordinator.core import Coordinator
from coordinator.records import CoordinatorEvent, decode_record, encode_record
from coordinator.store import SqliteStore
from deploy.simulation import SimConfig, run_simulation
from protocol.events import Record

CONFIG = SimConfig(rounds=8, provers=6, users=12, seed=9, faulty_provers=3, carry_over=True)


@pytest.fixture(scope="module")
def script() -> tuple[Coordinator, list[CoordinatorEvent]]:
    """A small faulty market's full input script and its uninterrupted coordinator."""
    result = run_simulation(CONFIG, keep_inputs=True)
    return result.coordinator, result.inputs


def _fresh(c: Coordinator) -> Coordinator:
    return Coordinator(c.params, c.genesis, c.key, c.start_ms, rounds=c.rounds_limit)


def test_records_round_trip_through_msgpack(
    script: tuple[Coordinator, list[CoordinatorEvent]],
) -> None:
    """Every kind of input event encodes to bytes and decodes back equal."""
    _, inputs = script
    assert inputs == [decode_record(encode_record(e)) for e in inputs]


def test_replay_of_records_reaches_same_state(
    script: tuple[Coordinator, list[CoordinatorEvent]],
) -> None:
    """Restoring from the recorded events alone gives the uninterrupted run's state."""
    finished, inputs = script
    live = _fresh(finished)
    records: list[CoordinatorEvent] = []
    for event in inputs:
        records += [e.event for e in live.handle(event) if isinstance(e, Record)]
    restored = replayed(
        Coordinator(
            finished.params,
            finished.genesis,
            finished.key,
            finished.start_ms,
            rounds=finished.rounds_limit,
        ),
        records,
    )
    assert finished.state() == live.state()
    assert finished.state() == restored.state()


def test_crash_after_any_record_then_reopen_finishes_identically(
    script: tuple[Coordinator, list[CoordinatorEvent]], tmp_path: Path
) -> None:
    """Cut after every k-th record, reopen the SQLite file, restore, finish: same end state."""
    finished, inputs = script
    total_records = sum(1 for e in _drive(_fresh(finished), inputs, None) if isinstance(e, Record))
    cuts = sorted({1, 2, total_records - 1, *range(3, total_records, 9)})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.sqlite"
        coordinator = _fresh(finished)
        store = SqliteStore(path)
        written, position = 0, 0
        for position, event in enumerate(inputs):  # noqa: B007
            for effect in coordinator.handle(event):
                if isinstance(effect, Record):
                    store.append(encode_record(effect.event))
                    written += 1
            if written >= cut:
                break
        store.close()  # the crash: everything after this record is lost

        reopened = SqliteStore(path)
        events = [decode_record(r) for r in reopened.replay()]
        restored = replayed(
            Coordinator(
                finished.params,
                finished.genesis,
                finished.key,
                finished.start_ms,
                rounds=finished.rounds_limit,
            ),
            events,
        )
        for event in inputs[position + 1 :]:
            for effect in restored.handle(event):
                if isinstance(effect, Record):
                    reopened.append(encode_record(effect.event))
        reopened.close()
        assert finished.state() == restored.state(), f"cut after record {cut}"


def _drive(
    coordinator: Coordinator, inputs: list[CoordinatorEvent], limit: int | None
) -> list[object]:
    effects: list[object] = []
    for event in inputs[:limit]:
        effects += coordinator.handle(event)
    return effects


def test_withdrawals_and_grants_replay_through_sqlite(tmp_path: Path) -> None:
    """Grants and withdrawals recorded in SQLite restore to the same ledger, paid once."""
    gen = genesis(faucet=FAUCET)
    market = Market(Coordinator(params(), gen, "c" * 64, START))
    market.tick(START)
    market.grant(USERS[0], 40, nonce=1)
    market.grant(PROVERS[0], 25, nonce=2, account="deposit")
    market.withdraw(USERS[0], 120, account="balance")
    market.withdraw(PROVERS[0], 125)
    store = SqliteStore(tmp_path / "ledger.sqlite")
    store.append_many([encode_record(e) for e in market.recorded])
    store.close()
    reopened = SqliteStore(tmp_path / "ledger.sqlite")
    events = [decode_record(r) for r in reopened.replay()]
    reopened.close()
    restored = replayed(Coordinator(params(), gen, "c" * 64, START), events)
    assert market.recorded == events
    assert market.coordinator.state() == restored.state()
    assert (20, 0, 765, 245) == (
        restored.balance(USERS[0]),
        restored.deposit(PROVERS[0]),
        restored.accounts.funded(),
        restored.accounts.withdrawn(),
    )
