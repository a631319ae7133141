"""An in-memory broker and a bus over it, behind the same interface as the MQTT `Bus`.

For testing a service's sequencing (batching, watermark, wind-down) without a broker,
where the broker is not the point; the real-broker tests stay. What the market relies on
from MQTT is kept: topic filters with `+` and `#`, persistent sessions (what a client
subscribed to is queued for it while it is away, keyed by client id), retained messages
(the newest per topic, handed to each new subscription, flagged `retained`), last wills sent
when a client vanishes without a goodbye, and one bounded inbox per bus that counts
what it drops. Delivery is immediate and in order; nothing is lost unless a bound says so.

    broker = MemoryBroker()
    async with MemoryBus(broker, "alice") as bus:
        await bus.subscribe("market/m1/coord/#")
        ...

`open_bus("memory://NAME", ...)` gives a bus on the process's broker of that name, so a
service started with a `memory://` URL runs unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from runtime.bus import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_QUEUE_SIZE,
    BrokerAddress,
    Bus,
    BusClosedError,
    BusConfigError,
    BusStats,
    Delivery,
    PayloadTooLargeError,
    Will,
    _check_topic,
    _wall_ms,
)
from runtime.inbox import InboxAdmission

MEMORY_SCHEME = "memory://"
SESSION_BACKLOG = 100_000
"""Messages kept for an absent client's session; older ones are dropped beyond this."""


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching: `+` is one level, a trailing `#` any number (or none)."""
    wanted, levels = pattern.split("/"), topic.split("/")
    for i, part in enumerate(wanted):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(wanted) == len(levels)


@dataclass(slots=True)
class _Session:
    filters: set[str] = field(default_factory=set)
    bus: MemoryBus | None = None
    backlog: list[tuple[str, bytes]] = field(default_factory=list)
    dropped: int = 0


class MemoryBroker:
    """Routes every publish to the sessions whose filters match, at once and in order."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, bytes] = {}  # topic -> its newest retained payload
        self.published = 0

    def session(self, client_id: str) -> _Session:
        return self._sessions.setdefault(client_id, _Session())

    def retain(self, topic: str, payload: bytes) -> None:
        """Keep `payload` as `topic`'s retained message; an empty one clears it (MQTT)."""
        if payload:
            self._retained[topic] = payload
        else:
            self._retained.pop(topic, None)

    def retained(self, pattern: str) -> list[tuple[str, bytes]]:
        """The retained messages a new subscription to `pattern` is handed."""
        return [(t, p) for t, p in sorted(self._retained.items()) if topic_matches(pattern, t)]

    def route(self, topic: str, payload: bytes) -> None:
        self.published += 1
        for session in self._sessions.values():
            if not any(topic_matches(f, topic) for f in session.filters):
                continue
            if session.bus is not None:
                session.bus._deliver(topic, payload)
            elif len(session.backlog) < SESSION_BACKLOG:
                session.backlog.append((topic, payload))
            else:
                session.dropped += 1

    def connected(self, client_id: str) -> bool:
        """Whether a bus with this client id is open now."""
        session = self._sessions.get(client_id)
        return session is not None and session.bus is not None


_BROKERS: dict[str, MemoryBroker] = {}


def memory_broker(name: str, broker: MemoryBroker | None = None) -> MemoryBroker:
    """The process's in-memory broker called `name`, made on first use.

    Passing `broker` installs it under that name (a test's lossy or slow broker).
    """
    if broker is not None:
        _BROKERS[name] = broker
    return _BROKERS.setdefault(name, MemoryBroker())


