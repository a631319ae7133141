"""The prover node on the wire: broker messages in, the core's effects out.

One task reads the bus and opens envelopes; another says `prover_online` on every
(re)connect, so the coordinator calls off the rescue a will of an earlier connection
started (docs/market.md, "Wills"); every event (a message, a tick, a finished
batch) goes through one queue to the core, so the core sees them one at a time. Proving
runs in a process pool, so a long batch never stalls the event loop: announcements are
still answered and ticks still fire while the workers grind.

Time on the wire is wall-clock milliseconds (deadlines are compared across machines);
the event loop's own timer only schedules the wake-ups.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import structlog

from protocol.envelope import envelope_ref
from protocol.events import MessageReceived, Publish, Tick, WakeAt
from protocol.identity import Identity
from protocol.messages import Assignment, Message, Reject, Rejects, SettlementNotice, TaskProof
from protocol.rejects import RejectCode
from protocol.wire import Wire
from prover_node.core import ProverCore, ProverEffect, ProverEvent, ProvingDone, StartProving
from prover_node.metrics import ProverMetrics
from prover_node.proving import prove_tasks, split_batch, warm_up
from runtime.bus import Bus, BusStats, BusTimeoutError
from runtime.memory_bus import open_bus
from runtime.metrics import bus_check, serving
from runtime.process import Clock, exit_with_parent, install_stop_signals, wall_ms
from runtime.publish import publish_retrying

RESEND_KEPT = 256
"""Envelopes sent that the prover keeps to send again if the coordinator was too busy."""
RESEND_TRIES = 5
RESEND_FIRST_S = 0.2
"""An envelope refused `overloaded` goes again after 0.2 s, then 0.4, 0.8, ... (5 tries)."""

POOL_JOIN_S = 5.0
"""Bound on waiting for the proving pool's manager thread once its workers are terminated."""

CONNECTS_POLL_S = 3600.0
"""How long one wait for the next (re)connect lasts before it is simply waited again."""


@dataclass(frozen=True, slots=True)
class ProverConfig:
    """Everything a prover node needs besides its key."""

    broker: str
    coordinator: str
    market: str
    capacity: int
    cost: int
    workers: int = 1
    fault: str = "none"
    ca_file: str | None = None
    password: str | None = None
    metrics: str | None = None  # HOST:PORT to serve /metrics and /health on


