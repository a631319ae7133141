"""`proofmarket bench ingest`: how fast the coordinator takes in task bids, against the bus.

Both sides drain the same pre-sealed envelopes from the same broker: each side's
persistent session is subscribed first, then a publisher process sends every bid
while the side is away, and the timed part is taking them in when it comes back. So
the publisher's own work never shares the CPU with what is measured (on a real
market the users publish from their own machines). The baseline is a bare aiomqtt
subscriber that only counts arrivals; the measured side is the real coordinator
service, which for each bid receives, opens, verifies, validates, escrows, durably
records (SQLite, synchronous=FULL) and publishes a receipt. Both clocks run from the
first arrival to the last message handled.
"""

from __future__ import annotations

import asyncio
import functools
import random
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from coordinator.core import Coordinator
from coordinator.service import CoordinatorService, IngestStats
from coordinator.state import OpeningBalances
from coordinator.store import SqliteStore
from coordinator.verifier import SignatureVerifier, default_workers, open_verifier
from deploy.market import DEFAULT_MARKET
from protocol import topics
from protocol.envelope import seal
from protocol.identity import Identity
from protocol.messages import TASK_BIDS_MAX, TaskBidEntry, TaskBidMessage, TaskBids
from runtime.bus import DEFAULT_QUEUE_SIZE, Bus, bare_receive

MARKET = "bench-ingest"
USERS = 64
PUBLISH_WINDOW = 256  # publishes in flight at once from the publisher process
STALL_S = 15.0  # no bid acknowledged for this long: the broker dropped what is missing


