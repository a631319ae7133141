"""The in-memory bus keeps what the market needs from MQTT, and runs real services."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from coordinator.core import Coordinator
from coordinator.invariants import check_invariants
from coordinator.service import CoordinatorConfig, run_coordinator
from coordinator.state import OpeningBalances
from deploy.market import DEFAULT_MARKET
from protocol.envelope import kind_of, open_envelope
from protocol.identity import Identity
from prover_node.service import ProverConfig, run_prover
from runtime.bus import PayloadTooLargeError
from runtime.memory_bus import MemoryBroker, MemoryBus, memory_broker, topic_matches
from user_client.core import UserFleet
from user_client.service import UserConfig, run_user

WAIT = 60.0


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("market/m/coord/#", "market/m/coord/bid/k", True),
        ("market/m/coord/#", "market/m/coord", True),
        ("market/+/public", "market/m/public", True),
        ("market/+/public", "market/m/x/public", False),
        ("market/m/out/k", "market/m/out/k2", False),
        ("a/b", "a/b/c", False),
    ],
)
def test_topic_filters_match_as_mqtt_does(pattern: str, topic: str, expected: bool) -> None:
    """`+` matches one level and a trailing `#` any number, including none."""
    assert expected == topic_matches(pattern, topic)


async def test_a_session_keeps_what_arrived_while_its_client_was_away() -> None:
    """Messages for an absent client's subscriptions wait for it, in order."""
    broker = MemoryBroker()
    async with MemoryBus(broker, "alice") as alice:
        await alice.subscribe("t/#")
    async with MemoryBus(broker, "bob") as bob:
        await bob.publish("t/1", b"one")
        await bob.publish("t/2", b"two")
    async with MemoryBus(broker, "alice") as alice:
        got = await alice.receive_batch(10)
    assert [("t/1", b"one"), ("t/2", b"two")] == [(d.topic, d.payload) for d in got]


async def test_a_vanished_client_leaves_its_will_and_a_clean_one_does_not() -> None:
    """vanish() sends the will, as a broker does for a killed process; a goodbye does not."""
    broker = MemoryBroker()
    async with MemoryBus(broker, "watcher") as watcher:
        await watcher.subscribe("wills/#")
        async with MemoryBus(broker, "polite", will=("wills/polite", b"bye")):
            pass
        rude = MemoryBus(broker, "rude", will=lambda: ("wills/rude", b"gone"))
        await rude.__aenter__()
        rude.vanish()
        got = await watcher.receive_batch(10)
    assert [("wills/rude", b"gone")] == [(d.topic, d.payload) for d in got]


async def test_the_size_limit_holds_both_ways() -> None:
    """A publish over the limit is refused; an oversized delivery keeps only its digest."""
    broker = MemoryBroker()
    async with MemoryBus(broker, "small", max_payload=10) as small:
        await small.subscribe("big")
        with pytest.raises(PayloadTooLargeError):
            await small.publish("big", b"x" * 11)
        async with MemoryBus(broker, "large") as large:
            await large.publish("big", b"x" * 11)
        (delivery,) = await small.receive_batch(1)
    assert (b"", 11, 1) == (delivery.payload, delivery.size, small.stats.dropped_oversized)


async def test_a_whole_market_settles_over_the_memory_bus() -> None:
    """Coordinator, three provers and a user, with real crypto, trade over memory:// alone."""
    fleet, core = await run_small_market("whole-market", MemoryBroker())
    summary = fleet.summary()
    assert (6, 6, 0) == (summary.tasks_bid, summary.bids_accepted, summary.bids_rejected)
    assert ([], {}) == (check_invariants(core), core.slashes)
    assert 0 < summary.charged
    assert not memory_broker("whole-market").connected(core.key)


class BidLosingBroker(MemoryBroker):
    """Loses the first copy of every task bid, as the broker's acknowledgement of a bid the
    coordinator dies before recording does; `lost_all` is set once `expected` are gone."""

    def __init__(self, users: set[str], expected: int) -> None:
        super().__init__()
        self.users = users
        self.seen: set[bytes] = set()
        self.lost = 0
        self.expected = expected
        self.lost_all = asyncio.Event()

    def route(self, topic: str, payload: bytes) -> None:
        to_coordinator = topic.rsplit("/", 2)[1] == "in"
        if to_coordinator and topic.rsplit("/", 1)[1] in self.users and payload not in self.seen:
            self.seen.add(payload)
            self.lost += 1
            if self.lost >= self.expected:
                self.lost_all.set()
            return
        super().route(topic, payload)


