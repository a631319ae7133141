"""Retained round announcements: the broker keeps the latest for late subscribers, and a
party drops a retained one whose round closed (an old round, or an earlier run's)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import RunningBroker

from protocol import topics
from protocol.envelope import seal
from protocol.identity import Identity
from protocol.messages import MarketParams, RoundAnnouncement
from protocol.wire import Wire
from runtime.bus import Bus, Delivery
from runtime.memory_bus import MemoryBroker, MemoryBus

BOUND = 10.0
MARKET = "m1"
COORD = Identity.from_seed(b"\x20" * 32)
USER = Identity.from_seed(b"\x21" * 32)
PARAMS = MarketParams(
    market=MARKET,
    p_max=100,
    epoch_rounds=4,
    capacity_factor=2,
    mechanism="prooph",
    difficulty=8,
    setup=2,
    bid_window_ms=1000,
    prove_window_ms=2000,
)


def announcement(round: int, bid_deadline: int) -> bytes:
    message = RoundAnnouncement(
        market=MARKET,
        round=round,
        epoch=0,
        bid_deadline=bid_deadline,
        prove_deadline=bid_deadline + 2000,
        params=PARAMS,
    )
    return seal(COORD, message, MARKET)


def wire() -> Wire:
    return Wire(USER, coordinator=COORD.public_hex, market=MARKET)


def test_retained_announcement_of_closed_round_dropped() -> None:
    """A retained announcement whose bid deadline passed is dropped; an open one is kept."""
    w = wire()
    topic = topics.public(MARKET)
    assert w.open(topic, announcement(7, bid_deadline=999), now=1000, retained=True) is None
    opened = w.open(topic, announcement(8, bid_deadline=2000), now=1000, retained=True)
    assert opened is not None
    assert 8 == opened[1].message.round  # type: ignore[union-attr]


def test_live_announcement_passed_on_whatever_its_deadline() -> None:
    """An announcement heard live (not retained) reaches the core as before."""
    opened = wire().open(topics.public(MARKET), announcement(7, bid_deadline=999), now=1000)
    assert opened is not None


@pytest.mark.broker
async def test_late_subscriber_gets_latest_retained_announcement(broker: RunningBroker) -> None:
    """A party subscribing after two retained publishes gets the latest, flagged retained."""
    public = topics.public(MARKET)
    async with Bus(broker.url, "coord", **broker.login("coord")) as coord:
        await coord.publish(public, b"round 1", retain=True)
        await coord.publish(public, b"round 2", retain=True)
        await coord.publish(public, b"a clearing result")  # not retained: replaces nothing
    async with Bus(broker.url, "late", **broker.login("late")) as late:
        await late.subscribe(public)
        async with asyncio.timeout(BOUND):
            delivery = await anext(aiter(late.messages()))
    assert (Delivery(public, b"round 2"), True) == (delivery, delivery.retained)


async def test_memory_bus_hands_retained_message_to_late_subscriber() -> None:
    """The in-memory broker keeps the newest retained message per topic, as MQTT's does."""
    broker = MemoryBroker()
    public = topics.public(MARKET)
    async with MemoryBus(broker, "coord") as coord:
        await coord.publish(public, b"round 1", retain=True)
        await coord.publish(public, b"round 2", retain=True)
        await coord.publish(public, b"a clearing result")
    async with MemoryBus(broker, "late") as late:
        await late.subscribe(public)
        async with asyncio.timeout(BOUND):
            delivery = await anext(aiter(late.messages()))
    assert (Delivery(public, b"round 2"), True) == (delivery, delivery.retained)


@pytest.mark.broker
async def test_retained_message_reaches_only_its_subscribers(broker: RunningBroker) -> None:
    """A client that never subscribed to a retained topic is not sent its message."""
    public = topics.public(MARKET)
    async with (
        Bus(broker.url, "coord", **broker.login("coord")) as coord,
        Bus(broker.url, "reader", **broker.login("reader")) as reader,
    ):
        await reader.subscribe(public)  # someone subscribes: the filter exists at the broker
        await coord.publish(public, b"round 1", retain=True)
        async with Bus(broker.url, "other", **broker.login("other")) as other:
            await other.subscribe("elsewhere/topic")
            await coord.publish("elsewhere/topic", b"ping")
            async with asyncio.timeout(BOUND):
                delivery = await anext(aiter(other.messages()))
    assert Delivery("elsewhere/topic", b"ping") == delivery
