"""The coordinator's intake pipeline over real brokers: signatures checked apart, in order.

Deliveries are checked up to their signatures, the signatures verified as a batch (in a
worker process with a PoolVerifier), and only then applied to the core. These tests
drive a real CoordinatorService with real crypto against a real broker.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import msgspec
import pytest
import structlog
from conftest import RunningBroker, with_bad_signature

from coordinator.core import Coordinator
from coordinator.records import decode_record
from coordinator.service import PIPELINE_DEPTH, CoordinatorService, _Intake
from coordinator.state import OpeningBalances
from coordinator.store import MemoryStore
from coordinator.verifier import (
    InlineVerifier,
    PoolVerifier,
    SignatureVerifier,
    default_workers,
)
from deploy.market import DEFAULT_MARKET
from protocol import topics
from protocol.envelope import envelope_ref, open_envelope, seal, signatures_valid, unseal
from protocol.events import MessageReceived, Tick
from protocol.identity import Identity
from protocol.messages import (
    BidReceipt,
    BidReceipts,
    CapacityDeclaration,
    Message,
    Reject,
    Rejects,
    TaskBidMessage,
)
from runtime.bus import DEFAULT_QUEUE_SIZE, Bus
from runtime.process import wall_ms

pytestmark = [pytest.mark.broker]

MARKET = "pipeline"
WAIT = 30.0
COORDINATOR = Identity.from_seed(b"\x60" * 32)
USER = Identity.from_seed(b"\x61" * 32)
PROVER = Identity.from_seed(b"\x62" * 32)
PARAMS = msgspec.structs.replace(
    DEFAULT_MARKET, market=MARKET, bid_window_ms=3_600_000, prove_window_ms=3_600_000
)


def sealed_bid(task_id: str, *, bad_signature: bool = False) -> bytes:
    """A task bid from USER sealed to the coordinator; optionally with one signature bit off."""
    bid = TaskBidMessage(market=MARKET, round=0, task_id=task_id, fee=10, task_input=b"x")
    envelope = seal(USER, bid, MARKET, COORDINATOR.public_hex)
    return with_bad_signature(envelope, USER, COORDINATOR) if bad_signature else envelope


@dataclass
class Outbox:
    """What the coordinator sends USER, by the envelope reference it answers."""

    receipts: set[bytes] = field(default_factory=set)
    rejects: dict[bytes, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, message: Message) -> None:
        if isinstance(message, BidReceipt):
            self.receipts.add(message.ref)
        elif isinstance(message, BidReceipts):
            self.receipts.update(entry.ref for entry in message.receipts)
        elif isinstance(message, Reject):
            self.rejects[message.ref] = message.code
        elif isinstance(message, Rejects):
            self.rejects.update((entry.ref, entry.code) for entry in message.rejects)
        self.changed.set()

    async def until_answered(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.receipts) + len(self.rejects) < count:
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def market(
    broker: RunningBroker, verifier: SignatureVerifier, queue_size: int = DEFAULT_QUEUE_SIZE
) -> AsyncIterator[tuple[CoordinatorService, asyncio.Event, asyncio.Task[None], Bus, Outbox]]:
    """A coordinator service in round 0 and USER's bus, following what USER is sent."""
    now = wall_ms()
    genesis = OpeningBalances(
        balances={USER.public_hex: 10_000}, deposits={PROVER.public_hex: 10_000}
    )
    core = Coordinator(PARAMS, genesis, COORDINATOR.public_hex, now)
    core.handle(Tick(now))  # opens round 0, for an hour
    store = MemoryStore()
    outbox = Outbox()
    stop = asyncio.Event()
    me = USER.public_hex
    async with (
        Bus(
            broker.url,
            COORDINATOR.public_hex,
            **broker.login(COORDINATOR.public_hex),
            queue_size=queue_size,
        ) as bus,
        Bus(broker.url, me, **broker.login(me)) as user_bus,
    ):
        await user_bus.subscribe(topics.outbox(MARKET, me))
        # subscribed before anything is published (the service's own subscribe is then a no-op)
        await bus.subscribe(*topics.coordinator_subscriptions(MARKET))

        async def follow() -> None:
            async for delivery in user_bus.messages():
                outbox.take(open_envelope(USER, delivery.payload, market=MARKET).message)

        following = asyncio.create_task(follow())
        service = CoordinatorService(core, COORDINATOR, bus, store, verifier=verifier)
        running = asyncio.create_task(service.run(stop))
        try:
            yield service, stop, running, user_bus, outbox
        finally:
            stop.set()
            following.cancel()
            await asyncio.gather(running, following, return_exceptions=True)
            verifier.close()


