"""Input that used to stop a service, sent to a market of separate OS processes.

A body nested a thousand deep, signed by a real key, stopped the coordinator (and, sealed
to a prover, the prover) with a RecursionError; an honest assignment over the bus's size
limit stopped the coordinator and slashed the honest prover it could not send it to. Here
both happen over a real broker, and every party stays up and every round settles.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import RunningBroker, seal_body
from test_network_processes import QUICK, LocalMarket, NetConfig, assert_sound, local_market

from deploy.hostile import deep_body
from protocol import topics
from protocol.envelope import envelope_ref, open_envelope, seal
from protocol.identity import Identity
from protocol.messages import BidReceipt, BidReceipts, ProverWill, Reject, TaskBidMessage
from runtime.bus import Bus

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ATTACKER = Identity.from_seed(b"\x91" * 32)
ENCODE = msgspec.msgpack.encode
WAIT = 60.0


def no_error_lines(market: LocalMarket) -> None:
    """No process logged at error level, and none stopped with an error."""
    for proc in market.procs.values():
        assert [] == [line for line in proc.lines if line.get("level") == "error"], proc.name
        stopped = [line for line in proc.lines if str(line.get("event", "")).endswith("stopped")]
        assert [None] * len(stopped) == [line.get("error") for line in stopped], proc.name


async def test_poisoned_bodies_and_forged_wills_leave_every_process_up(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """Deep nesting to coordinator, prover and public, and forged wills: the market settles."""
    config = NetConfig(provers=2, users=6, rounds=3, params=QUICK)
    market_name = QUICK.market
    async with local_market(config, broker.url, tmp_path) as market:
        await market.start_parties()
        coordinator = await market.start_coordinator()
        await market.wait_line([coordinator], "round.progress", round=0)
        victim = market.plan.provers[0].public
        coordinator_key = market.plan.coordinator
        inbox = topics.inbox(market_name, ATTACKER.public_hex)
        deep = deep_body("task_bid")
        to_coordinator = seal_body(
            ATTACKER, deep, kind="task_bid", market=market_name, to=coordinator_key
        )
        to_prover = seal_body(
            ATTACKER,
            deep_body("assignment"),
            kind="assignment",
            market=market_name,
            to=victim,
        )
        to_everyone = seal_body(
            ATTACKER,
            deep_body("round_announcement"),
            kind="round_announcement",
            market=market_name,
            to=None,
        )
        forged_will = seal(
            ATTACKER, ProverWill(market=market_name, connected_at=1), market_name, coordinator_key
        )
        login = broker.login(ATTACKER.public_hex)
        async with Bus(broker.url, client_id=ATTACKER.public_hex, **login) as bus:
            for _ in range(2):  # and again: a crash would come back after a restart too
                await bus.publish(inbox, to_coordinator)
                await bus.publish(topics.outbox(market_name, victim), to_prover)
                await bus.publish(topics.public(market_name), to_everyone)
                await bus.publish(topics.will(market_name, victim), b"offline")
                await bus.publish(topics.will(market_name, victim), forged_will)
        await market.wait_line([coordinator], "coordinator.rejected", code="wrong_sender")
        await market.wait_line([coordinator], "coordinator.rejected", code="bad_encoding")
        await market.wait_line(market.provers, "wire.refused", code="bad_encoding")
        codes = await market.finish(coordinator)
    assert {0} == set(codes.values())
    report = market.report()
    assert_sound(report, 3)
    assert 0 == sum(r["slashed_provers"] for r in report["rounds"])
    assert None is coordinator.find("coordinator.prover_offline", prover=victim)
    no_error_lines(market)


BIG = msgspec.structs.replace(QUICK, bid_window_ms=3000, prove_window_ms=6000)
SLOW_BROKER_WINDOW_MS = 12_000
"""amqtt takes 301 bids of 4 KiB in about 4-6 s on a busy 2-core machine; Mosquitto in 0.2."""
CAPACITY = 300
INPUT = 4096


def fund_for_big_batches(market: LocalMarket, user: Identity, tasks: int) -> None:
    """Rewrite the plan's genesis: deposits for CAPACITY, and a funded scripted user."""
    params = market.config.params
    deposits = {
        p.public: 2 * params.p_max * CAPACITY * params.capacity_factor for p in market.plan.provers
    }
    market.rewrite_genesis(deposits, {user.public_hex: params.p_max * tasks})


