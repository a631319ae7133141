"""The market's MQTT bus: the one place that talks to a broker.

Every other module sees only this small surface::

    async with Bus("mqtt://alice:pw@127.0.0.1:1883", client_id="alice") as bus:
        await bus.subscribe("market/m1/coord/#")
        await bus.publish("market/m1/bid/alice", b"...")
        async for delivery in bus.messages():
            delivery.topic, delivery.payload

All market traffic is QoS 1 over a persistent session (clean session off and a
stable client id), so a party that was away gets what was queued for it when
it reconnects. A supervisor task reconnects with exponential backoff and
resubscribes every topic, because a restarted broker may have lost the
session. Incoming messages sit in one bounded queue; what does not fit, or is
larger than ``max_payload``, is dropped and counted in :attr:`Bus.stats`
rather than growing memory without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.exceptions import MqttConnectError
from aiomqtt.types import PahoSocket

from protocol.envelope import MAX_ENVELOPE_SIZE
from runtime.inbox import InboxAdmission

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "BrokerAddress",
    "Bus",
    "BusAuthError",
    "BusClosedError",
    "BusConfigError",
    "BusError",
    "BusStats",
    "BusTimeoutError",
    "Delivery",
    "PayloadTooLargeError",
    "bare_receive",
    "parse_broker_url",
]

QOS = 1  # at-least-once for all market traffic; replay protection lives above the bus
DEFAULT_MAX_PAYLOAD = MAX_ENVELOPE_SIZE
"""The protocol's one size limit, for what a party sends and what it takes in."""
RESUBSCRIBE_TIMEOUT_S = 2.0
"""Bound on resubscribing after a reconnect; past it the connection is judged bad."""
DEFAULT_QUEUE_SIZE = 10_000
_PORTS = {"mqtt": 1883, "mqtts": 8883}
_REFUSED_CODES = {4, 5, 134, 135}  # bad credentials / not authorised (v3.1.1 and v5)

_Operation = Callable[[aiomqtt.Client], Awaitable[None]]
Will = tuple[str, bytes] | Callable[[], tuple[str, bytes]]
"""A last will, or a function that makes one for each connection."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BusError(Exception):
    """Anything that went wrong on the bus; wraps the MQTT library's errors."""


class BusConfigError(BusError, ValueError):
    """A broker URL or bus option that cannot work."""


class BusAuthError(BusError):
    """The broker refused our credentials; retrying will not help."""


class BusTimeoutError(BusError, TimeoutError):
    """The broker did not answer within the bound we were given."""


class BusClosedError(BusError):
    """The bus was used outside its ``async with`` block."""


