"""Hostile input published straight to a live coordinator's topics, over real brokers.

The coordinator, two provers and a user fleet run in this process against a real broker;
an attacker with a funded key of its own publishes forged, replayed, tampered, foreign and
garbage envelopes to the coordinator's inbox topics. Each refusal comes back as a signed
Reject sealed to the party the topic names, and the market settles every round anyway.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
import structlog.testing
from conftest import RunningBroker, with_bad_signature

from coordinator.core import Coordinator
from coordinator.invariants import check_invariants
from coordinator.service import CoordinatorConfig, run_coordinator
from coordinator.state import OpeningBalances
from deploy.hostile import invalid_point_key
from protocol import topics
from protocol.envelope import envelope_ref, open_envelope, seal
from protocol.identity import Identity
from protocol.messages import (
    BidReceipt,
    ClearingResult,
    MarketParams,
    Message,
    Reject,
    RoundAnnouncement,
    TaskBidMessage,
)
from protocol.wire import Wire
from prover_node.service import ProverConfig, run_prover
from runtime.bus import DEFAULT_MAX_PAYLOAD, Bus
from user_client.identities import fleet_identities
from user_client.service import UserConfig, run_user

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MARKET = "hostile"
ROUNDS = 3
WAIT = 30.0  # bound on each wait; generous for a loaded 2-core machine
OVERSIZED = DEFAULT_MAX_PAYLOAD + 1024
"""Above what a bus accepts, below Mosquitto's packet limit: it reaches the coordinator."""
PARAMS = MarketParams(
    market=MARKET,
    p_max=100,
    epoch_rounds=4,
    capacity_factor=2,
    mechanism="prooph",
    difficulty=5,
    setup=20,
    bid_window_ms=1000,
    prove_window_ms=1500,
)
COORDINATOR = Identity.from_seed(b"\x40" * 32)
PROVERS = [(Identity.from_seed(b"\x41" * 32), 2, 5), (Identity.from_seed(b"\x42" * 32), 3, 10)]
USER_ROOT = Identity.from_seed(b"\x43" * 32)
USERS = fleet_identities(USER_ROOT, 4)
ATTACKER = Identity.from_seed(b"\x44" * 32)
VICTIM = Identity.from_seed(b"\x45" * 32)
GENESIS = OpeningBalances(
    balances={**{u.public_hex: 10_000 for u in USERS}, ATTACKER.public_hex: 10_000},
    deposits={p.public_hex: 2 * PARAMS.p_max * cap * 2 for p, cap, _ in PROVERS},
)


@dataclass
class Listener:
    """Everything the coordinator sends one party, opened with that party's key."""

    identity: Identity
    messages: list[Message] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow(self, bus: Bus) -> None:
        async for delivery in bus.messages():
            reader = None if delivery.topic == topics.public(MARKET) else self.identity
            opened = open_envelope(reader, delivery.payload, market=MARKET)
            assert COORDINATOR.public_hex == opened.sender
            self.messages.append(opened.message)
            self.changed.set()

    async def first(self, match: type[Message], ref: bytes | None = None) -> Message:
        """The first message of type `match` (naming `ref`, if given), waiting for it."""
        async with asyncio.timeout(WAIT):
            while True:
                for message in self.messages:
                    if isinstance(message, match) and ref in (None, getattr(message, "ref", None)):
                        return message
                self.changed.clear()
                await self.changed.wait()

    def count(self, match: type[Message], ref: bytes) -> int:
        return sum(isinstance(m, match) and ref == getattr(m, "ref", None) for m in self.messages)


@asynccontextmanager
async def listening(
    broker: RunningBroker, identity: Identity, *subscriptions: str
) -> AsyncIterator[tuple[Bus, Listener]]:
    """A bus logged in as `identity`, subscribed and followed by a Listener."""
    name = identity.public_hex
    # the attacker's own bus must let an oversized payload out
    big = 4 * DEFAULT_MAX_PAYLOAD
    login = broker.login(name)
    async with Bus(
        broker.url,
        client_id=name,
        username=login["username"],
        password=login["password"],
        max_payload=big,
    ) as bus:
        await bus.subscribe(*subscriptions)
        listener = Listener(identity)
        follower = asyncio.create_task(listener.follow(bus))
        try:
            yield bus, listener
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            if not follower.cancelled() and follower.exception() is not None:
                raise follower.exception()  # type: ignore[misc]