class MemoryBus(Bus):
    """A `Bus` on a `MemoryBroker`: the same methods, the same inbox, no network.

    `vanish()` drops the connection without a goodbye, so the broker sends the will, as
    a killed process's broker would.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        client_id: str,
        *,
        will: Will | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        if not client_id:
            raise BusConfigError("a persistent session needs a non-empty client id")
        if queue_size < 1 or max_payload < 1:
            raise BusConfigError("queue_size and max_payload must be positive")
        self.broker = broker
        self.address = BrokerAddress(host="memory", port=0, tls=False)
        self.client_id = client_id
        self.stats = BusStats()
        self._will = will
        self._queue_size = queue_size
        self._max_payload = max_payload
        self._op_timeout = 10.0
        self._clock = clock
        self._topics: list[str] = []
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()  # bounded by `admission`
        self.admission = InboxAdmission(queue_size)
        self._connected = asyncio.Event()
        self._stats_changed = asyncio.Event()
        self._fatal = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    async def __aenter__(self) -> Self:
        session = self.broker.session(self.client_id)
        if session.bus is not None:
            session.bus.vanish()  # a second connection with one id takes the session over
        self._closed.clear()
        self._supervisor = asyncio.create_task(
            self._open_until_closed(), name=f"bus:{self.client_id}"
        )
        session.bus = self
        self._topics = sorted(session.filters)
        self.stats.connects += 1
        self._connected.set()
        self._stats_changed.set()
        backlog, session.backlog = session.backlog, []
        for topic, payload in backlog:
            self._deliver(topic, payload)
        return self

    async def _open_until_closed(self) -> None:
        """Stands for the MQTT bus's connection task: done once the bus is closed."""
        await self._closed.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()

    def vanish(self) -> None:
        """Drop off without a goodbye: the broker publishes this client's will."""
        if not self._connected.is_set():
            return
        will = self._will() if callable(self._will) else self._will
        self._leave()
        self.stats.disconnects += 1
        if will is not None:
            self.broker.route(*will)

    def _leave(self) -> None:
        session = self.broker.session(self.client_id)
        if session.bus is self:
            session.bus = None
        self._connected.clear()
        self._closed.set()
        self._stats_changed.set()

    def _raise_if_dead(self) -> None:
        if self._supervisor is None or self._supervisor.done() or self._closed.is_set():
            raise BusClosedError("the bus is not open")

    async def _stop(self) -> None:
        self._leave()

    async def subscribe(self, *topics: str) -> None:
        """Add `topics` to this client's session (kept while it is away)."""
        for topic in topics:
            _check_topic(topic, wildcards=True)
        self._raise_if_dead()
        session = self.broker.session(self.client_id)
        for topic in topics:
            session.filters.add(topic)
            if topic not in self._topics:
                self._topics.append(topic)
            for retained_topic, payload in self.broker.retained(topic):
                self._deliver(retained_topic, payload, retained=True)

    async def unsubscribe(self, *topics: str) -> None:
        """Remove `topics` from this client's session."""
        session = self.broker.session(self.client_id)
        for topic in topics:
            session.filters.discard(topic)
            if topic in self._topics:
                self._topics.remove(topic)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Hand `payload` to the broker, which delivers it before this returns.

        With `retain` the broker also keeps it for later subscribers, as MQTT's does.
        """
        _check_topic(topic, wildcards=False)
        if len(payload) > self._max_payload:
            raise PayloadTooLargeError(f"{len(payload)} bytes > max_payload {self._max_payload}")
        self._raise_if_dead()
        if retain:
            self.broker.retain(topic, payload)
        self.broker.route(topic, payload)
        self.stats.published += 1
        await asyncio.sleep(0)  # a publish is a suspension point, as on a real broker

    def _deliver(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        self.stats.received += 1
        self._stats_changed.set()
        if not self.admission.admits(self._inbox.qsize(), topic):
            self.stats.dropped_full += 1
            self.admission.dropped(topic, payload)
            return
        self.stats.enqueued += 1
        if len(payload) > self._max_payload:
            self.stats.dropped_oversized += 1
            digest = hashlib.blake2b(payload, digest_size=16).digest()
            self._inbox.put_nowait(
                Delivery(topic, b"", len(payload), digest, self._clock(), retained)
            )
        else:
            self._inbox.put_nowait(Delivery(topic, payload, 0, b"", self._clock(), retained))


def open_bus(url: str, client_id: str, **options: Any) -> Bus:
    """A bus for `url`: `memory://NAME` on the process's in-memory broker, else MQTT."""
    if url.startswith(MEMORY_SCHEME):
        name = url[len(MEMORY_SCHEME) :]
        kept = {k: v for k, v in options.items() if k in ("will", "queue_size", "max_payload")}
        if "clock" in options:
            kept["clock"] = options["clock"]
        return MemoryBus(memory_broker(name), client_id, **kept)
    return Bus(url, client_id, **options)