async def test_bids_lost_in_a_coordinator_crash_are_sent_again_and_taken(
    tmp_path: Path,
) -> None:
    """The coordinator dies with a round's bids acknowledged but unrecorded; restarted, it
    announces the round anew and the user sends those bids again: none is lost."""
    broker = BidLosingBroker({USER.public_hex}, expected=1)  # its 3 bids, in one bulk
    fleet, core = await run_small_market(
        "losing", broker, rounds=1, ledger=tmp_path / "ledger.sqlite", crash=broker.lost_all
    )
    summary = fleet.summary()
    assert (1, 3, 0) == (broker.lost, summary.bids_accepted, summary.bids_rejected)
    open_tasks = sum(u.open_tasks for u in fleet.users.values())
    assert ([], {}, 0, True) == (check_invariants(core), core.slashes, open_tasks, fleet.finished)


USER = Identity.from_seed(b"\x95" * 32)


async def run_small_market(
    name: str,
    broker: MemoryBroker,
    *,
    rounds: int = 2,
    ledger: Path | None = None,
    crash: asyncio.Event | None = None,
) -> tuple[UserFleet, Coordinator]:
    """Three provers and a user bidding 3 tasks a round, over the memory broker `name`.

    With `crash`, the coordinator is stopped once it is set and started again on `ledger`.
    """
    url = f"memory://{name}"
    memory_broker(name, broker)
    coordinator = Identity.from_seed(b"\x90" * 32)
    provers = [Identity.from_seed(bytes([0x91 + i]) * 32) for i in range(3)]
    user = USER
    params = msgspec.structs.replace(
        DEFAULT_MARKET,
        market="mem",
        bid_window_ms=800,
        prove_window_ms=3000,
        epoch_rounds=1,
        difficulty=5,
        setup=50,
    )
    config = CoordinatorConfig(
        broker=url,
        params=params,
        genesis=OpeningBalances(
            balances={user.public_hex: 10_000},
            deposits={p.public_hex: 10_000 for p in provers},
        ),
        start_delay_ms=300,
        ledger=None if ledger is None else str(ledger),
    )
    watcher = MemoryBus(broker, "watcher")
    await watcher.__aenter__()
    await watcher.subscribe(*(f"proofmarket/v1/mem/in/{p.public_hex}" for p in provers))
    stop_market, stop_provers = asyncio.Event(), asyncio.Event()
    market = asyncio.create_task(run_coordinator(coordinator, config, stop=stop_market))
    nodes = [
        asyncio.create_task(
            run_prover(
                p,
                ProverConfig(url, coordinator.public_hex, "mem", capacity=1, cost=1 + 5 * i),
                stop=stop_provers,
            )
        )
        for i, p in enumerate(provers)
    ]
    bidder = UserConfig(
        url, coordinator.public_hex, "mem", tasks=3, fee_range=(30, 40), rounds=rounds, seed=1
    )
    try:
        async with asyncio.timeout(WAIT):
            # The user comes once every prover bids; the market runs until it is done.
            heard: set[str] = set()
            while heard != {p.public_hex for p in provers}:
                heard |= {
                    d.topic.rsplit("/", 1)[1]
                    for d in await watcher.receive_batch(100)
                    if kind_of(open_envelope(coordinator, d.payload, market="mem").message)
                    != "prover_online"  # sent on connecting, before its workers are up
                }
            await watcher.__aexit__(None, None, None)
            bidding = asyncio.create_task(run_user(user, bidder, stop=asyncio.Event()))
            if crash is not None:
                await crash.wait()
                stop_market.set()
                await market
                stop_market = asyncio.Event()
                market = asyncio.create_task(run_coordinator(coordinator, config, stop=stop_market))
            fleet = await bidding
            stop_market.set()
            core = await market
    finally:
        stop_market.set()
        stop_provers.set()
        await asyncio.gather(market, *nodes, return_exceptions=True)
    return fleet, core
