"""The prover and user services over real brokers, with a scripted coordinator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningBroker

from deploy.broker import EmbeddedBroker
from protocol import topics, workload
from protocol.envelope import bid_ref, open_envelope, seal
from protocol.identity import Identity
from protocol.messages import (
    AssignedTask,
    Assignment,
    BidReceipt,
    CapacityDeclaration,
    MarketParams,
    Message,
    ProofSubmission,
    ProverCostBid,
    ProverOnline,
    Reject,
    RoundAnnouncement,
    SettlementNotice,
    TaskBidMessage,
    TaskBids,
)
from prover_node.service import ProverConfig, run_prover
from runtime.bus import Bus, BusError
from runtime.process import wall_ms
from user_client.identities import fleet_identities
from user_client.service import Connections, UserConfig, run_user

pytestmark = pytest.mark.broker

MARKET = "m1"
WAIT = 30.0  # bound on every wait for a message; generous for a loaded 2-core machine
COORD = Identity.from_seed(b"\x20" * 32)
PROVER = Identity.from_seed(b"\x21" * 32)
USER = Identity.from_seed(b"\x22" * 32)
PARAMS = MarketParams(
    market=MARKET,
    p_max=100,
    epoch_rounds=4,
    capacity_factor=2,
    mechanism="prooph",
    difficulty=20,
    setup=5,
    bid_window_ms=1000,
    prove_window_ms=2000,
)


class FakeCoordinator:
    """Plays the coordinator's side of the wire with real envelopes on a real broker."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.bid_refs: dict[str, bytes] = {}  # task id -> the bid ref it came under
        self._entries: list[tuple[str, Message, int]] = []  # of a bulk, not yet returned
        self.onlines: list[tuple[str, ProverOnline]] = []  # set aside by `receive`
        self.last_ref = b""  # the envelope reference of the last message `receive` returned

    async def announce(self, round: int, prove_deadline: int = 10**15) -> None:
        msg = RoundAnnouncement(
            market=MARKET,
            round=round,
            epoch=round // PARAMS.epoch_rounds,
            bid_deadline=prove_deadline,
            prove_deadline=prove_deadline,
            params=PARAMS,
        )
        await self.bus.publish(topics.public(MARKET), seal(COORD, msg))

    async def send(self, to: str, msg: Message) -> None:
        await self.bus.publish(topics.outbox(MARKET, to), seal(COORD, msg, MARKET, to))

    async def receive(self) -> tuple[str, Message, int]:
        """The next message from a participant: sender, message, arrival wall time.

        A bulk of task bids comes out as the task bids it carries, one per call.
        """
        if self._entries:
            return self._entries.pop(0)
        async with asyncio.timeout(WAIT):
            async for delivery in self.bus.messages():
                if topics.parse(delivery.topic).channel == "will":
                    continue  # a broker restart may fire wills; those tests read them raw
                opened = open_envelope(COORD, delivery.payload, market=MARKET)
                assert topics.inbox(MARKET, opened.sender) == delivery.topic
                message, now = opened.message, wall_ms()
                if isinstance(message, ProverOnline):
                    self.onlines.append((opened.sender, message))
                    continue  # sent on every (re)connect; tests of it read `onlines`
                if isinstance(message, TaskBidMessage):
                    self.bid_refs[message.task_id] = opened.ref
                if not isinstance(message, TaskBids):
                    self.last_ref = opened.ref
                    return opened.sender, message, now
                for i in range(len(message.bids)):
                    self.bid_refs[message.bids[i].task_id] = bid_ref(opened.ref, i)
                    self._entries.append((opened.sender, message.entry(i), now))
                return self._entries.pop(0)
        raise AssertionError("bus closed")


@asynccontextmanager
async def coordinator(broker: RunningBroker) -> AsyncIterator[FakeCoordinator]:
    login = broker.login(COORD.public_hex)
    async with Bus(
        broker.url, COORD.public_hex, username=login["username"], password=login["password"]
    ) as bus:
        await bus.subscribe(*topics.coordinator_subscriptions(MARKET))
        yield FakeCoordinator(bus)


def prover_config(broker: RunningBroker, fault: str = "none") -> ProverConfig:
    return ProverConfig(
        broker=broker.url_for(PROVER.public_hex),
        coordinator=COORD.public_hex,
        market=MARKET,
        capacity=2,
        cost=3,
        workers=2,
        fault=fault,
    )


TASKS = [AssignedTask(f"t{i}", bytes([i]) * 8) for i in range(3)]


def assignment(round: int, deadline: int = 10**15) -> Assignment:
    return Assignment(
        market=MARKET,
        round=round,
        prove_deadline=deadline,
        difficulty=PARAMS.difficulty,
        setup=PARAMS.setup,
        payment=6,
        tasks=TASKS,
    )