async def test_pool_verdicts_stay_with_their_bids(broker: RunningBroker) -> None:
    """Checked in a worker process, each bad signature is rejected and every other bid taken."""
    envelopes = [sealed_bid(f"t{n}", bad_signature=n % 5 == 2) for n in range(30)]
    pool = PoolVerifier(1, min_offload=1)
    await pool.start()
    async with market(broker, pool) as (service, _, _, user_bus, outbox):
        inbox = topics.inbox(MARKET, USER.public_hex)
        await asyncio.gather(*(user_bus.publish(inbox, e) for e in envelopes))
        await outbox.until_answered(len(envelopes))
    bad = {envelope_ref(e) for n, e in enumerate(envelopes) if n % 5 == 2}
    good = {envelope_ref(e) for e in envelopes} - bad
    assert good == outbox.receipts
    assert {ref: "bad_signature" for ref in bad} == outbox.rejects
    assert 24 * 10 == service.core.escrow(USER.public_hex)


class GatedVerifier(InlineVerifier):
    """Checks signatures for real, but only once the test opens the gate."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def verify(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        self.entered.set()
        await self.gate.wait()
        return signatures_valid(items)


async def test_stop_during_verification_still_applies_the_batch(broker: RunningBroker) -> None:
    """Bids taken from the broker when a stop arrives mid-verification are still recorded."""
    gated = GatedVerifier()
    envelopes = [sealed_bid(f"s{n}") for n in range(8)]
    async with market(broker, gated) as (service, stop, running, user_bus, _):
        inbox = topics.inbox(MARKET, USER.public_hex)
        await asyncio.gather(*(user_bus.publish(inbox, e) for e in envelopes[:1]))
        async with asyncio.timeout(WAIT):
            await gated.entered.wait()
        stop.set()
        gated.gate.set()
        async with asyncio.timeout(WAIT):
            await running
        taken = service.stats.deliveries
    recorded = [decode_record(r) for r in service.store.replay()]
    bids = [e for e in recorded if isinstance(e, MessageReceived)]
    assert 1 <= taken
    assert taken == len(bids)
    assert {envelope_ref(e) for e in envelopes[:taken]} == {b.ref for b in bids}


class CountingGate(InlineVerifier):
    """Checks the first `free` batches at once, then waits at the gate for the test."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0
        self.called = asyncio.Event()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def verify(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        self.calls += 1
        self.called.set()
        if self.calls > self.free:
            self.entered.set()
            await self.gate.wait()
        return signatures_valid(items)


async def test_winding_down_with_a_full_pipeline_applies_every_batch(
    broker: RunningBroker,
) -> None:
    """A stop with a full pipeline and a batch still verifying neither hangs nor drops it."""
    gate = CountingGate(free=PIPELINE_DEPTH)
    envelopes = [sealed_bid(f"w{n}") for n in range(PIPELINE_DEPTH + 1)]
    async with market(broker, InlineVerifier()) as (service, stop, running, user_bus, _):
        # The running loop is stopped first: this test plays the loop, batch by batch.
        stop.set()
        async with asyncio.timeout(WAIT):
            await running
        service.verifier = gate
        verified: asyncio.Queue[_Intake] = asyncio.Queue(maxsize=PIPELINE_DEPTH)
        intake = asyncio.create_task(service._intake(verified))
        inbox = topics.inbox(MARKET, USER.public_hex)
        for n, envelope in enumerate(envelopes):
            await user_bus.publish(inbox, envelope)
            async with asyncio.timeout(WAIT):
                while gate.calls <= n:  # one batch each: the next is sent once this is taken
                    gate.called.clear()
                    await gate.called.wait()
        async with asyncio.timeout(WAIT):
            await gate.entered.wait()
        assert verified.full()
        winding = asyncio.create_task(service._wind_down(intake, None, verified))
        gate.gate.set()
        async with asyncio.timeout(WAIT):
            await winding
    recorded = [decode_record(r) for r in service.store.replay()]
    refs = {e.ref for e in recorded if isinstance(e, MessageReceived)}
    assert {envelope_ref(e) for e in envelopes} <= refs


async def test_a_full_inbox_is_logged_and_answers_what_it_dropped(broker: RunningBroker) -> None:
    """Bids a full inbox dropped get one warning and a signed `overloaded` each; none is kept."""
    gated = GatedVerifier()
    envelopes = [sealed_bid(f"f{n}") for n in range(30)]
    with structlog.testing.capture_logs() as logs:
        async with market(broker, gated, queue_size=5) as (service, _, _, user_bus, outbox):
            inbox = topics.inbox(MARKET, USER.public_hex)
            await user_bus.publish(inbox, envelopes[0])
            async with asyncio.timeout(WAIT):
                await gated.entered.wait()  # the intake holds the first bid; the rest pile up
            await asyncio.gather(*(user_bus.publish(inbox, e) for e in envelopes[1:]))
            await service.bus.wait_until(lambda stats: stats.received >= 30, WAIT)
            gated.gate.set()
            dropped = service.bus.stats.dropped_full
            await outbox.until_answered(30)
    warnings = [e for e in logs if e["event"] == "coordinator.inbox_full"]
    assert dropped > 0
    assert [(dropped, dropped, 5)] == [
        (e["dropped"], e["dropped_total"], e["bound"]) for e in warnings
    ]
    assert 30 - dropped == service.stats.deliveries == len(outbox.receipts)
    assert {"overloaded": dropped} == collections.Counter(outbox.rejects.values())
    recorded = {e.ref for e in map(decode_record, service.store.replay()) if hasattr(e, "ref")}
    assert set() == recorded & set(outbox.rejects)


async def test_a_full_inbox_still_takes_in_a_provers_message(broker: RunningBroker) -> None:
    """Past the bound a user's bid is dropped, but a prover's declaration joins the reserve."""
    gated = GatedVerifier()
    envelopes = [sealed_bid(f"p{n}") for n in range(12)]
    declaration = CapacityDeclaration(market=MARKET, epoch=0, capacity=2)
    declared = seal(PROVER, declaration, MARKET, COORDINATOR.public_hex)
    async with (
        market(broker, gated, queue_size=5) as (service, _, _, user_bus, outbox),
        Bus(broker.url, PROVER.public_hex, **broker.login(PROVER.public_hex)) as prover_bus,
    ):
        inbox = topics.inbox(MARKET, USER.public_hex)
        await user_bus.publish(inbox, envelopes[0])
        async with asyncio.timeout(WAIT):
            await gated.entered.wait()  # the intake holds the first bid; the rest pile up
        await asyncio.gather(*(user_bus.publish(inbox, e) for e in envelopes[1:]))
        await service.bus.wait_until(lambda stats: stats.received >= 12, WAIT)
        await prover_bus.publish(topics.inbox(MARKET, PROVER.public_hex), declared)
        await service.bus.wait_until(lambda stats: stats.received >= 13, WAIT)
        gated.gate.set()
        await outbox.until_answered(12)
        dropped = service.bus.stats.dropped_full
    recorded = [decode_record(r) for r in service.store.replay()]
    costs = [
        e for e in recorded if isinstance(e, MessageReceived) and e.sender == PROVER.public_hex
    ]
    assert (True, 1) == (dropped > 0, len(costs))
    assert dropped == list(outbox.rejects.values()).count("overloaded")


def test_inline_and_pool_verifiers_agree() -> None:
    """Both verifiers give the same verdicts, in order, for a batch split across workers."""
    envelopes = [sealed_bid(f"v{n}", bad_signature=n % 3 == 0) for n in range(40)]
    items = []
    for envelope in envelopes:
        unverified = unseal(COORDINATOR, envelope, market=MARKET)
        items.append((unverified.signed_message, unverified.sender))

    async def both() -> tuple[list[bool], list[bool]]:
        pool = PoolVerifier(2, min_offload=1)
        try:
            await pool.start()
            return await InlineVerifier().verify(items), await pool.verify(items)
        finally:
            pool.close()

    inline, pooled = asyncio.run(both())
    assert [n % 3 != 0 for n in range(40)] == inline
    assert inline == pooled


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_default_workers_follow_the_cores_this_process_may_use() -> None:
    """No signature worker when only one core is ours; one when a second is."""
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})
        assert 0 == default_workers()
    finally:
        os.sched_setaffinity(0, cores)
    assert (1 if len(cores) > 1 else 0) == default_workers()