def coordinator_config(
    broker: RunningBroker, rounds: int, start_delay_ms: int, params: MarketParams = PARAMS
) -> CoordinatorConfig:
    """The hostile market's coordinator on `broker`, logged in as itself."""
    return CoordinatorConfig(
        broker=broker.url,
        params=params,
        genesis=GENESIS,
        rounds=rounds,
        start_delay_ms=start_delay_ms,
        password=broker.login(COORDINATOR.public_hex)["password"],
    )


def task_bid(round: int, task_id: str, market: str = MARKET) -> TaskBidMessage:
    return TaskBidMessage(
        market=market, round=round, task_id=task_id, fee=60, task_input=task_id.encode()
    )


async def test_hostile_messages_get_signed_rejects_and_the_market_settles(
    broker: RunningBroker,
) -> None:
    """Forged, tampered, replayed, foreign and garbage input is refused; the market settles."""
    config = coordinator_config(broker, rounds=ROUNDS, start_delay_ms=2500)
    stop_parties = asyncio.Event()
    parties: list[Coroutine[Any, Any, object]] = [
        run_prover(
            identity,
            ProverConfig(
                broker=broker.url,
                coordinator=COORDINATOR.public_hex,
                market=MARKET,
                capacity=capacity,
                cost=cost,
                password=broker.login(identity.public_hex)["password"],
            ),
            stop=stop_parties,
        )
        for identity, capacity, cost in PROVERS
    ]
    parties.append(
        run_user(
            USER_ROOT,
            UserConfig(
                broker=broker.url,
                coordinator=COORDINATOR.public_hex,
                market=MARKET,
                tasks=2,
                fee_range=(20, 100),
                identities=len(USERS),
                seed=5,
                password=broker.login(USER_ROOT.public_hex)["password"],
            ),
            stop=stop_parties,
        )
    )
    attacker_topics = (topics.outbox(MARKET, ATTACKER.public_hex), topics.public(MARKET))
    async with (
        listening(broker, ATTACKER, *attacker_topics) as (bus, attacker),
        listening(broker, VICTIM, topics.outbox(MARKET, VICTIM.public_hex)) as (_, victim),
    ):
        party_tasks = [asyncio.create_task(p) for p in parties]
        market = asyncio.create_task(run_coordinator(COORDINATOR, config))
        try:
            announced = await attacker.first(RoundAnnouncement)
            assert isinstance(announced, RoundAnnouncement)
            now = announced.round
            inbox = topics.inbox(MARKET, ATTACKER.public_hex)
            to = COORDINATOR.public_hex

            genuine = seal(ATTACKER, task_bid(now, "genuine"), MARKET, to)
            forged = seal(ATTACKER, task_bid(now, "forged"), MARKET, to)
            tampered = bytearray(seal(ATTACKER, task_bid(now, "tampered"), MARKET, to))
            tampered[-1] ^= 0x01
            bad_signature = with_bad_signature(
                seal(ATTACKER, task_bid(now, "bad-sig"), MARKET, to), ATTACKER, COORDINATOR
            )
            foreign = seal(ATTACKER, task_bid(now, "foreign", "elsewhere"), "elsewhere", to)
            noise = random.Random(7).randbytes(300)
            assert 1 != noise[0]  # not even the envelope version
            bad_mode = b"\x01\x07" + noise
            oversized = b"\x01" * OVERSIZED

            await bus.publish(inbox, genuine)
            await bus.publish(inbox, genuine)  # the same bytes again: a replay
            await bus.publish(topics.inbox(MARKET, VICTIM.public_hex), forged)
            for payload in (oversized, bytes(tampered), bad_signature, foreign, noise, bad_mode):
                await bus.publish(inbox, payload)

            receipt = await attacker.first(BidReceipt, envelope_ref(genuine))
            assert isinstance(receipt, BidReceipt)
            assert now == receipt.round
            expected = {
                "replay": genuine,
                "bad_ciphertext": bytes(tampered),
                "bad_signature": bad_signature,
                "wrong_market": foreign,
                "unknown_version": noise,
                "bad_encoding": bad_mode,
                "too_large": oversized,
            }
            for code, payload in expected.items():
                reject = await attacker.first(Reject, envelope_ref(payload))
                assert isinstance(reject, Reject)
                assert (code, MARKET) == (reject.code, reject.market)
            # signed by the attacker on the victim's topic: the Reject goes to the victim
            wrong_sender = await victim.first(Reject, envelope_ref(forged))
            assert isinstance(wrong_sender, Reject)
            assert "wrong_sender" == wrong_sender.code
            assert 1 == attacker.count(BidReceipt, envelope_ref(genuine))

            async with asyncio.timeout(ROUNDS * 4 + WAIT):
                core = await market
        finally:
            stop_parties.set()
            if not market.done():
                market.cancel()
            await asyncio.gather(market, *party_tasks, return_exceptions=True)
        for task in party_tasks:
            assert task.exception() is None

    assert isinstance(core, Coordinator)
    assert core.finished
    assert core.accounts.conserved()
    assert [] == check_invariants(core)
    clearings = [m for m in attacker.messages if isinstance(m, ClearingResult)]
    assert list(range(ROUNDS)) == sorted(c.round for c in clearings)
    assert sum(c.allocated_tasks for c in clearings) > 0


