"""Time judged at arrival: an honest proof that reached the coordinator in time is on time.

A market of separate processes on Mosquitto; the moment round 0 clears, thousands of
signed task bids (for a round the market will not hold, so each costs a signature check,
a refusal and a sealed reject) flood the coordinator. Its honest provers prove round 0 in a
few milliseconds, so their proofs reach the coordinator's process long before the prove
deadline, but behind the flood. Judged by when the coordinator got round to them, they
were late and the provers were slashed; judged by when they arrived, they are on time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from conftest import RunningBroker
from test_network_processes import QUICK, LocalMarket, NetConfig, assert_sound, local_market

from protocol import topics
from protocol.envelope import open_envelope, seal
from protocol.identity import Identity
from protocol.messages import ClearingResult, TaskBidMessage
from runtime.bus import Bus

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FLOOD = 9_000  # below the bus's inbox bound: this is about backlog, not overload
IN_FLIGHT = 1_000  # publishes awaiting the broker's acknowledgement at once
WINDOWS = msgspec.structs.replace(QUICK, bid_window_ms=1500, prove_window_ms=3000, setup=2500)
"""Proving takes about 1 s: the flood is in the coordinator's inbox before the proofs. The
window leaves proving room to spare on a loaded 2-core machine."""
USER = Identity.from_seed(b"\xa1" * 32)
WAIT = 60.0


def fund(market: LocalMarket) -> None:
    """The plan's genesis with the scripted user funded for every bid it sends."""
    balances = {USER.public_hex: market.config.params.p_max * (FLOOD + 100)}
    market.rewrite_genesis(dict(market.plan.genesis.deposits), balances)


def bid(round: int, task_id: str, coordinator: str) -> bytes:
    message = TaskBidMessage(
        market=WINDOWS.market, round=round, task_id=task_id, fee=WINDOWS.p_max, task_input=b"t"
    )
    return seal(USER, message, WINDOWS.market, coordinator)


async def first_clearing(bus: Bus) -> ClearingResult:
    async with asyncio.timeout(WAIT):
        async for delivery in bus.messages():
            message = open_envelope(None, delivery.payload, market=WINDOWS.market).message
            if isinstance(message, ClearingResult) and message.round == 0:
                return message
    raise AssertionError("the bus closed before round 0 cleared")


async def test_proofs_behind_a_flood_of_bids_are_judged_by_arrival(
    mosquitto: RunningBroker, tmp_path: Path
) -> None:
    """9,000 bids land just ahead of the honest proofs: nobody is slashed, all settle."""
    config = NetConfig(provers=3, users=1, rounds=1, params=WINDOWS)
    async with local_market(config, mosquitto.url, tmp_path) as market:
        fund(market)
        coordinator_key = market.plan.coordinator
        inbox = topics.inbox(WINDOWS.market, USER.public_hex)
        flood = [bid(1, f"flood-{i}", coordinator_key) for i in range(FLOOD)]
        for p in market.plan.provers:
            market.provers.append(
                await market.spawn(
                    p.name,
                    *("prover", "--broker", mosquitto.url, "--coordinator", coordinator_key),
                    *("--market", WINDOWS.market, "--key", str(p.key_file)),
                    *("--capacity", str(p.capacity), "--cost", str(p.cost)),
                )
            )
        for proc in market.provers:
            await market.wait_line([proc], "prover.started")
        async with Bus(mosquitto.url, client_id=USER.public_hex) as bus:
            await bus.subscribe(topics.public(WINDOWS.market))
            coordinator = await market.start_coordinator()
            await market.wait_line([coordinator], "round.progress", round=0)
            for i in range(20):
                await bus.publish(inbox, bid(0, f"honest-{i}", coordinator_key))
            cleared = await first_clearing(bus)
            window = asyncio.Semaphore(IN_FLIGHT)

            async def send(envelope: bytes) -> None:
                async with window:
                    await bus.publish(inbox, envelope)

            await asyncio.gather(*(send(envelope) for envelope in flood))
        codes = await market.finish(coordinator)
    assert {0} == set(codes.values())
    assert cleared.allocated_tasks > 0
    report = market.report()
    assert_sound(report, 1)
    assert ([], True) == (report["slashed"], report["rounds"][0]["slashed_provers"] == 0)
    assert cleared.allocated_tasks == report["rounds"][0]["proofs_valid"]