class ProverService:
    """Drives one `ProverCore` from a connected `Bus`."""

    def __init__(
        self,
        core: ProverCore,
        bus: Bus,
        wire: Wire,
        pool: ProcessPoolExecutor,
        *,
        workers: int = 1,
        clock: Clock = wall_ms,
        metrics: bool = False,
    ) -> None:
        self.core = core
        self.workers = workers
        self.bus = bus
        self.wire = wire
        self.pool = pool
        self.clock = clock
        self.log = structlog.get_logger("prover").bind(prover=core.key[:12], market=core.market)
        self._events: asyncio.Queue[ProverEvent] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self._proving: set[asyncio.Future[list[list[TaskProof]]]] = set()
        self.subscribed = False  # every topic granted once (the bus renews them)
        self._sent: collections.OrderedDict[bytes, tuple[str, bytes]] = collections.OrderedDict()
        self._tries: dict[bytes, int] = {}
        self._resending: set[asyncio.Task[None]] = set()
        self.metrics = ProverMetrics(core, bus, self._events.qsize) if metrics else None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set or the bus closes."""
        await self.bus.subscribe(*self.wire.subscriptions())
        self.subscribed = True
        self._stopping = stop
        # Back online before the workers start: a restarted prover's batch waits for it
        # only through the reconnect grace (docs/market.md, "Wills").
        presence = asyncio.create_task(self._say_online(), name="prover:online")
        try:
            await self._warm_up()
        except BaseException:
            presence.cancel()
            raise
        reader = asyncio.create_task(self._read(), name="prover:read")
        stopper = asyncio.create_task(stop.wait(), name="prover:stop")
        getter: asyncio.Task[ProverEvent] | None = None
        try:
            while True:
                getter = asyncio.create_task(self._events.get())
                done, _ = await asyncio.wait(
                    {getter, stopper, reader}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    break
                event = getter.result()
                if isinstance(event, MessageReceived):
                    self._note(event.message)
                    for ref in overloaded_refs(event.message):
                        self._resend_later(ref)
                for effect in self.core.handle(event):
                    await self._carry_out(effect)
        finally:
            pending = [t for t in (reader, presence, stopper, getter) if t is not None]
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
            for timer in self._timers:
                timer.cancel()
            for resend in self._resending:
                resend.cancel()
            self.log.info("prover.stopped", **self.core.stats.as_dict())
        error = None if reader.cancelled() else reader.exception()
        if error is not None:
            raise error  # the bus failed for good (e.g. the broker refused our login)

    def _note(self, message: Message) -> None:
        """Log what an operator watches for: money moving and inputs refused."""
        if isinstance(message, SettlementNotice):
            self.log.info(f"prover.{message.outcome}", round=message.round, amount=message.amount)
        elif isinstance(message, Reject):
            self.log.warning(
                "prover.rejected", code=message.code, reason=message.reason, round=message.round
            )
        elif isinstance(message, Assignment):
            self.log.info("prover.assigned", round=message.round, tasks=len(message.tasks))

    async def _warm_up(self) -> None:
        """Start every worker now: a first batch must not pay for process start-up."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self.pool, warm_up) for _ in range(self.workers))
        )
        self.log.info(
            "prover.started",
            capacity=self.core.capacity,
            cost=self.core.cost,
            fault=self.core.fault,
        )

    async def _say_online(self) -> None:
        """Send `prover_online` once for each connection the bus makes, the first included.

        Stamped as that connection's will, so the coordinator can tell it from a will of
        an earlier one that the broker delivers late (coordinator/presence.py).
        """
        told = 0
        while True:
            connects = self.bus.stats.connects
            if connects > told:
                told = connects
                topic, payload = self.wire.online(self.clock())
                await publish_retrying(
                    self.bus, topic, payload, stopping=self._stopping, log=self.log
                )
                self.log.info("prover.online", connects=connects)
                continue
            with contextlib.suppress(BusTimeoutError):
                await self.bus.wait_until(functools.partial(_newer, told), CONNECTS_POLL_S)

    async def _read(self) -> None:
        async for delivery in self.bus.messages():
            opened = self.wire.open(
                delivery.topic, delivery.payload, now=self.clock(), retained=delivery.retained
            )
            if opened is not None:
                self._events.put_nowait(opened[1])

    async def _carry_out(self, effect: ProverEffect) -> None:
        if isinstance(effect, Publish):
            for topic, payload in self.wire.seal(effect.message, to=effect.to):
                self._keep(topic, payload)
                await publish_retrying(
                    self.bus, topic, payload, stopping=self._stopping, log=self.log
                )
                self.log.debug("prover.sent", kind=type(effect.message).__name__, topic=topic)
        elif isinstance(effect, WakeAt):
            self._wake_at(effect.at)
        elif isinstance(effect, StartProving):
            self._start_proving(effect)

    def _keep(self, topic: str, payload: bytes) -> None:
        self._sent[envelope_ref(payload)] = (topic, payload)
        while len(self._sent) > RESEND_KEPT:
            ref, _ = self._sent.popitem(last=False)
            self._tries.pop(ref, None)

    def _resend_later(self, ref: bytes) -> None:
        """Send again, after a growing pause, an envelope the coordinator could not take.

        Nothing of an `overloaded` envelope was recorded, so the same envelope (same
        reference) is simply new to it; a proof is never lost to a flood of task bids.
        """
        sent, tries = self._sent.get(ref), self._tries.get(ref, 0)
        if sent is None or tries >= RESEND_TRIES:
            self.log.warning("prover.overloaded", ref=ref.hex(), tries=tries, resending=False)
            return
        self._tries[ref] = tries + 1

        async def resend() -> None:
            await asyncio.sleep(RESEND_FIRST_S * 2**tries)  # a back-off, not a wait for anything
            await publish_retrying(self.bus, *sent, stopping=self._stopping, log=self.log)
            self.log.info("prover.resent", ref=ref.hex(), tries=tries + 1)

        task = asyncio.create_task(resend(), name="prover:resend")
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)

    def _wake_at(self, at: int) -> None:
        loop = asyncio.get_running_loop()

        def fire(handle: list[asyncio.TimerHandle]) -> None:
            self._timers.discard(handle[0])
            now = self.clock()
            if now < at:
                self._wake_at(at)  # the timer ran early against the wall clock
            else:
                self._events.put_nowait(Tick(now))

        slot: list[asyncio.TimerHandle] = []
        handle = loop.call_later(max(0, at - self.clock()) / 1000, fire, slot)
        slot.append(handle)
        self._timers.add(handle)

    def _start_proving(self, start: StartProving) -> None:
        loop = asyncio.get_running_loop()
        started = self.clock()
        chunks = split_batch(start.tasks, self.workers)
        self.log.info(
            "prover.proving", round=start.round, tasks=len(start.tasks), chunks=len(chunks)
        )
        futures = [
            loop.run_in_executor(
                self.pool,
                functools.partial(
                    prove_tasks, chunk, difficulty=start.difficulty, setup=start.setup
                ),
            )
            for chunk in chunks
        ]
        batch = asyncio.gather(*futures)
        self._proving.add(batch)

        def done(fut: asyncio.Future[list[list[TaskProof]]]) -> None:
            self._proving.discard(fut)
            if fut.cancelled():
                return
            error = fut.exception()
            if error is not None:
                self.log.error("prover.proving_failed", round=start.round, error=repr(error))
                return
            now = self.clock()
            self.log.info("prover.proved", round=start.round, ms=now - started)
            if self.metrics is not None:
                self.metrics.proving_seconds.observe((now - started) / 1000)
            proofs = [proof for chunk in fut.result() for proof in chunk]
            self._events.put_nowait(ProvingDone(start.round, proofs, now))

        batch.add_done_callback(done)