class PayloadTooLargeError(BusError, ValueError):
    """A payload above the bus's ``max_payload``."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message received from the broker.

    A message larger than the bus's ``max_payload`` is not kept: it arrives with an
    empty payload, its original ``size`` and the blake2b-128 ``digest`` of its bytes, so
    a receiver can still answer the sender about it (the protocol's envelope reference
    is that same digest) without the bus holding it in memory.
    """

    topic: str
    payload: bytes
    size: int = 0  # non-zero only for an oversized message, whose payload is dropped
    digest: bytes = b""
    # When this process received it, by the bus's clock (ms); not part of what it says.
    arrived: int = field(default=0, compare=False)
    # The broker kept it for late subscribers and sent it because we subscribed (MQTT
    # retain flag): it may be old, from before this party, or this run, came along.
    retained: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed broker URL."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt[s]://[user[:password]@]host[:port]``; raise BusConfigError otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BusConfigError(f"bad broker URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _PORTS:
        raise BusConfigError(f"bad broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise BusConfigError(f"bad broker URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BusConfigError(f"bad broker URL {url!r}: unexpected path, query or fragment")
    return BrokerAddress(
        host=parts.hostname,
        port=port if port is not None else _PORTS[scheme],
        tls=scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


@dataclass
class BusStats:
    """Counters a service can log or export; they only ever grow."""

    received: int = 0  # every message that arrived, including those dropped
    enqueued: int = 0  # those put in the inbox, to be taken by the bus's reader
    published: int = 0
    dropped_full: int = 0
    dropped_oversized: int = 0
    connects: int = 0
    disconnects: int = 0
    last_error: str | None = field(default=None)


def _inbox_type(
    stats: BusStats,
    max_payload: int,
    inbox: asyncio.Queue[Delivery],
    changed: asyncio.Event,
    clock: Callable[[], int],
    admission: InboxAdmission,
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for aiomqtt that hands each message straight to the bus's inbox.

    aiomqtt calls ``put_nowait`` from paho's read callback. Turning the message into a
    Delivery there, in our one bounded queue, skips aiomqtt's own queue and the task it
    makes per message to read it: the queue aiomqtt holds stays empty, and its message
    iterator only tells the supervisor when the connection drops. What does not fit is
    counted, not logged per message. Each delivery is stamped here, before any queue of
    ours, with the time it was read from the broker's connection.
    """

    class _HandOver(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            stats.received += 1
            changed.set()
            payload = item.payload
            if not isinstance(payload, bytes):
                stats.dropped_oversized += 1
                return
            if not admission.admits(inbox.qsize(), item.topic.value):
                stats.dropped_full += 1
                admission.dropped(item.topic.value, payload)
                return
            stats.enqueued += 1
            if len(payload) > max_payload:
                stats.dropped_oversized += 1
                digest = hashlib.blake2b(payload, digest_size=16).digest()
                inbox.put_nowait(
                    Delivery(item.topic.value, b"", len(payload), digest, clock(), item.retain)
                )
            else:
                inbox.put_nowait(Delivery(item.topic.value, payload, 0, b"", clock(), item.retain))

    return _HandOver


class _Client(aiomqtt.Client):
    """aiomqtt's client, without a traceback when a connection breaks as it starts a write.

    aiomqtt 2.5 registers the socket for writing by a call scheduled for later (paho may
    ask from another thread); a connection that broke before that call ran left
    `add_writer` on a closed socket (an EBADF traceback in the log), or on whatever new
    file reused its number. The call now registers only the socket paho asked for, still
    open. The callback is aiomqtt's own (pinned ~=2.5).
    """

    def _on_socket_register_write(
        self, client: mqtt.Client, userdata: Any, sock: PahoSocket
    ) -> None:
        def callback() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken connection: disconnect, as aiomqtt does
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        fileno = sock.fileno()

        def register() -> None:
            if sock.fileno() == fileno:  # a closed socket's fileno() is -1
                self._loop.add_writer(fileno, callback)

        self._loop.call_soon_threadsafe(register)


class Bus:
    """An MQTT connection that outlives broker restarts; use as ``async with``.

    Args:
        url: ``mqtt://`` or ``mqtts://`` broker URL, optionally with ``user:password@``.
        client_id: stable identity of this party's session at the broker.
        username, password: override the URL's credentials (e.g. a public key as username).
        ca_file: CA bundle for ``mqtts://`` (system CAs when None).
        will: ``(topic, payload)`` the broker publishes if we vanish without a goodbye, or
            a function that makes one for each connection (a will signed per connection
            cannot be replayed for a later one).
        queue_size: bound of the incoming queue; overflow is dropped and counted.
        max_payload: largest payload accepted either way, in bytes.
        connect_timeout: bound on the first connection (retried with backoff till then).
        op_timeout: bound on each publish/subscribe, including waiting for a reconnect.
        backoff_initial, backoff_max: reconnect delays in seconds, doubling per failure.
            The cap is short because market rounds are short: a party that comes back
            five seconds after its broker did has missed five one-second rounds.
        keepalive: MQTT keepalive in seconds; also how soon the broker sends our will.
        clock: what stamps each delivery's arrival, in ms (wall-clock by default).
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        will: Will | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        connect_timeout: float = 10.0,
        op_timeout: float = 10.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
        keepalive: int = 10,
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        address = parse_broker_url(url)
        ca_file = ca_file or None  # an unset environment variable arrives as ""
        if not client_id:
            raise BusConfigError("a persistent session needs a non-empty client id")
        if queue_size < 1 or max_payload < 1:
            raise BusConfigError("queue_size and max_payload must be positive")
        if ca_file is not None and not address.tls:
            raise BusConfigError("ca_file given for a plain mqtt:// URL")
        if isinstance(will, tuple):
            _check_topic(will[0], wildcards=False)
        self.address = address
        self.client_id = client_id
        self.stats = BusStats()
        self._username = username if username is not None else address.username
        self._password = password if password is not None else address.password
        self._ca_file = ca_file
        self._will = will
        self._queue_size = queue_size
        self._max_payload = max_payload
        self._connect_timeout = connect_timeout
        self._op_timeout = op_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._keepalive = keepalive
        self._clock = clock
        self._topics: list[str] = []
        self._client: aiomqtt.Client | None = None
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()  # bounded by `admission`
        self.admission = InboxAdmission(queue_size)
        self._connected = asyncio.Event()
        self._stats_changed = asyncio.Event()
        self._fatal: BusError | None = None
        self._supervisor: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._client = self._new_client()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"bus:{self.client_id}")
        try:
            await self.wait_connected(self._connect_timeout)
        except BaseException:
            await self._stop()
            raise
        return self

    def _new_client(self) -> aiomqtt.Client:
        tls = aiomqtt.TLSParameters(ca_certs=self._ca_file) if self.address.tls else None
        will = self._will() if callable(self._will) else self._will
        if will is not None:
            _check_topic(will[0], wildcards=False)
        client = _Client(
            self.address.host,
            self.address.port,
            username=self._username,
            password=self._password,
            identifier=self.client_id,
            clean_session=False,
            keepalive=self._keepalive,
            timeout=self._op_timeout,
            tls_params=tls,
            will=aiomqtt.Will(will[0], will[1], qos=QOS) if will else None,
            queue_type=_inbox_type(
                self.stats,
                self._max_payload,
                self._inbox,
                self._stats_changed,
                self._clock,
                self.admission,
            ),
        )
        # many QoS 1 publishes in flight is normal for a market; do not warn about it
        client.pending_calls_threshold = 1_000_000
        return client

    def _renew_will(self, client: aiomqtt.Client) -> None:
        """Give the next connection a will of its own.

        The client, not a new one, must reconnect: paho resends our unacknowledged
        publishes on it, and a new client would leave their waiters hanging. aiomqtt 2.5
        has no call for this, so the will is set on its paho client (pinned ~=2.5).
        """
        assert callable(self._will)
        topic, payload = self._will()
        _check_topic(topic, wildcards=False)
        client._client.will_set(topic, payload, qos=QOS)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        # cancelling the supervisor leaves `async with client`, which sends a clean
        # DISCONNECT: the broker keeps our session but does not publish the will
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        self._connected.clear()
        self._client = None

    @property
    def connected(self) -> bool:
        """True while a broker connection is up."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected; BusAuthError if refused, BusTimeoutError past ``timeout``."""
        bound = self._op_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(bound):
                while not self._connected.is_set():
                    self._raise_if_dead()
                    waiter = asyncio.create_task(self._connected.wait())
                    assert self._supervisor is not None
                    await asyncio.wait(
                        {waiter, self._supervisor}, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiter.cancel()
        except TimeoutError:
            msg = f"no connection to {self.address.host}:{self.address.port} within {bound}s"
            if self.stats.last_error:
                msg += f" (last error: {self.stats.last_error})"
            raise BusTimeoutError(msg) from None
        self._raise_if_dead()

    async def wait_until(self, predicate: Callable[[BusStats], bool], timeout: float) -> None:
        """Wait until ``predicate(self.stats)`` holds, e.g. ``lambda s: s.connects >= 2``.

        BusTimeoutError past ``timeout``.
        """
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.stats):
                    self._stats_changed.clear()
                    await self._stats_changed.wait()
        except TimeoutError:
            raise BusTimeoutError(f"bus stats still {self.stats} after {timeout}s") from None

    def _raise_if_dead(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._supervisor is None or self._client is None:
            raise BusClosedError("the bus is not open")
        if self._supervisor.done():
            raise BusClosedError("the bus connection task ended")

    async def _supervise(self) -> None:
        assert self._client is not None
        client = self._client
        delay = self._backoff_initial
        while True:
            if callable(self._will) and (self.stats.connects or self.stats.last_error):
                self._renew_will(client)
            try:
                async with client:
                    # A broker answers a SUBSCRIBE on a fresh connection at once. One
                    # that does not (seen with amqtt mid-restart: the connection was
                    # taken by the dying broker, or aiomqtt 2.5 did not wait for the
                    # CONNACK) is a bad connection, and waiting out the operation
                    # timeout would leave us deaf for rounds: reconnect instead.
                    async with asyncio.timeout(RESUBSCRIBE_TIMEOUT_S):
                        for topic in list(self._topics):
                            # Every topic here was granted once, so a refusal now is
                            # the broker mid-restart: reconnect and ask again rather
                            # than stay connected and deaf to that topic.
                            await self._subscribe_one(client, topic)
                    self.stats.connects += 1
                    self._stats_changed.set()
                    self._connected.set()
                    delay = self._backoff_initial
                    # Deliveries go straight to our inbox (see _inbox_type), so this
                    # yields nothing: it returns control here only when the connection
                    # drops, by raising MqttError.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttCodeError as exc:
                if _is_refusal(exc):
                    self._fatal = BusAuthError(f"broker refused {self.client_id!r}: {exc}")
                    return
                self._note_disconnect(exc)
            except (aiomqtt.MqttError, BusError, OSError, TimeoutError) as exc:
                self._note_disconnect(exc)
            # backoff between reconnect attempts, not synchronisation
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    def _note_disconnect(self, exc: BaseException) -> None:
        if self._connected.is_set():
            self.stats.disconnects += 1
            self._stats_changed.set()
        self._connected.clear()
        self.stats.last_error = f"{type(exc).__name__}: {exc}"

    # -- traffic -------------------------------------------------------------

    async def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 now and after every reconnect; BusError if the broker refuses."""
        for topic in topics:
            _check_topic(topic, wildcards=True)
        for topic in topics:
            if topic in self._topics:
                continue
            # listed first so a reconnect racing with us subscribes it too
            self._topics.append(topic)
            try:
                await self._with_connection(functools.partial(self._subscribe_one, topic=topic))
            except BaseException:
                self._topics.remove(topic)
                raise

    async def unsubscribe(self, *topics: str) -> None:
        """Stop receiving ``topics``, now and after reconnects.

        A persistent session outlives the connection: without this, the broker keeps
        queueing a departed party's topics for it until the session expires.
        """
        for topic in topics:
            _check_topic(topic, wildcards=True)
        for topic in topics:
            if topic not in self._topics:
                continue
            self._topics.remove(topic)

            async def drop(client: aiomqtt.Client, topic: str = topic) -> None:
                await client.unsubscribe(topic)

            await self._with_connection(drop)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement.

        Waits out a reconnect within ``op_timeout``; a message may then arrive
        twice (QoS 1 is at-least-once). With ``retain`` the broker keeps it as the
        topic's last retained message and hands it to every later subscriber.
        """
        _check_topic(topic, wildcards=False)
        if len(payload) > self._max_payload:
            raise PayloadTooLargeError(f"{len(payload)} bytes > max_payload {self._max_payload}")

        async def send(client: aiomqtt.Client) -> None:
            await client.publish(topic, payload, qos=QOS, retain=retain, timeout=math.inf)

        await self._with_connection(send)
        self.stats.published += 1

    async def messages(self) -> AsyncIterator[Delivery]:
        """Yield deliveries as they arrive, across reconnects, until the bus closes.

        Raises BusAuthError if the broker starts refusing us on a reconnect.
        """
        while True:
            if not self._inbox.empty():
                yield self._inbox.get_nowait()
                continue
            if self._fatal is not None:
                raise self._fatal
            supervisor = self._supervisor
            if supervisor is None or supervisor.done():
                return
            getter = asyncio.create_task(self._inbox.get())
            try:
                await asyncio.wait({getter, supervisor}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()

    async def receive_batch(self, limit: int) -> list[Delivery]:
        """Wait for at least one delivery, then take up to `limit` without waiting again.

        For a consumer that handles deliveries in batches: one await per batch instead
        of one per message. An empty list means the bus has closed; raises as
        :meth:`messages` does.
        """
        if limit < 1:
            raise BusConfigError("limit must be positive")
        batch: list[Delivery] = []
        while not batch:
            if not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
                break
            if self._fatal is not None:
                raise self._fatal
            supervisor = self._supervisor
            if supervisor is None or supervisor.done():
                return []
            getter = asyncio.create_task(self._inbox.get())
            try:
                await asyncio.wait({getter, supervisor}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                batch.append(getter.result())
        while len(batch) < limit and not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return batch

    @property
    def queue_size(self) -> int:
        """The bound of the incoming queue."""
        return self._queue_size

    def pending(self) -> int:
        """Messages received but not yet taken from :meth:`messages`."""
        return self._inbox.qsize()

    async def _with_connection(self, operation: _Operation) -> None:
        try:
            async with asyncio.timeout(self._op_timeout):
                delay = self._backoff_initial
                while True:
                    await self.wait_connected(math.inf)
                    assert self._client is not None
                    try:
                        await operation(self._client)
                        return
                    except aiomqtt.MqttError as exc:
                        # the connection is the supervisor's to judge and repair; we
                        # retry after a pause rather than spin while it notices
                        self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._backoff_max)
        except TimeoutError:
            raise BusTimeoutError(
                f"broker did not acknowledge within {self._op_timeout}s "
                f"(last error: {self.stats.last_error})"
            ) from None

    async def _subscribe_one(self, client: aiomqtt.Client, topic: str) -> None:
        granted = await client.subscribe(topic, qos=QOS)
        for code in granted:
            value = code if isinstance(code, int) else code.value
            if value >= 0x80:
                raise BusError(f"broker refused subscription to {topic!r}")


def _is_refusal(exc: aiomqtt.MqttCodeError) -> bool:
    rc = exc.rc
    value = rc if isinstance(rc, int) else getattr(rc, "value", None)
    return isinstance(exc, MqttConnectError) and value in _REFUSED_CODES


def _check_topic(topic: str, *, wildcards: bool) -> None:
    if not topic or "\x00" in topic or len(topic.encode()) > 65535:
        raise BusConfigError(f"bad topic {topic!r}")
    if not wildcards and ("+" in topic or "#" in topic):
        raise BusConfigError(f"wildcards are not allowed when publishing: {topic!r}")


async def bare_receive(
    url: str,
    topic: str,
    count: int,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    client_id: str | None = None,
    subscribed: asyncio.Event | None = None,
    timeout: float = 60.0,
) -> float:
    """Seconds a plain aiomqtt subscriber takes to receive ``count`` messages on ``topic``.

    The baseline for ``bench ingest``: no Bus layers, no queues of ours. The clock
    runs from the first message's arrival to the last; ``subscribed`` is set once the
    broker has acknowledged the subscription, so the caller knows when to start
    publishing. With ``client_id`` it resumes that persistent session, so messages the
    broker queued for it while it was away count too, and it unsubscribes once done.
    BusTimeoutError past ``timeout``.
    """
    if count < 1:
        raise BusConfigError("count must be positive")
    address = parse_broker_url(url)
    tls = aiomqtt.TLSParameters(ca_certs=ca_file) if address.tls else None
    client = aiomqtt.Client(
        address.host,
        address.port,
        username=username if username is not None else address.username,
        password=password if password is not None else address.password,
        identifier=client_id,
        clean_session=False if client_id is not None else None,
        tls_params=tls,
    )
    first = 0.0
    received = 0
    try:
        async with asyncio.timeout(timeout), client:
            await client.subscribe(topic, qos=QOS)
            if subscribed is not None:
                subscribed.set()
            async for _ in client.messages:
                if received == 0:
                    first = time.perf_counter()
                received += 1
                if received == count:
                    seconds = time.perf_counter() - first
                    if client_id is not None:
                        await client.unsubscribe(topic)
                    return seconds
    except TimeoutError:
        raise BusTimeoutError(f"bare subscriber got {received}/{count} in {timeout}s") from None
    except aiomqtt.MqttError as exc:
        raise BusError(f"bare subscriber: {exc}") from exc
    raise BusError("bare subscriber: message stream ended")