async def test_oversized_message_gets_a_too_large_reject(broker: RunningBroker) -> None:
    """A payload too large to accept is answered with a signed too_large Reject."""
    config = coordinator_config(broker, rounds=1, start_delay_ms=0)
    attacker_topics = (topics.outbox(MARKET, ATTACKER.public_hex), topics.public(MARKET))
    async with listening(broker, ATTACKER, *attacker_topics) as (bus, attacker):
        market = asyncio.create_task(run_coordinator(COORDINATOR, config))
        try:
            await attacker.first(RoundAnnouncement)
            inbox = topics.inbox(MARKET, ATTACKER.public_hex)
            noise = random.Random(7).randbytes(300)
            await bus.publish(inbox, b"\x01" * OVERSIZED)
            # deliveries on one topic keep their order: once the noise is refused, the
            # oversized message before it has been dealt with too
            await bus.publish(inbox, noise)
            await attacker.first(Reject, envelope_ref(noise))
        finally:
            market.cancel()
            await asyncio.gather(market, return_exceptions=True)
    refs = {m.code: m.ref for m in attacker.messages if isinstance(m, Reject)}
    assert envelope_ref(b"\x01" * OVERSIZED) == refs.get("too_large")


async def test_copies_wills_and_bad_topic_keys_get_their_one_answer(
    broker: RunningBroker,
) -> None:
    """A refused envelope's copy gets the same code; wills count once; bad keys log a warning."""
    config = coordinator_config(broker, rounds=2, start_delay_ms=0)
    attacker_topics = (topics.outbox(MARKET, ATTACKER.public_hex), topics.public(MARKET))
    with structlog.testing.capture_logs() as logs:
        async with (
            listening(broker, ATTACKER, *attacker_topics) as (bus, attacker),
            listening(broker, VICTIM, topics.outbox(MARKET, VICTIM.public_hex)) as (_, victim),
        ):
            market = asyncio.create_task(run_coordinator(COORDINATOR, config))
            try:
                announced = await attacker.first(RoundAnnouncement)
                assert isinstance(announced, RoundAnnouncement)
                inbox = topics.inbox(MARKET, ATTACKER.public_hex)
                too_dear = TaskBidMessage(
                    market=MARKET, round=announced.round, task_id="dear", fee=101, task_input=b""
                )
                refused = seal(ATTACKER, too_dear, MARKET, COORDINATOR.public_hex)
                await bus.publish(inbox, refused)
                await bus.publish(inbox, refused)
                await bus.publish(topics.inbox(MARKET, invalid_point_key()), refused)
                will_topic, will = Wire(
                    VICTIM, coordinator=COORDINATOR.public_hex, market=MARKET
                ).will(now=5_000)
                _, older = Wire(VICTIM, coordinator=COORDINATOR.public_hex, market=MARKET).will(
                    now=1_000
                )
                for payload in (will, will, older):
                    await bus.publish(will_topic, payload)
                await victim.first(Reject, envelope_ref(older))
                async with asyncio.timeout(WAIT):
                    while attacker.count(Reject, envelope_ref(refused)) < 2:
                        attacker.changed.clear()
                        await attacker.changed.wait()
                    core = await market
            finally:
                if not market.done():
                    market.cancel()
                await asyncio.gather(market, return_exceptions=True)
    codes = [m.code for m in attacker.messages if isinstance(m, Reject)]
    assert ["fee_above_p_max", "fee_above_p_max"] == codes
    will_rejects = [(m.ref, m.code) for m in victim.messages if isinstance(m, Reject)]
    assert [(envelope_ref(will), "replay"), (envelope_ref(older), "replay")] == will_rejects
    offline = [e for e in logs if e["event"] == "coordinator.prover_offline"]
    assert [(VICTIM.public_hex, 5_000)] == [(e["prover"], e["connected_at"]) for e in offline]
    bad_key = [e for e in logs if e.get("code") == "bad_public_key"]
    assert ["warning"] == [e["log_level"] for e in bad_key]
    assert [] == [e for e in logs if e["log_level"] in ("error", "critical")]
    assert isinstance(core, Coordinator)
    assert core.accounts.conserved()
