"""`proofmarket bench ingest`: how fast the coordinator takes in task bids, against the bus.

Both measurements use the same broker and the same pre-sealed envelopes, sent by the
same publisher process (so publishing never competes with the consumer for its event
loop). The baseline is a bare aiomqtt subscriber that only counts arrivals; the
measured side is the real coordinator service, which for each bid receives, opens,
verifies, validates, escrows, durably records (SQLite, synchronous=FULL) and publishes
a receipt. Both clocks run from the first arrival to the last message handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from coordinator.core import Coordinator, Genesis
from coordinator.service import CoordinatorService
from coordinator.store import SqliteStore
from deploy.market import DEFAULT_MARKET
from protocol import topics
from protocol.bus import Bus, bare_receive
from protocol.envelope import seal
from protocol.identity import Identity
from protocol.messages import TaskBidMessage

MARKET = "bench-ingest"
USERS = 64
PUBLISH_WINDOW = 256  # publishes in flight at once from the publisher process
STALL_S = 15.0  # no bid acknowledged for this long: the broker dropped what is missing


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to."""


def make_bids(
    coordinator: Identity, count: int, seed: int
) -> tuple[list[tuple[str, bytes]], Genesis]:
    """`count` sealed task bids for round 0 from USERS funded users."""
    rng = random.Random(seed)
    users = [Identity.from_seed(rng.randbytes(32)) for _ in range(min(USERS, count))]
    params = DEFAULT_MARKET
    bids = []
    for i in range(count):
        user = users[i % len(users)]
        bid = TaskBidMessage(
            market=MARKET,
            round=0,
            task_id=f"t{i}",
            fee=rng.randint(1, params.p_max),
            task_input=rng.randbytes(32),
        )
        envelope = seal(user, bid, MARKET, coordinator.public_hex)
        bids.append((topics.inbox(MARKET, user.public_hex), envelope))
    genesis = Genesis(balances={u.public_hex: params.p_max * count for u in users})
    return bids, genesis


async def publish_all(url: str, path: Path, topic_override: str | None) -> None:
    """The publisher process: send every (topic, envelope) in `path`, `PUBLISH_WINDOW` at once."""
    bids = msgspec.msgpack.decode(path.read_bytes(), type=list[tuple[str, bytes]])
    window = asyncio.Semaphore(PUBLISH_WINDOW)
    async with Bus(url, client_id=f"bench-publisher-{time.time_ns()}", username="bench") as bus:

        async def one(topic: str, payload: bytes) -> None:
            async with window:
                await bus.publish(topic_override or topic, payload)

        await asyncio.gather(*(one(t, p) for t, p in bids))


@contextlib.asynccontextmanager
async def publisher(
    url: str, path: Path, topic: str | None
) -> AsyncIterator[asyncio.subprocess.Process]:
    args = [sys.executable, "-m", "deploy.ingest_bench", url, str(path)]
    if topic is not None:
        args.append(topic)
    process = await asyncio.create_subprocess_exec(*args)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def measure_bare(url: str, path: Path, count: int, timeout: float) -> float:
    topic = f"proofmarket/v1/{MARKET}-baseline/in/bench"
    subscribed = asyncio.Event()
    receiving = asyncio.create_task(
        bare_receive(
            url, topic, count, username="bench-bare", subscribed=subscribed, timeout=timeout
        )
    )
    async with asyncio.timeout(timeout):
        await subscribed.wait()
    async with publisher(url, path, topic):
        return await receiving


async def measure_coordinator(
    url: str,
    path: Path,
    count: int,
    coordinator: Identity,
    genesis: Genesis,
    workdir: Path,
    timeout: float,
) -> float:
    now = time.time_ns() // 1_000_000
    params = msgspec.structs.replace(
        DEFAULT_MARKET, market=MARKET, bid_window_ms=3_600_000, prove_window_ms=3_600_000
    )
    core = Coordinator(params, genesis, coordinator.public_hex, now)
    store = SqliteStore(workdir / "ledger.sqlite")
    stop = asyncio.Event()
    # A fresh session each run: a persistent one could hold bids left from an aborted run.
    session = f"{coordinator.public_hex[:16]}-bench-{time.time_ns()}"
    running: asyncio.Task[None] | None = None
    try:
        async with Bus(url, client_id=session, username=coordinator.public_hex) as bus:
            service = CoordinatorService(core, coordinator, bus, store)
            running = asyncio.create_task(service.run(stop))
            async with asyncio.timeout(timeout):
                while core.bidding_round != 0:  # round 0 opens on the service's first tick
                    await asyncio.sleep(0.01)
                async with publisher(url, path, None):
                    await _until_acknowledged(service, running, count)
            stop.set()
            await running
    finally:
        if running is not None and not running.done():
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        store.close()
    assert service.stats.first_delivery is not None and service.stats.last_batch is not None
    return service.stats.last_batch - service.stats.first_delivery


async def _until_acknowledged(
    service: CoordinatorService, running: asyncio.Task[None], count: int
) -> None:
    """Poll until `count` bids are acknowledged; fail fast when progress stops."""
    progress, since = -1, time.monotonic()
    while service.stats.bids_acknowledged < count:
        if running.done():
            running.result()
        if service.stats.bids_acknowledged != progress:
            progress, since = service.stats.bids_acknowledged, time.monotonic()
        elif time.monotonic() - since > STALL_S:
            raise BenchError(
                f"the coordinator acknowledged {progress} of {count} bids and then nothing "
                f"for {STALL_S:.0f}s: the broker dropped the rest (for Mosquitto, raise "
                "max_queued_messages; deploy/mosquitto/mosquitto.conf sets 100000)"
            )
        await asyncio.sleep(0.005)


async def run_bench(
    url: str, count: int, *, repeat: int = 3, seed: int = 7, timeout: float = 300.0
) -> dict[str, object]:
    """Best of `repeat` runs of each side, alternated so that load from elsewhere on the
    machine falls on both alike."""
    coordinator = Identity.from_seed(random.Random(seed).randbytes(32))
    bids, genesis = make_bids(coordinator, count, seed)
    bare: list[float] = []
    measured: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        path = Path(tmp) / "bids.msgpack"
        path.write_bytes(msgspec.msgpack.encode(bids))
        for n in range(repeat):
            workdir = Path(tmp) / f"run-{n}"
            workdir.mkdir()
            bare.append(await measure_bare(url, path, count, timeout))
            measured.append(
                await measure_coordinator(url, path, count, coordinator, genesis, workdir, timeout)
            )
    coordinator_rate = count / min(measured)
    bare_rate = count / min(bare)
    return {
        "bids": count,
        "bytes": len(bids[0][1]),
        "coordinator_per_s": round(coordinator_rate, 1),
        "bare_per_s": round(bare_rate, 1),
        "ratio": round(coordinator_rate / bare_rate, 3),
    }


def main() -> None:
    url, path = sys.argv[1], Path(sys.argv[2])
    topic = sys.argv[3] if len(sys.argv) > 3 else None
    asyncio.run(publish_all(url, path, topic))


if __name__ == "__main__":
    main()
