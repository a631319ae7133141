"""Thousands of hostile inputs of every class while an honest market runs, over real brokers.

The coordinator, two honest provers and an honest user fleet run against a real broker;
an attacker with a funded key sends 2,000 inputs cycling through every class of bad input
(deploy.hostile) on every topic it can reach. Every attributable input must get its own
specific signed reject, and the market must settle every round with nobody honest losing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import msgspec
import pytest
from conftest import RunningBroker
from test_network_hostile import (
    ATTACKER,
    COORDINATOR,
    PARAMS,
    PROVERS,
    USER_ROOT,
    USERS,
    VICTIM,
    coordinator_config,
    listening,
)

from coordinator.core import Coordinator
from coordinator.invariants import check_invariants
from coordinator.service import run_coordinator
from deploy.hostile import HostileTraffic
from protocol import topics
from protocol.envelope import envelope_ref
from protocol.messages import BidReceipt, ClearingResult, Reject, RoundAnnouncement
from prover_node.core import ProverCore
from prover_node.service import ProverConfig, run_prover
from user_client.service import UserConfig, run_user

pytestmark = [pytest.mark.broker, pytest.mark.slow]

INPUTS = 2_000
FLIGHT = 200  # publishes awaiting the broker's acknowledgement at once
ROUNDS = 2
WAIT = 60.0
LONG = msgspec.structs.replace(PARAMS, bid_window_ms=8_000, prove_window_ms=2_000)
"""A bid window the whole flood fits in: market-rule refusals then say why, not `late_bid`."""


def honest_parties(broker: RunningBroker, stop: asyncio.Event) -> list[Any]:
    parties: list[Any] = [
        run_prover(
            identity,
            ProverConfig(
                broker=broker.url,
                coordinator=COORDINATOR.public_hex,
                market=LONG.market,
                capacity=capacity,
                cost=cost,
                password=broker.login(identity.public_hex)["password"],
            ),
            stop=stop,
        )
        for identity, capacity, cost in PROVERS
    ]
    user = UserConfig(
        broker=broker.url,
        coordinator=COORDINATOR.public_hex,
        market=LONG.market,
        tasks=2,
        fee_range=(20, 100),
        identities=len(USERS),
        seed=9,
        rounds=ROUNDS,
        password=broker.login(USER_ROOT.public_hex)["password"],
    )
    parties.append(run_user(USER_ROOT, user, stop=stop))
    return parties


async def test_every_hostile_input_gets_its_reject_and_the_market_settles(
    mosquitto: RunningBroker,
) -> None:
    """2,000 inputs of 19 classes: each attributable one answered with its code; all settle."""
    broker = mosquitto  # the embedded broker takes the same classes in tests/test_bench_hostile.py
    config = coordinator_config(broker, rounds=ROUNDS, start_delay_ms=2500, params=LONG)
    stop = asyncio.Event()
    attacker_topics = (topics.outbox(LONG.market, ATTACKER.public_hex), topics.public(LONG.market))
    victim_topics = (topics.outbox(LONG.market, VICTIM.public_hex),)
    async with (
        listening(broker, ATTACKER, *attacker_topics) as (bus, attacker),
        listening(broker, VICTIM, *victim_topics) as (_, victim),
    ):
        honest = [asyncio.create_task(p) for p in honest_parties(broker, stop)]
        market = asyncio.create_task(run_coordinator(COORDINATOR, config))
        try:
            announced = await attacker.first(RoundAnnouncement)
            assert isinstance(announced, RoundAnnouncement)
            traffic = HostileTraffic(
                ATTACKER,
                VICTIM.public_hex,
                COORDINATOR.public_hex,
                LONG.market,
                announced.round,
                LONG.p_max,
                random.Random(3),
            )
            await bus.publish(topics.inbox(LONG.market, ATTACKER.public_hex), traffic.genuine)
            await attacker.first(BidReceipt, envelope_ref(traffic.genuine))
            inputs = list(traffic.inputs(INPUTS))
            started = time.monotonic()
            for start in range(0, len(inputs), FLIGHT):
                chunk = inputs[start : start + FLIGHT]
                await asyncio.gather(*(bus.publish(i.topic, i.payload) for i in chunk))
            sent = time.monotonic()
            sending_s = sent - started
            async with asyncio.timeout(ROUNDS * 10 + WAIT):
                core = await market
        finally:
            stop.set()
            if not market.done():
                market.cancel()
            await asyncio.gather(market, *honest, return_exceptions=True)
    answers = {
        (m.ref, m.code)
        for listener in (attacker, victim)
        for m in listener.messages
        if isinstance(m, Reject)
    }
    assert sending_s < LONG.bid_window_ms / 1000, "the flood outlasted the round it targets"
    missing = Counter(i.kind for i in inputs if i.code and (i.ref, i.code) not in answers)
    assert Counter() == missing
    assert 19 == len({i.kind for i in inputs})
    assert isinstance(core, Coordinator)
    assert core.finished
    assert core.accounts.conserved()
    assert [] == check_invariants(core)
    clearings = [m for m in attacker.messages if isinstance(m, ClearingResult)]
    assert list(range(ROUNDS)) == sorted(c.round for c in clearings)
    assert sum(c.allocated_tasks for c in clearings) > 0
    provers = [task.result() for task in honest[: len(PROVERS)]]
    assert all(isinstance(p, ProverCore) for p in provers)
    assert [0] * len(PROVERS) == [p.stats.slashes for p in provers]