async def wait_subscribed(fake: FakeCoordinator, round: int) -> tuple[str, Message]:
    """Announce until the participant answers (it may not have subscribed yet)."""
    async with asyncio.timeout(WAIT):
        while True:
            await fake.announce(round)
            try:
                async with asyncio.timeout(1.0):
                    sender, first, _ = await fake.receive()
                    return sender, first
            except TimeoutError:
                continue


def participant(
    broker: RunningBroker, command: str, identity: Identity, key: Path, *args: str, **kw: Any
) -> Awaitable[asyncio.subprocess.Process]:
    """`proofmarket prover|user` as a child process, logged in and pointed at the fake."""
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proofmarket",
        command,
        "--broker",
        broker.url_for(identity.public_hex),
        "--key",
        str(key),
        "--coordinator",
        COORD.public_hex,
        "--market",
        MARKET,
        *args,
        **kw,
    )


async def test_prover_bids_proves_and_submits_valid_proofs(broker: RunningBroker) -> None:
    """Over a real broker: capacity and cost bids on announcement, valid proofs on assignment."""
    stop = asyncio.Event()
    async with coordinator(broker) as fake:
        node = asyncio.create_task(run_prover(PROVER, prover_config(broker), stop=stop))
        _, first = await wait_subscribed(fake, 0)
        _, second, _ = await fake.receive()
        assert [
            CapacityDeclaration(market=MARKET, epoch=0, capacity=2),
            ProverCostBid(market=MARKET, round=0, cost=3),
        ] == [first, second]
        await fake.send(PROVER.public_hex, assignment(0))
        await fake.send(PROVER.public_hex, assignment(0))  # redelivery proves nothing twice
        sender, submission, _ = await fake.receive()
        assert PROVER.public_hex == sender
        assert isinstance(submission, ProofSubmission)
        checks = workload.verify_batch(
            [t.task_input for t in TASKS],
            [p.proof for p in submission.proofs],
            difficulty=PARAMS.difficulty,
        )
        assert [True, True, True] == checks
        await fake.send(
            PROVER.public_hex, SettlementNotice(market=MARKET, round=0, outcome="paid", amount=6)
        )
        await fake.announce(1)
        _, bid, _ = await fake.receive()  # its answer shows the notice was handled first
        assert ProverCostBid(market=MARKET, round=1, cost=3) == bid
        stop.set()
        async with asyncio.timeout(WAIT):
            core = await node
    stats = core.stats.as_dict()
    assert (2, 1, 3, 1, 6) == (
        stats["rounds_bid"],
        stats["batches_assigned"],
        stats["proofs_sent"],
        stats["payments"],
        stats["paid_total"],
    )


async def test_prover_sends_again_a_proof_refused_overloaded(broker: RunningBroker) -> None:
    """A proof answered `overloaded` comes again, the same envelope, and only once."""
    stop = asyncio.Event()
    async with coordinator(broker) as fake:
        node = asyncio.create_task(run_prover(PROVER, prover_config(broker), stop=stop))
        await wait_subscribed(fake, 0)
        await fake.receive()  # its cost bid
        await fake.send(PROVER.public_hex, assignment(0))
        _, first, _ = await fake.receive()
        ref = fake.last_ref
        busy = Reject(market=MARKET, code="overloaded", reason="inbox full", ref=ref, round=0)
        await fake.send(PROVER.public_hex, busy)
        _, again, _ = await fake.receive()
        assert (ProofSubmission, first, ref) == (type(again), again, fake.last_ref)
        await fake.announce(1)
        _, bid, _ = await fake.receive()  # the next thing it sends: no third copy
        assert ProverCostBid(market=MARKET, round=1, cost=3) == bid
        stop.set()
        async with asyncio.timeout(WAIT):
            await node


async def test_late_prover_submits_after_the_deadline(embedded_broker: RunningBroker) -> None:
    """A late-fault prover holds its proofs until the prove deadline has passed."""
    stop = asyncio.Event()
    async with coordinator(embedded_broker) as fake:
        task = run_prover(PROVER, prover_config(embedded_broker, "late"), stop=stop)
        node = asyncio.create_task(task)
        await wait_subscribed(fake, 0)
        await fake.receive()
        deadline = wall_ms() + 1500
        await fake.send(PROVER.public_hex, assignment(0, deadline=deadline))
        _, submission, arrived = await fake.receive()
        assert isinstance(submission, ProofSubmission)
        assert arrived > deadline
        stop.set()
        async with asyncio.timeout(WAIT):
            await node