def overloaded_refs(message: Message) -> list[bytes]:
    """The envelopes a reject says the coordinator was too busy to take."""
    code = RejectCode.OVERLOADED
    if isinstance(message, Reject):
        return [message.ref] if message.code == code else []
    if isinstance(message, Rejects):
        return [entry.ref for entry in message.rejects if entry.code == code]
    return []


def _newer(told: int, stats: BusStats) -> bool:
    """Whether the bus made a connection since the `told`-th."""
    return stats.connects > told


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop the pool now: queued batches are dropped and running workers terminated."""
    manager: threading.Thread | None = getattr(pool, "_executor_manager_thread", None)
    # Taken before the shutdown, which forgets them.
    processes: dict[int, multiprocessing.Process] = getattr(pool, "_processes", None) or {}
    workers = list(processes.values())
    pool.shutdown(wait=False, cancel_futures=True)
    # A batch can take seconds; a node told to stop must not wait for it to finish.
    for process in workers:
        with contextlib.suppress(Exception):
            process.terminate()
    if manager is not None:
        # Python 3.11's exit hook wakes this thread without its lock; were the thread
        # still closing its pipe then, the exit would write to a closed descriptor and
        # print a traceback. With its workers gone it ends at once.
        manager.join(timeout=POOL_JOIN_S)


async def run_prover(
    identity: Identity,
    config: ProverConfig,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock = wall_ms,
) -> ProverCore:
    """Run a prover node until `stop` is set and return its final core.

    Without `stop`, SIGINT and SIGTERM end it. Either way it leaves cleanly: a proper
    disconnect (so the broker keeps its session and does not fire its will) and the
    proving pool's workers terminated.
    """
    core = ProverCore(
        identity.public_hex,
        config.coordinator,
        config.market,
        config.capacity,
        config.cost,
        config.fault,
    )
    if config.workers < 1:
        raise ValueError(f"workers must be >= 1, got {config.workers}")
    if stop is None:
        # no caller to stop us: SIGINT and SIGTERM do
        stop = asyncio.Event()
        install_stop_signals(stop)
    wire = Wire(identity, coordinator=config.coordinator, market=config.market)
    # spawn, not fork: a forked child would inherit the event loop and the broker socket
    pool = ProcessPoolExecutor(
        config.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        async with open_bus(
            config.broker,
            client_id=identity.public_hex,
            username=identity.public_hex,
            password=config.password,
            ca_file=config.ca_file,
            will=lambda: wire.will(clock()),
        ) as bus:
            service = ProverService(
                core,
                bus,
                wire,
                pool,
                workers=config.workers,
                clock=clock,
                metrics=config.metrics is not None,
            )
            registry = None if service.metrics is None else service.metrics.registry
            checks = {"broker": bus_check(service.bus, lambda: service.subscribed)}
            async with serving(config.metrics, registry, checks, service.log):
                await service.run(stop)
    finally:
        _stop_pool(pool)
    return core


__all__ = ["ProverConfig", "ProverService", "run_prover"]