async def start_big_provers(market: LocalMarket) -> None:
    common = ["--broker", market.url, "--coordinator", market.plan.coordinator]
    common += ["--market", market.config.params.market]
    for p, cost in zip(market.plan.provers, (1, 5), strict=True):
        market.provers.append(
            await market.spawn(
                p.name,
                *("prover", *common, "--key", str(p.key_file)),
                *("--capacity", str(CAPACITY), "--cost", str(cost)),
            )
        )
    for proc in market.provers:
        await market.wait_line([proc], "prover.started")


async def test_an_assignment_over_the_envelope_limit_is_sent_in_parts(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """300 tasks of 4 KiB (1.2 MB) reach their prover in parts; it proves, is paid, not slashed."""
    user = Identity.from_seed(b"\x92" * 32)
    tasks = CAPACITY + 1  # one more than the cheapest prover takes: the next sets the price
    params = BIG
    if broker.kind == "embedded":
        params = msgspec.structs.replace(BIG, bid_window_ms=SLOW_BROKER_WINDOW_MS)
    config = NetConfig(provers=2, users=1, rounds=2, params=params)
    async with local_market(config, broker.url, tmp_path) as market:
        fund_for_big_batches(market, user, tasks)
        await start_big_provers(market)
        login = broker.login(user.public_hex)
        async with Bus(broker.url, client_id=user.public_hex, **login) as bus:
            await bus.subscribe(topics.outbox(BIG.market, user.public_hex))
            coordinator = await market.start_coordinator()
            await market.wait_line([coordinator], "round.progress", round=0)
            refs = await bid_big_tasks(bus, market.plan.coordinator, user, tasks)
            await receipts_for(bus, user, refs)
        codes = await market.finish(coordinator)
    assert {0} == set(codes.values())
    report = market.report()
    assert_sound(report, 2)
    first: dict[str, Any] = report["rounds"][0]
    expected = {"allocated_tasks": CAPACITY, "proofs_valid": CAPACITY, "slashed_provers": 0}
    assert expected == {k: first[k] for k in expected}
    cheapest = market.provers[0]
    parts = [line["tasks"] for line in cheapest.lines if line.get("event") == "prover.assigned"]
    assert len(parts) >= 2
    assert CAPACITY == sum(parts)
    no_error_lines(market)


async def bid_big_tasks(bus: Bus, coordinator: str, user: Identity, tasks: int) -> set[bytes]:
    inbox = topics.inbox(BIG.market, user.public_hex)
    refs = set()
    for i in range(tasks):
        bid = TaskBidMessage(
            market=BIG.market,
            round=0,
            task_id=f"big-{i}",
            fee=BIG.p_max,
            task_input=i.to_bytes(4, "big") * (INPUT // 4),
        )
        envelope = seal(user, bid, BIG.market, coordinator)
        refs.add(envelope_ref(envelope))
        await bus.publish(inbox, envelope)
    return refs


async def receipts_for(bus: Bus, user: Identity, refs: set[bytes]) -> None:
    """Wait until every bid in `refs` is receipted (the round must take all of them)."""
    waiting = set(refs)
    async with asyncio.timeout(WAIT):
        async for delivery in bus.messages():
            message = open_envelope(user, delivery.payload, market=BIG.market).message
            assert not isinstance(message, Reject), message
            if isinstance(message, BidReceipt):
                waiting.discard(message.ref)
            elif isinstance(message, BidReceipts):
                waiting.difference_update(r.ref for r in message.receipts)
            if not waiting:
                return
