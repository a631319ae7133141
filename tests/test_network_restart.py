"""A coordinator restarted on its ledger owes the wire what it recorded but never sent.

The service writes a batch's records durably and only then publishes the batch's
messages. A crash between the two leaves a ledger that says "round 0 cleared, prover P
owes proofs" while P never received its assignment. This test builds exactly that ledger
(the pure core fed real bids, its records appended to the SQLite store the way the
service does), then starts the real coordinator on it over a real broker and listens as P.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from conftest import RunningBroker

from coordinator.core import Coordinator
from coordinator.record_log import open_record_log
from coordinator.records import encode_record
from coordinator.service import CoordinatorConfig, run_coordinator
from coordinator.state import OpeningBalances
from protocol import topics
from protocol.envelope import open_envelope
from protocol.events import MessageReceived, Record, Tick
from protocol.identity import Identity
from protocol.messages import (
    Assignment,
    CapacityDeclaration,
    MarketParams,
    Message,
    ProverCostBid,
    SettlementNotice,
    TaskBidMessage,
)
from runtime.bus import Bus
from runtime.process import wall_ms

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MARKET = "resume"
WAIT = 30.0
PARAMS = MarketParams(
    market=MARKET,
    p_max=100,
    epoch_rounds=4,
    capacity_factor=2,
    mechanism="prooph",
    difficulty=5,
    setup=10,
    bid_window_ms=1000,
    prove_window_ms=4000,
)
COORDINATOR = Identity.from_seed(b"\x50" * 32)
CHEAP = Identity.from_seed(b"\x51" * 32)  # capacity 2, cost 5: wins round 0
DEAR = Identity.from_seed(b"\x52" * 32)  # capacity 3, cost 50: sets the price
USERS = [Identity.from_seed(bytes([0x53 + i]) * 32) for i in range(4)]
GENESIS = OpeningBalances(
    balances={u.public_hex: 1_000 for u in USERS},
    deposits={CHEAP.public_hex: 1_000, DEAR.public_hex: 1_000},
)


def crashed_after_clearing(config: CoordinatorConfig) -> None:
    """Write the ledger of a coordinator that recorded round 0's clearing, then died."""
    store = open_record_log(
        config.ledger,
        key=COORDINATOR.public_hex,
        params=config.params,
        genesis=config.genesis,
        start_ms=wall_ms() + config.start_delay_ms,
    )
    meta = store.meta
    assert 0 == len(store)
    core = Coordinator(PARAMS, GENESIS, COORDINATOR.public_hex, meta.start_ms, rounds=2)
    start = meta.start_ms
    bid_deadline = start + PARAMS.bid_window_ms

    def feed(event: MessageReceived | Tick) -> None:
        records = [encode_record(e.event) for e in core.handle(event) if isinstance(e, Record)]
        store.append_many(records)

    def receive(sender: Identity, message: Message, at: int) -> None:
        feed(MessageReceived(sender.public_hex, message, os.urandom(16), at))

    try:
        feed(Tick(start))
        for prover, capacity, cost in ((CHEAP, 2, 5), (DEAR, 3, 50)):
            receive(prover, CapacityDeclaration(market=MARKET, epoch=0, capacity=capacity), start)
            receive(prover, ProverCostBid(market=MARKET, round=0, cost=cost), start)
        for i, user in enumerate(USERS):
            bid = TaskBidMessage(
                market=MARKET, round=0, task_id=f"t{i}", fee=90, task_input=f"t{i}".encode()
            )
            receive(user, bid, start)
        feed(Tick(bid_deadline))
    finally:
        store.close()
    # round 0 cleared (round 1 is open) with a batch owed: the state the crash leaves
    assert 1 == core.bidding_round
    assert not core.finished


async def test_restarted_coordinator_sends_the_assignment_it_recorded(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """After a crash between recording a clearing and publishing it, the winner is assigned."""
    config = CoordinatorConfig(
        broker=broker.url,
        params=PARAMS,
        genesis=GENESIS,
        ledger=f"{tmp_path}/ledger.sqlite",
        rounds=2,
        # round 0's bids closed half a second ago; its proofs are due in 3.5 s
        start_delay_ms=-1500,
    )
    crashed_after_clearing(config)
    name = CHEAP.public_hex
    login = broker.login(name)
    async with Bus(broker.url, name, username=name, password=login["password"]) as bus:
        await bus.subscribe(topics.outbox(MARKET, name))
        market = asyncio.create_task(run_coordinator(COORDINATOR, config))
        try:
            async with asyncio.timeout(WAIT):
                async for delivery in bus.messages():
                    message = open_envelope(CHEAP, delivery.payload, market=MARKET).message
                    if isinstance(message, Assignment | SettlementNotice) and message.round == 0:
                        break
        finally:
            market.cancel()
            await asyncio.gather(market, return_exceptions=True)
    assert isinstance(message, Assignment), message
    assert 2 == len(message.tasks)