async def run_fleet(broker: RunningBroker, connections: Connections) -> None:
    """A fleet of 3 users bids 2 tasks each, then verifies the proofs it is charged for."""
    identities = fleet_identities(USER, 3)
    config = UserConfig(
        broker=broker.url_for(USER.public_hex),
        coordinator=COORD.public_hex,
        market=MARKET,
        tasks=2,
        fee_range=(5, 50),
        identities=3,
        rounds=1,
        seed=7,
        connections=connections,
    )
    async with coordinator(broker) as fake:
        client = asyncio.create_task(run_user(USER, config))
        received = [await wait_subscribed(fake, 0)]
        while len(received) < 6:
            sender, msg, _ = await fake.receive()
            received.append((sender, msg))
        bids = [(s, m) for s, m in received if isinstance(m, TaskBidMessage)]
        assert 6 == len(bids)
        assert {i.public_hex for i in identities} == {s for s, _ in bids}
        for sender, bid in bids:
            # one receipt per bid, naming the bid ref it came under
            ref = fake.bid_refs[bid.task_id]
            await fake.send(sender, BidReceipt(market=MARKET, round=0, ref=ref))
            proof = workload.prove(bid.task_input, difficulty=PARAMS.difficulty)
            notice = SettlementNotice(
                market=MARKET,
                round=0,
                outcome="charged",
                amount=bid.fee,
                task_id=bid.task_id,
                proof=proof,
            )
            await fake.send(sender, notice)
        async with asyncio.timeout(WAIT):
            fleet = await client
    summary = fleet.summary()
    assert (6, 6, 6, 6, 0) == (
        summary.tasks_bid,
        summary.bids_accepted,
        summary.charged,
        summary.proofs_verified,
        summary.proofs_invalid,
    )
    assert sum(b.fee for _, b in bids) == summary.charged_total


async def test_user_fleet_on_one_connection(broker: RunningBroker) -> None:
    """A fleet sharing one login bids for every identity and verifies every proof."""
    await run_fleet(broker, "shared")


async def test_user_fleet_one_connection_per_identity(embedded_broker: RunningBroker) -> None:
    """A fleet logging in once per identity bids and verifies the same way."""
    await run_fleet(embedded_broker, "per-identity")


