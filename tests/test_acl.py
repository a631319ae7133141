"""Broker files from a genesis, enforced by a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.acl import party_password, write_broker_files
from deploy.broker import EmbeddedBroker, MosquittoBroker, mosquitto_binary
from deploy.genesis import MarketGenesis
from deploy.passwd import read_password_file, verify_password
from protocol import topics
from runtime.bus import Bus, BusError, Delivery

pytestmark = pytest.mark.broker

BOUND = 10.0
COORD, ALICE, BOB = "c0" * 32, "a1" * 32, "b2" * 32
GENESIS = MarketGenesis(market="m1", coordinator=COORD, provers={ALICE: 100}, users={BOB: 50})


def test_files_written_from_genesis(tmp_path: Path) -> None:
    """passwd holds every party with its derived password; credentials.json lists them."""
    files = write_broker_files(GENESIS, tmp_path, secret=b"k" * 32)
    hashes = read_password_file(files.password_file)
    creds = json.loads(files.credentials.read_text())
    assert sorted([COORD, ALICE, BOB]) == sorted(hashes)
    assert creds == {key: party_password(b"k" * 32, key) for key in (COORD, ALICE, BOB)}
    assert all(verify_password(creds[key], hashes[key]) for key in hashes)
    assert 0o600 == files.credentials.stat().st_mode & 0o777


def test_secret_reused_across_rewrites(tmp_path: Path) -> None:
    """Rewriting the files without a secret keeps every party's password."""
    first = json.loads(write_broker_files(GENESIS, tmp_path).credentials.read_text())
    second = json.loads(write_broker_files(GENESIS, tmp_path).credentials.read_text())
    assert first == second


@dataclass
class Market:
    broker: MosquittoBroker | EmbeddedBroker
    passwords: dict[str, str]

    def bus(self, key: str) -> Bus:
        return Bus(self.broker.url, key, username=key, password=self.passwords[key])


@pytest.fixture(params=["mosquitto", "embedded"])
async def market(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Market]:
    """A broker enforcing the passwd and ACL written from GENESIS (Mosquitto or amqtt)."""
    files = write_broker_files(GENESIS, tmp_path / "broker")
    server: MosquittoBroker | EmbeddedBroker
    if request.param == "mosquitto":
        if mosquitto_binary() is None:
            pytest.skip("mosquitto binary not on PATH")
        server = MosquittoBroker(
            password_file=files.password_file, acl_file=files.acl_file, workdir=tmp_path / "mq"
        )
    else:
        server = EmbeddedBroker(
            password_file=files.password_file, coordinators={COORD: GENESIS.market}
        )
    async with server:
        yield Market(server, json.loads(files.credentials.read_text()))


async def first(bus: Bus) -> Delivery:
    async with asyncio.timeout(BOUND):
        async for delivery in bus.messages():
            return delivery
    raise AssertionError("bus closed")


async def test_participant_cannot_publish_under_another_key(market: Market) -> None:
    """Alice's publish to Bob's inbox is dropped by the broker; her own arrives."""
    async with market.bus(COORD) as coord, market.bus(ALICE) as alice:
        await coord.subscribe(*topics.coordinator_subscriptions("m1"))
        await alice.publish(topics.inbox("m1", BOB), b"forged bid")
        await alice.publish(topics.inbox("m1", ALICE), b"honest bid")
        # same publisher, same connection: the forged one would have arrived first
        assert Delivery(topics.inbox("m1", ALICE), b"honest bid") == await first(coord)


async def test_participant_cannot_impersonate_coordinator(market: Market) -> None:
    """A participant's publish on the public channel never reaches other participants."""
    async with market.bus(COORD) as coord, market.bus(ALICE) as alice, market.bus(BOB) as bob:
        await bob.subscribe(*topics.participant_subscriptions("m1", BOB))
        await alice.publish(topics.public("m1"), b"fake announcement")
        await alice.publish(topics.outbox("m1", BOB), b"fake assignment")
        await coord.publish(topics.public("m1"), b"real announcement")
        assert Delivery(topics.public("m1"), b"real announcement") == await first(bob)


async def test_participant_cannot_read_another_outbox(market: Market) -> None:
    """Messages in Alice's outbox never reach Bob, even if he tries to subscribe to it."""
    async with market.bus(COORD) as coord, market.bus(BOB) as bob:
        await bob.subscribe(topics.outbox("m1", BOB))
        # Mosquitto grants a v3.1.1 subscription and filters each delivery; amqtt refuses
        with contextlib.suppress(BusError):
            await bob.subscribe(topics.outbox("m1", ALICE))
        await coord.publish(topics.outbox("m1", ALICE), b"alice's assignment")
        await coord.publish(topics.outbox("m1", BOB), b"bob's receipt")
        assert Delivery(topics.outbox("m1", BOB), b"bob's receipt") == await first(bob)


async def test_subscription_to_another_outbox_refused_by_embedded() -> None:
    """The embedded broker's ACL refuses the subscription outright."""
    server = EmbeddedBroker(coordinators={COORD: "m1"})
    async with server, Bus(server.url, BOB, username=BOB) as bob:
        with pytest.raises(BusError):
            await bob.subscribe(topics.outbox("m1", ALICE))
        await bob.subscribe(topics.outbox("m1", BOB))
        assert bob.connected


async def test_coordinator_confined_to_its_market(market: Market) -> None:
    """The coordinator of m1 cannot publish into another market's public channel."""
    async with market.bus(COORD) as coord, market.bus(BOB) as bob:
        await bob.subscribe(topics.public("m2"), topics.public("m1"))
        await coord.publish(topics.public("m2"), b"wrong market")
        await coord.publish(topics.public("m1"), b"right market")
        assert Delivery(topics.public("m1"), b"right market") == await first(bob)


async def test_wrong_password_refused(market: Market) -> None:
    """A genesis key with a wrong password cannot log in."""
    from runtime.bus import BusAuthError

    with pytest.raises(BusAuthError):
        async with asyncio.timeout(BOUND):
            await Bus(market.broker.url, ALICE, username=ALICE, password="guess").__aenter__()


async def test_shipped_mosquitto_conf_enforces_acl(tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto.conf, pointed at our files, runs and enforces the ACL."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not on PATH")
    import os
    import pwd

    files = write_broker_files(GENESIS, tmp_path / "proofmarket")
    template = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "mosquitto.conf"
    server = MosquittoBroker(workdir=tmp_path / "mq")
    (tmp_path / "mq").mkdir()
    text = (
        template.read_text()
        .replace("/etc/mosquitto/proofmarket", str(tmp_path / "proofmarket"))
        .replace("/var/lib/mosquitto/", f"{tmp_path / 'mq'}/")
        .replace("listener 1883 127.0.0.1", f"listener {server.port} 127.0.0.1")
        .replace("log_dest syslog", "log_dest none")
    )
    server.config = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" + text
    market = Market(server, json.loads(files.credentials.read_text()))
    async with server, market.bus(COORD) as coord, market.bus(ALICE) as alice:
        await coord.subscribe(*topics.coordinator_subscriptions("m1"))
        await alice.publish(topics.inbox("m1", BOB), b"forged bid")
        await alice.publish(topics.inbox("m1", ALICE), b"honest bid")
        assert Delivery(topics.inbox("m1", ALICE), b"honest bid") == await first(coord)
