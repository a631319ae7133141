"""The user client on the wire: one process acting for one user or a fleet of M.

Deliveries are opened into events and fed, one at a time, to a `UserFleet`; the task bids
it answers with are sealed to the coordinator and published concurrently (bounded), since
a fleet of a thousand users bids thousands of tasks at each announcement.

A fleet shares one broker connection by default. Against a broker whose ACL pins each
login to its own topics (Mosquitto with deploy/acl), use one connection per identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from protocol import topics
from protocol.envelope import envelope_ref
from protocol.events import MessageReceived, Publish
from protocol.identity import Identity
from protocol.messages import Message, Reject, Rejects, RoundAnnouncement, TaskBidMessage, TaskBids
from protocol.wire import Wire
from runtime.bus import Bus
from runtime.memory_bus import open_bus
from runtime.process import Clock, install_stop_signals, wall_ms
from runtime.publish import publish_retrying
from user_client.core import UserFleet
from user_client.identities import fleet_identities

Connections = Literal["shared", "per-identity"]


@dataclass(frozen=True, slots=True)
class UserConfig:
    """Everything a user client needs besides its root key."""

    broker: str
    coordinator: str
    market: str
    tasks: int
    fee_range: tuple[int, int]
    identities: int = 1
    rounds: int | None = None  # stop after bidding in this many rounds and settling them
    carry_over: bool = False
    seed: int | None = None  # fees and task inputs; None draws one from the OS
    connections: Connections = "shared"
    grace_ms: int = 10_000  # how long past the last prove deadline to wait for settlements
    concurrency: int = 256  # publishes in flight at once
    ca_file: str | None = None
    password: str | None = None
    # per-identity broker passwords (credentials.json of `proofmarket deploy acl`);
    # an identity not listed logs in with `password`
    passwords: Mapping[str, str] | None = None


class UserService:
    """Drives a `UserFleet` from one or more connected buses."""

    def __init__(
        self,
        fleet: UserFleet,
        wire: Wire,
        buses: dict[str, Bus],
        *,
        grace_ms: int,
        concurrency: int,
        clock: Clock = wall_ms,
    ) -> None:
        self.fleet = fleet
        self.wire = wire
        self.clock = clock
        self._buses = buses  # identity key -> the bus it publishes on
        self._grace_ms = grace_ms
        self._slots = asyncio.Semaphore(concurrency)
        self._events: asyncio.Queue[tuple[str | None, MessageReceived]] = asyncio.Queue()
        self._finished = asyncio.Event()
        self._stopping = asyncio.Event()
        self._give_up: asyncio.TimerHandle | None = None
        # Bids sent, by round and ref: (sender, topic, payload). The broker acknowledges a
        # publish before the coordinator has recorded it, so a bid can be lost in a
        # coordinator crash; the same bytes again are safe (a copy of a bid taken is
        # answered `replay`) and close that window. They are sent again when the
        # coordinator announces their round anew (it restarted) or stays silent.
        self._sent: dict[int, dict[bytes, tuple[str, str, bytes]]] = {}
        self._last_heard = 0  # when a message from the coordinator last arrived (ms)
        self._resending: set[asyncio.Task[None]] = set()
        self._resend_timers: set[asyncio.TimerHandle] = set()
        self.resent = 0
        # The load generator's own pace: task bids sealed and handed to the broker, and the
        # time from each announcement to the last of its bids acknowledged by the broker.
        self.bids_sent = 0
        self.send_seconds = 0.0
        self.log = structlog.get_logger("user").bind(
            user=wire.first.public_hex[:12], identities=len(fleet.users), market=wire.market
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, the fleet finished its rounds, or a bus closed."""
        self._stopping = stop
        readers = [
            asyncio.create_task(self._read(bus), name="user:read")
            for bus in dict.fromkeys(self._buses.values())
        ]
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._finished.wait())]
        self.log.info(
            "user.started", tasks=self.fleet.users[self.wire.first.public_hex].tasks_per_round
        )
        getter: asyncio.Task[tuple[str | None, MessageReceived]] | None = None
        try:
            while True:
                getter = asyncio.create_task(self._events.get())
                done, _ = await asyncio.wait(
                    {getter, *waiters, *readers}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    break
                recipient, event = getter.result()
                self._log_reject(recipient, event.message)
                began = time.perf_counter()
                effects = self.fleet.handle(event, recipient)
                await self._publish_all(effects)
                if effects and isinstance(event.message, RoundAnnouncement):
                    tasks = sum(_tasks_in(e.message) for _, e in effects)
                    self.bids_sent += tasks
                    self.send_seconds += time.perf_counter() - began
                    self.log.info(
                        "user.bid", round=event.message.round, tasks=tasks, envelopes=len(effects)
                    )
                    self._resend_later(event.message.round, event.message.bid_deadline)
                elif isinstance(event.message, RoundAnnouncement):
                    self._resend_now(event.message.round)
                self._check_finished()
        finally:
            if self._give_up is not None:
                self._give_up.cancel()
            pending = [*readers, *waiters, *([getter] if getter is not None else [])]
            for timer in self._resend_timers:
                timer.cancel()
            pending += self._resending
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.log.info("user.stopped", **self.fleet.summary().as_dict(), **self.pace())
        for reader in readers:
            error = None if reader.cancelled() else reader.exception()
            if error is not None:
                raise error

    def _log_reject(self, recipient: str | None, message: Message) -> None:
        """One line per refusal the coordinator sent, with its code and reason."""
        if isinstance(message, Reject):
            self.log.warning(
                "user.rejected", user=recipient, code=message.code, reason=message.reason
            )
        elif isinstance(message, Rejects):
            codes: dict[str, int] = {}
            for entry in message.rejects:
                codes[entry.code] = codes.get(entry.code, 0) + 1
            self.log.warning(
                "user.rejected_bids",
                user=recipient,
                codes=codes,
                reason=message.rejects[0].reason,
            )

    def pace(self) -> dict[str, float | int]:
        """Task bids sent, the seconds spent sending them, and bids per second."""
        rate = self.bids_sent / self.send_seconds if self.send_seconds > 0 else 0.0
        return {
            "bids_sent": self.bids_sent,
            "send_s": round(self.send_seconds, 3),
            "bids_per_s": round(rate, 1),
        }

    async def _read(self, bus: Bus) -> None:
        async for delivery in bus.messages():
            opened = self.wire.open(
                delivery.topic, delivery.payload, now=self.clock(), retained=delivery.retained
            )
            if opened is not None:
                self._last_heard = self.clock()
                self._events.put_nowait(opened)

    async def _publish_all(self, effects: list[tuple[str, Publish]]) -> None:
        if effects:
            await asyncio.gather(*(self._publish(sender, e) for sender, e in effects))

    async def _publish(self, sender: str, effect: Publish) -> None:
        # Bulk task bids too large for one envelope go as several, each its own bulk.
        sealed = self.wire.seal_parts(effect.message, effect.to, sender=sender)
        for part, topic, payload in sealed:
            if isinstance(part, TaskBidMessage | TaskBids):
                ref = envelope_ref(payload)
                self.fleet.sent(sender, part, ref)
                self._sent.setdefault(part.round, {})[ref] = (sender, topic, payload)
        await asyncio.gather(*(self._send(sender, topic, payload) for _, topic, payload in sealed))

    async def _send(self, sender: str, topic: str, payload: bytes) -> None:
        async with self._slots:
            await publish_retrying(
                self._buses[sender], topic, payload, stopping=self._stopping, log=self.log
            )

    def _resend_later(self, round: int, bid_deadline: int) -> None:
        """Halfway to the bid deadline, if the coordinator has said nothing since these bids
        went out, send again each one still unacknowledged (a busy coordinator is heard)."""
        for old in [r for r in self._sent if r < round - 1]:
            del self._sent[old]
        sent_at = self.clock()
        delay = max(0, bid_deadline - sent_at) / 2000

        def fire() -> None:
            self._resend_timers.discard(timer)
            if self._last_heard <= sent_at:
                self._resend_now(round)

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._resend_timers.add(timer)

    def _resend_now(self, round: int) -> None:
        """Send again the bids of `round` that still await a receipt or reject."""
        due = list(self._sent.get(round, {}).items())
        if due:
            task = asyncio.create_task(self._resend(due), name="user:resend")
            self._resending.add(task)
            task.add_done_callback(self._resending.discard)

    async def _resend(self, due: list[tuple[bytes, tuple[str, str, bytes]]]) -> None:
        again = [entry for ref, entry in due if self.fleet.awaiting(entry[0], ref)]
        if not again:
            return
        self.resent += len(again)
        self.log.info("user.resent", bids=len(again))

        await asyncio.gather(*(self._send(*entry) for entry in again))

    def _check_finished(self) -> None:
        if self.fleet.finished:
            self.log.info("user.finished")
            self._finished.set()
            return
        deadline = self.fleet.last_prove_deadline
        if self.fleet.bidding_done and self._give_up is None and deadline is not None:
            # Settlements can be lost with a coordinator that died; do not wait forever.
            delay = max(0, deadline + self._grace_ms - self.clock()) / 1000
            self._give_up = asyncio.get_running_loop().call_later(delay, self._stop_waiting)

    def _stop_waiting(self) -> None:
        open_tasks = sum(u.open_tasks for u in self.fleet.users.values())
        self.log.warning("user.unsettled_at_exit", open_tasks=open_tasks)
        self._finished.set()


async def run_user(
    identity: Identity,
    config: UserConfig,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock = wall_ms,
) -> UserFleet:
    """Run a user (or a fleet of `config.identities` users) until done or stopped."""
    if config.concurrency < 1 or config.grace_ms < 0:
        raise ValueError("concurrency must be >= 1 and grace_ms >= 0")
    identities = fleet_identities(identity, config.identities)
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "big")
    fleet = UserFleet(
        [i.public_hex for i in identities],
        config.coordinator,
        config.market,
        random.Random(seed),
        config.tasks,
        config.fee_range,
        config.carry_over,
        rounds=config.rounds,
    )
    wire = Wire(identities, coordinator=config.coordinator, market=config.market)
    if stop is None:
        # no caller to stop us: SIGINT and SIGTERM do
        stop = asyncio.Event()
        install_stop_signals(stop)
    groups = [identities] if config.connections == "shared" else [[i] for i in identities]
    async with contextlib.AsyncExitStack() as stack:
        buses: dict[str, Bus] = {}
        for n, group in enumerate(groups):
            login = group[0].public_hex
            bus = await stack.enter_async_context(
                open_bus(
                    config.broker,
                    client_id=login,
                    username=login,
                    password=(config.passwords or {}).get(login, config.password),
                    ca_file=config.ca_file,
                )
            )
            subs = [t for i in group for t in _subscriptions(wire, i, public=n == 0)]
            await bus.subscribe(*dict.fromkeys(subs))
            buses.update((i.public_hex, bus) for i in group)
        service = UserService(
            fleet,
            wire,
            buses,
            grace_ms=config.grace_ms,
            concurrency=config.concurrency,
            clock=clock,
        )
        await service.run(stop)
    return fleet


def _tasks_in(message: Message) -> int:
    return len(message.bids) if isinstance(message, TaskBids) else 1


def _subscriptions(wire: Wire, identity: Identity, *, public: bool) -> list[str]:
    subs = [topics.outbox(wire.market, identity.public_hex)]
    return [*subs, topics.public(wire.market)] if public else subs


__all__ = ["UserConfig", "UserService", "run_user"]