async def test_prover_command_stops_cleanly_on_sigterm(
    embedded_broker: RunningBroker, tmp_path: Path
) -> None:
    """`proofmarket prover` bids, then exits 0 on SIGTERM with its stats as JSON."""
    key = tmp_path / "prover.key"
    PROVER.save(key)
    async with coordinator(embedded_broker) as fake:
        process = await participant(
            embedded_broker,
            "prover",
            PROVER,
            key,
            "--capacity",
            "2",
            "--cost",
            "4",
            "--json",
            "--log-format",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            await wait_subscribed(fake, 0)
            _, bid, _ = await fake.receive()
            assert ProverCostBid(market=MARKET, round=0, cost=4) == bid
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                out, err = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert 0 == process.returncode, err.decode()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    assert (PROVER.public_hex, 1) == (stats["prover"], stats["rounds_bid"])
    events = [json.loads(line)["event"] for line in err.decode().splitlines() if line]
    assert "prover.stopped" in events


async def test_user_command_runs_its_rounds_and_exits_with_a_summary(
    embedded_broker: RunningBroker, tmp_path: Path
) -> None:
    """`proofmarket user --rounds 1` bids, takes its settlements, exits 0 with a JSON summary."""
    key = tmp_path / "user.key"
    USER.save(key)
    async with coordinator(embedded_broker) as fake:
        process = await participant(
            embedded_broker,
            "user",
            USER,
            key,
            "--tasks",
            "2",
            "--fee-range",
            "10:20",
            "--identities",
            "2",
            "--rounds",
            "1",
            "--json",
            "--log-format",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            bids = [await wait_subscribed(fake, 0)]
            while len(bids) < 4:
                sender, msg, _ = await fake.receive()
                bids.append((sender, msg))
            for sender, bid in bids:
                assert isinstance(bid, TaskBidMessage)
                notice = SettlementNotice(
                    market=MARKET,
                    round=0,
                    outcome="released",
                    amount=bid.fee,
                    task_id=bid.task_id,
                )
                await fake.send(sender, notice)
            async with asyncio.timeout(WAIT):
                out, err = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert 0 == process.returncode, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    released = sum(b.fee for _, b in bids if isinstance(b, TaskBidMessage))
    assert (4, 4, released) == (
        summary["tasks_bid"],
        summary["released"],
        summary["released_total"],
    )
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    [stopped] = [line for line in lines if line.get("event") == "user.stopped"]
    assert (4, True) == (stopped["bids_sent"], stopped["bids_per_s"] > 0)


async def test_prover_answers_announcements_while_proving(
    embedded_broker: RunningBroker,
) -> None:
    """A long batch runs in the pool: the next round's bid goes out before its proofs."""
    stop = asyncio.Event()
    heavy = Assignment(
        market=MARKET,
        round=0,
        prove_deadline=10**15,
        difficulty=3000,
        setup=0,
        payment=1,
        tasks=[AssignedTask(f"h{i}", bytes([i]) * 8) for i in range(10)],
    )
    config = dataclasses.replace(prover_config(embedded_broker), workers=1)
    async with coordinator(embedded_broker) as fake:
        node = asyncio.create_task(run_prover(PROVER, config, stop=stop))
        await wait_subscribed(fake, 0)
        await fake.receive()
        await fake.send(PROVER.public_hex, heavy)
        await fake.announce(1)
        _, first, _ = await fake.receive()
        _, second, _ = await fake.receive()
        stop.set()
        async with asyncio.timeout(WAIT):
            await node
    assert ProverCostBid(market=MARKET, round=1, cost=3) == first
    assert isinstance(second, ProofSubmission)
    assert 10 == len(second.proofs)


async def test_killed_prover_leaves_its_last_will(
    embedded_broker: RunningBroker, tmp_path: Path
) -> None:
    """When a prover process dies without goodbye, the broker publishes its will."""
    key = tmp_path / "prover.key"
    PROVER.save(key)
    async with coordinator(embedded_broker) as fake:
        process = await participant(
            embedded_broker,
            "prover",
            PROVER,
            key,
            "--capacity",
            "1",
            "--cost",
            "1",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await wait_subscribed(fake, 0)
            await fake.receive()
            process.kill()
            await process.wait()
            async with asyncio.timeout(WAIT):
                async for delivery in fake.bus.messages():
                    if delivery.topic == topics.will(MARKET, PROVER.public_hex):
                        break
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    will = open_envelope(COORD, delivery.payload, market=MARKET)
    assert (PROVER.public_hex, "prover_will") == (will.sender, will.kind)


async def test_prover_says_online_on_connect_and_after_a_broker_restart(
    mosquitto: RunningBroker,
) -> None:
    """A `prover_online` on connecting, and one of a newer connection after a broker restart."""
    stop = asyncio.Event()
    async with coordinator(mosquitto) as fake:
        node = asyncio.create_task(run_prover(PROVER, prover_config(mosquitto), stop=stop))
        try:
            await wait_subscribed(fake, 0)
            await mosquitto.restart()
            async with asyncio.timeout(WAIT):
                while len(fake.onlines) < 2:
                    await wait_subscribed(fake, 1)  # reads on, setting onlines aside
        finally:
            stop.set()
            async with asyncio.timeout(WAIT):
                await node
    (first_sender, first), (second_sender, second) = fake.onlines[:2]
    assert ([PROVER.public_hex] * 2, True) == (
        [first_sender, second_sender],
        first.connected_at < second.connected_at,
    )


async def test_prover_carries_on_after_a_broker_restart(broker: RunningBroker) -> None:
    """After the broker restarts, the prover reconnects and bids in the next round."""
    stop = asyncio.Event()
    async with coordinator(broker) as fake:
        node = asyncio.create_task(run_prover(PROVER, prover_config(broker), stop=stop))
        await wait_subscribed(fake, 0)
        await fake.receive()
        await broker.restart()
        async with asyncio.timeout(WAIT):
            while True:
                _, bid = await wait_subscribed(fake, 1)
                if isinstance(bid, ProverCostBid) and bid.round == 1:
                    break
        stop.set()
        async with asyncio.timeout(WAIT):
            core = await node
    assert 2 == core.stats.rounds_bid


async def test_fleet_per_identity_works_under_the_market_acl() -> None:
    """With the broker's per-key ACL on, a fleet logging in once per identity still trades."""
    server = EmbeddedBroker(coordinators={COORD.public_hex: MARKET})
    async with server:
        await run_fleet(RunningBroker("embedded", server), "per-identity")


async def test_shared_fleet_is_refused_loudly_under_the_market_acl() -> None:
    """A shared-login fleet cannot read other identities' outboxes under the ACL: it fails."""
    server = EmbeddedBroker(coordinators={COORD.public_hex: MARKET})
    config = UserConfig(
        broker=server.url,
        coordinator=COORD.public_hex,
        market=MARKET,
        tasks=1,
        fee_range=(1, 2),
        identities=2,
        password="pw",
    )
    async with server:
        with pytest.raises(BusError, match="refused subscription"):
            async with asyncio.timeout(WAIT):
                await run_user(USER, config, stop=asyncio.Event())
