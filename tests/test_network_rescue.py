"""Failure rules over a real broker, with real processes; verdicts from the ledger.

Rescue: the market runs with `rescue = true`; prover-0, the cheapest, drops every batch it
wins, and each of its failed batches' tasks is offered again in the round then taking
bids, that prover left out of it. Graded lateness: prover-0 delivers every batch just
after its deadline, inside the market's grace, and is paid less a penalty, never slashed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import msgspec
import pytest
from conftest import RunningBroker
from test_network_processes import QUICK, WAIT, local_market, rounds_of

from coordinator.core import Coordinator
from coordinator.record_log import RecordLog, fold, read_meta
from coordinator.report import honest_losses
from coordinator.state import TaskState
from coordinator.store import SqliteStore
from deploy.testnet import TestnetConfig as NetConfig  # not a test class
from protocol.messages import FailureRules

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RESCUE = msgspec.structs.replace(QUICK, market="rescuenet", failures=FailureRules(rescue=True))
ROUNDS = 10


async def test_a_dropped_batch_is_rescued_by_other_provers_and_settled(
    mosquitto: RunningBroker, tmp_path: Path
) -> None:
    """prover-0 drops its batches; their tasks are proven by others, charged once, money kept."""
    broker = mosquitto  # a rule of the core: one broker is enough
    config = NetConfig(provers=4, users=6, rounds=ROUNDS, params=RESCUE)
    async with local_market(config, broker.url, tmp_path) as market:
        faulty = dataclasses.replace(market.plan.provers[0], fault="drop")
        market.plan = dataclasses.replace(market.plan, provers=[faulty, *market.plan.provers[1:]])
        await market.start_parties()
        coordinator = await market.start_coordinator()
        async with asyncio.timeout(WAIT * 2):
            codes = await market.finish(coordinator)
    assert {0} == set(codes.values())
    report = market.report()
    assert (True, True, True) == (
        report["finished"],
        report["ledger"]["conserved"],
        report["invariants_ok"],
    )
    for row in rounds_of(report):
        settled = row["proofs_valid"] + row["refunded_tasks"] + row.get("rescued_tasks", 0)
        assert row["allocated_tasks"] == settled, row
    honest = [p.public for p in market.plan.provers[1:]]
    # Not judged: whether users bid in the first rounds, which a loaded machine's slow
    # process starts can miss (rounds here are 1 s).
    assert [] == honest_losses(report, honest, users_bid=False)
    assert [faulty.public] == report["slashed"]
    rescued = [t for t in _tasks(market.plan.ledger) if t.rescued_from is not None]
    assert rescued, "no task was rescued"
    assert {faulty.public} == {t.failed_by for t in rescued}
    assert all(t.status in ("charged", "released", "refunded") for t in rescued)
    assert all(t.settlements == 1 for t in rescued)
    proven = [t for t in rescued if t.status == "charged"]
    assert proven, "no rescued task was proven by another prover"
    assert all(t.prover not in (None, faulty.public) for t in proven)


def _tasks(ledger: Path) -> list[TaskState]:
    """Every task the coordinator still holds at the end, folded from its ledger."""
    return list(_core(ledger).tasks())


def _core(ledger: Path) -> Coordinator:
    """The coordinator's core at the end, folded from its ledger."""
    log = RecordLog(SqliteStore(str(ledger)), read_meta(str(ledger)))
    try:
        return fold(log, rounds=ROUNDS, use_snapshot=False, keep_tail=False).core
    finally:
        log.close()


GRACE = msgspec.structs.replace(QUICK, market="gracenet", failures=FailureRules(late_grace_ms=800))


async def test_a_proof_inside_the_grace_is_paid_less_a_penalty(
    mosquitto: RunningBroker, tmp_path: Path
) -> None:
    """prover-0 proves just after each deadline: never slashed, its late batches on record."""
    config = NetConfig(provers=4, users=6, rounds=ROUNDS, params=GRACE)
    async with local_market(config, mosquitto.url, tmp_path) as market:
        late = dataclasses.replace(market.plan.provers[0], fault="late")
        market.plan = dataclasses.replace(market.plan, provers=[late, *market.plan.provers[1:]])
        await market.start_parties()
        coordinator = await market.start_coordinator()
        async with asyncio.timeout(WAIT * 2):
            codes = await market.finish(coordinator)
    assert {0} == set(codes.values())
    report = market.report()
    assert [] == honest_losses(report, [p.public for p in market.plan.provers], users_bid=False)
    for row in rounds_of(report):
        assert row["allocated_tasks"] == row["proofs_valid"], row
    record = _core(market.plan.ledger)._provers[late.public].record
    assert record.late >= 1, record
    assert (0, record.won) == (record.failed, record.proved)
    stopped = market.procs[late.name].find("prover.stopped") or {}
    assert (0, record.proved) == (stopped.get("slashes"), stopped.get("payments"))
    assert (True, True) == (report["ledger"]["conserved"], report["invariants_ok"])