MODES = {
    "drain": "the bids wait at the broker for each side's session; the clock runs while "
    "it takes them in (the consumer's capacity: nothing else uses the CPU)",
    "live": "a publisher process sends while each side receives (both share the CPU with "
    "the publisher, whose pace bounds the baseline)",
}


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to."""


def make_bids(
    coordinator: Identity, count: int, seed: int, bulk: int = 1
) -> tuple[list[tuple[str, bytes]], OpeningBalances]:
    """`count` task bids for round 0 from USERS funded users, sealed `bulk` to an envelope
    (a `task_bid` each when bulk is 1, `task_bids` otherwise)."""
    rng = random.Random(seed)
    envelopes = -(-count // bulk)
    users = [Identity.from_seed(rng.randbytes(32)) for _ in range(min(USERS, envelopes))]
    params = DEFAULT_MARKET
    sealed = []
    for n in range(envelopes):
        user = users[n % len(users)]
        entries = [
            TaskBidEntry(f"t{i}", rng.randint(1, params.p_max), rng.randbytes(32))
            for i in range(n * bulk, min(count, (n + 1) * bulk))
        ]
        bids = TaskBids(market=MARKET, round=0, bids=entries)
        message: TaskBidMessage | TaskBids = bids.entry(0) if bulk == 1 else bids
        envelope = seal(user, message, MARKET, coordinator.public_hex)
        sealed.append((topics.inbox(MARKET, user.public_hex), envelope))
    genesis = OpeningBalances(balances={u.public_hex: params.p_max * count for u in users})
    return sealed, genesis


async def publish_all(url: str, path: Path, topic_override: str | None) -> None:
    """The publisher process: send every (topic, envelope) in `path`, `PUBLISH_WINDOW` at once."""
    bids = msgspec.msgpack.decode(path.read_bytes(), type=list[tuple[str, bytes]])
    window = asyncio.Semaphore(PUBLISH_WINDOW)
    async with Bus(url, client_id=f"bench-publisher-{time.time_ns()}", username="bench") as bus:

        async def one(topic: str, payload: bytes) -> None:
            async with window:
                await bus.publish(topic_override or topic, payload)

        await asyncio.gather(*(one(t, p) for t, p in bids))


async def publish_file(url: str, path: Path, topic: str | None) -> None:
    """Publish every bid in `path` from a process of its own and wait until it has."""
    args = [sys.executable, "-m", "deploy.ingest_bench", url, str(path)]
    if topic is not None:
        args.append(topic)
    process = await asyncio.create_subprocess_exec(*args)
    try:
        if await process.wait() != 0:
            raise BenchError(f"the publisher exited with status {process.returncode}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def measure_bare(url: str, path: Path, count: int, timeout: float, mode: str) -> float:
    """Seconds a bare subscriber takes to receive `count` bids (see MODES)."""
    topic = f"proofmarket/v1/{MARKET}-baseline/in/bench"
    session = f"bench-bare-{time.time_ns()}"
    if mode == "drain":
        async with Bus(url, client_id=session, username="bench-bare") as bus:
            await bus.subscribe(topic)
        await publish_file(url, path, topic)
        return await bare_receive(
            url, topic, count, username="bench-bare", client_id=session, timeout=timeout
        )
    subscribed = asyncio.Event()
    receiving = asyncio.create_task(
        bare_receive(
            url,
            topic,
            count,
            username="bench-bare",
            client_id=session,
            subscribed=subscribed,
            timeout=timeout,
        )
    )
    try:
        async with asyncio.timeout(timeout):
            await subscribed.wait()
        await publish_file(url, path, topic)
        return await receiving
    finally:
        if not receiving.done():
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)


async def measure_coordinator(
    url: str,
    path: Path,
    count: int,
    coordinator: Identity,
    genesis: OpeningBalances,
    workdir: Path,
    verify_workers: int,
    mode: str,
) -> float:
    """Seconds the coordinator service takes to take in `count` bids (see MODES).

    In drain mode the service runs once to open round 0 and stops (its session and
    subscriptions stay at the broker), the bids are published, and a second service
    over the same core and ledger takes them in: the timed part.
    """
    now = time.time_ns() // 1_000_000
    params = msgspec.structs.replace(
        DEFAULT_MARKET, market=MARKET, bid_window_ms=3_600_000, prove_window_ms=3_600_000
    )
    core = Coordinator(params, genesis, coordinator.public_hex, now)
    store = SqliteStore(workdir / "ledger.sqlite")
    # A fresh session each run: a persistent one could hold bids left from an aborted run.
    session = f"{coordinator.public_hex[:16]}-bench-{time.time_ns()}"
    verifier = await open_verifier(verify_workers)
    serve = functools.partial(_serve, core, coordinator, url, session, store, verifier)
    try:
        if mode == "drain":
            await serve(0, None)
            await publish_file(url, path, None)
            stats = await serve(count, None)
        else:
            stats = await serve(count, functools.partial(publish_file, url, path, None))
    finally:
        store.close()
        verifier.close()
    assert stats.first_delivery is not None and stats.last_batch is not None
    return stats.last_batch - stats.first_delivery


async def _serve(
    core: Coordinator,
    coordinator: Identity,
    url: str,
    session: str,
    store: SqliteStore,
    verifier: SignatureVerifier,
    bids: int,
    feed: Callable[[], Coroutine[Any, Any, None]] | None,
) -> IngestStats:
    """Run a coordinator service on `session` until round 0 is open and `bids` acknowledged.

    `feed`, if given, is started once round 0 is open. The last run (bids > 0)
    unsubscribes, so the session stops collecting bench bids.
    """
    stop = asyncio.Event()
    # room for every bid at once: the figure is the service's pace, not the inbox bound
    queue_size = max(DEFAULT_QUEUE_SIZE, bids + 1)
    async with Bus(
        url, client_id=session, username=coordinator.public_hex, queue_size=queue_size
    ) as bus:
        service = CoordinatorService(core, coordinator, bus, store, verifier=verifier)
        running = asyncio.create_task(service.run(stop))
        feeding: asyncio.Task[None] | None = None
        try:
            while core.bidding_round != 0:  # round 0 opens on the service's first tick
                if running.done():
                    running.result()
                await asyncio.sleep(0.01)
            if feed is not None:
                feeding = asyncio.create_task(feed())
            await _until_acknowledged(service, running, bids)
            if feeding is not None:
                await feeding
            stop.set()
            await running
        finally:
            for task in (running, feeding):
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        if bids:
            await bus.unsubscribe(*topics.coordinator_subscriptions(MARKET))
    return service.stats


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
    url: str,
    count: int,
    *,
    repeat: int = 5,
    seed: int = 7,
    timeout: float = 300.0,
    verify_workers: int | None = None,
    mode: str = "live",
    bulk: int = 1,
) -> dict[str, object]:
    """Best of `repeat` runs of each side, alternated so that load from elsewhere on the
    machine falls on both alike.

    With `bulk` > 1 the bids go `bulk` to an envelope: the baseline receives the same
    envelopes, so `ratio` compares envelopes handled per second on both sides, while
    `coordinator_per_s` counts task bids.
    """
    if mode not in MODES:
        raise BenchError(f"mode is one of {', '.join(MODES)}, not {mode!r}")
    if not 1 <= bulk <= TASK_BIDS_MAX:
        raise BenchError(f"bulk is 1 to {TASK_BIDS_MAX}, not {bulk}")
    if verify_workers is None:
        verify_workers = default_workers()
    coordinator = Identity.from_seed(random.Random(seed).randbytes(32))
    bids, genesis = make_bids(coordinator, count, seed, bulk)
    bare: list[float] = []
    measured: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        path = Path(tmp) / "bids.msgpack"
        path.write_bytes(msgspec.msgpack.encode(bids))
        for n in range(repeat):
            workdir = Path(tmp) / f"run-{n}"
            workdir.mkdir()
            async with asyncio.timeout(timeout):
                bare.append(await measure_bare(url, path, len(bids), timeout, mode))
                measured.append(
                    await measure_coordinator(
                        url,
                        path,
                        count,
                        coordinator,
                        genesis,
                        workdir,
                        verify_workers,
                        mode,
                    )
                )
    coordinator_rate = count / min(measured)
    envelope_rate = len(bids) / min(measured)
    bare_rate = len(bids) / min(bare)
    return {
        "bids": count,
        "bulk": bulk,
        "envelopes": len(bids),
        "bytes": len(bids[0][1]),
        "coordinator_per_s": round(coordinator_rate, 1),
        "coordinator_envelopes_per_s": round(envelope_rate, 1),
        "bare_per_s": round(bare_rate, 1),
        "ratio": round(envelope_rate / bare_rate, 3),
        "verify_workers": verify_workers,
        "mode": mode,
    }


def main() -> None:
    url, path = sys.argv[1], Path(sys.argv[2])
    topic = sys.argv[3] if len(sys.argv) > 3 else None
    asyncio.run(publish_all(url, path, topic))


if __name__ == "__main__":
    main()
