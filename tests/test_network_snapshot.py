"""A real coordinator over a real broker files snapshots, and restarts from one.

The ledger is the one test_network_restart builds (round 0 cleared, its assignment
never sent). The coordinator runs the market to its end with a snapshot every two
records; a second start on the finished ledger must fold from a snapshot to the state a
full replay gives.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import RunningBroker
from structlog.testing import capture_logs
from test_network_restart import COORDINATOR, GENESIS, PARAMS, crashed_after_clearing

from coordinator.record_log import fold, open_record_log
from coordinator.service import CoordinatorConfig, run_coordinator
from runtime.process import configure_logging

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_a_running_coordinator_snapshots_and_restarts_from_a_snapshot(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """Snapshots filed while serving fold to the full replay's state; a restart uses one."""
    config = CoordinatorConfig(
        broker=broker.url,
        params=PARAMS,
        genesis=GENESIS,
        ledger=f"{tmp_path}/ledger.sqlite",
        rounds=2,
        start_delay_ms=-1500,
        snapshot_every=2,
    )
    crashed_after_clearing(config)
    configure_logging("console", "info")  # an earlier test may have left it at warning
    async with asyncio.timeout(30):
        first = await run_coordinator(COORDINATOR, config)
    assert first.finished
    key = COORDINATOR.public_hex
    log = open_record_log(
        config.ledger, key=key, params=PARAMS, genesis=GENESIS, start_ms=first.start_ms
    )
    try:
        assert log.snapshots(), "the running coordinator filed no snapshot"
        from_snapshot = fold(log, rounds=2)
        full = fold(log, rounds=2, use_snapshot=False)
    finally:
        log.close()
    assert from_snapshot.snapshot is not None
    assert full.core.state() == from_snapshot.core.state() == first.state()
    with capture_logs() as logs:
        async with asyncio.timeout(30):
            again = await run_coordinator(COORDINATOR, config)
    [restored] = [e for e in logs if e["event"] == "coordinator.restored"]
    assert restored["snapshot"] is not None and restored["replayed"] < restored["records"]
    assert first.state() == again.state()
