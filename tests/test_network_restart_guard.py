"""A restarted coordinator judges what queued while it was away by the rounds now open.

Its replay guard used to start at round 0 whatever round the market had reached, so the
first batch after a restart past round L + 3 was refused `future_round`: on-time inputs
of honest parties, and the proofs of provers then slashed for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import msgspec
import pytest
from conftest import RunningBroker
from test_network_hostile import (
    ATTACKER,
    COORDINATOR,
    MARKET,
    PARAMS,
    coordinator_config,
    listening,
    task_bid,
)

from coordinator.service import run_coordinator
from protocol import topics
from protocol.envelope import envelope_ref, seal
from protocol.messages import Reject, RoundAnnouncement

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FAST = msgspec.structs.replace(PARAMS, bid_window_ms=150, prove_window_ms=150)
"""L = ceil(150 / 150) + 2 = 3: the guard used to hold rounds 0 .. 6 only."""
WAIT = 30.0


async def test_inputs_queued_during_a_restart_are_not_refused_as_future(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """A bid for the last round announced, sent while the coordinator is down, is judged."""
    config = dataclasses.replace(
        coordinator_config(broker, rounds=40, start_delay_ms=0, params=FAST),
        ledger=str(tmp_path / "ledger.sqlite"),
    )
    topics_ = (topics.outbox(MARKET, ATTACKER.public_hex), topics.public(MARKET))
    async with listening(broker, ATTACKER, *topics_) as (bus, attacker):
        stop = asyncio.Event()
        first = asyncio.create_task(run_coordinator(COORDINATOR, config, stop=stop))
        async with asyncio.timeout(WAIT):
            while True:
                announced = await attacker.first(RoundAnnouncement)
                rounds = [m.round for m in attacker.messages if isinstance(m, RoundAnnouncement)]
                if max(rounds) >= 9:
                    break
                attacker.changed.clear()
                await attacker.changed.wait()
        stop.set()
        await first
        last = max(m.round for m in attacker.messages if isinstance(m, RoundAnnouncement))
        queued = seal(ATTACKER, task_bid(last, "queued"), MARKET, COORDINATOR.public_hex)
        await bus.publish(topics.inbox(MARKET, ATTACKER.public_hex), queued)
        second = asyncio.create_task(run_coordinator(COORDINATOR, config, stop=asyncio.Event()))
        try:
            async with asyncio.timeout(WAIT):
                while not any(
                    getattr(m, "ref", None) == envelope_ref(queued) for m in attacker.messages
                ):
                    attacker.changed.clear()
                    await attacker.changed.wait()
        finally:
            second.cancel()
            await asyncio.gather(second, return_exceptions=True)
    assert isinstance(announced, RoundAnnouncement)
    answers = [
        m.code if isinstance(m, Reject) else "accepted"
        for m in attacker.messages
        if getattr(m, "ref", None) == envelope_ref(queued)
    ]
    assert 1 == len(answers)
    assert answers[0] in {"accepted", "late_bid"}, answers
