"""The bus adapter over real brokers (Mosquitto subprocess and embedded amqtt)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import RunningBroker

from runtime.bus import (
    Bus,
    BusAuthError,
    BusConfigError,
    BusTimeoutError,
    Delivery,
    PayloadTooLargeError,
    _Client,
    bare_receive,
    parse_broker_url,
)

pytestmark = pytest.mark.broker

BOUND = 10.0  # seconds; every wait in this file is bounded by it


async def take(bus: Bus, count: int, bound: float = BOUND) -> list[Delivery]:
    """The next ``count`` deliveries, or TimeoutError after ``bound`` seconds."""
    got: list[Delivery] = []
    if count == 0:
        return got
    async with asyncio.timeout(bound):
        async for delivery in bus.messages():
            got.append(delivery)
            if len(got) == count:
                break
    return got


def open_bus(broker: RunningBroker, name: str, **options: object) -> Bus:
    return Bus(broker.url, name, **broker.login(name), **options)  # type: ignore[arg-type]


async def test_round_trip_at_qos1(broker: RunningBroker) -> None:
    """A published message reaches a subscriber of a matching wildcard, intact."""
    async with open_bus(broker, "sub") as sub, open_bus(broker, "pub") as pub:
        await sub.subscribe("market/m1/bid/+")
        await pub.publish("market/m1/bid/alice", b"\x00bid\xff")
        assert [Delivery("market/m1/bid/alice", b"\x00bid\xff")] == await take(sub, 1)
        assert 1 == pub.stats.published


async def test_messages_in_publish_order(broker: RunningBroker) -> None:
    """Messages from one publisher arrive in the order they were published."""
    async with open_bus(broker, "sub") as sub, open_bus(broker, "pub") as pub:
        await sub.subscribe("seq")
        for i in range(50):
            await pub.publish("seq", str(i).encode())
        got = await take(sub, 50)
        assert [str(i).encode() for i in range(50)] == [d.payload for d in got]


async def test_persistent_session_gets_messages_sent_while_away(broker: RunningBroker) -> None:
    """A party that was disconnected receives the QoS 1 messages queued for it meanwhile."""
    async with open_bus(broker, "prover-1") as prover:
        await prover.subscribe("market/m1/assign/prover-1")
    async with open_bus(broker, "coord") as coord:
        for i in range(3):
            await coord.publish("market/m1/assign/prover-1", b"task %d" % i)
    async with open_bus(broker, "prover-1") as prover:
        got = await take(prover, 3)
    assert [b"task 0", b"task 1", b"task 2"] == [d.payload for d in got]


async def test_reconnects_and_resubscribes_after_broker_restart(broker: RunningBroker) -> None:
    """After the broker restarts mid-stream both parties reconnect and traffic resumes."""
    async with open_bus(broker, "sub") as sub, open_bus(broker, "pub") as pub:
        await sub.subscribe("stream")
        for i in range(5):
            await pub.publish("stream", b"%d" % i)
        before = await take(sub, 5)
        await broker.restart()
        # the embedded broker forgets sessions, so publish only once sub resubscribed
        await sub.wait_until(lambda s: s.connects >= 2, BOUND)
        for i in range(5, 10):
            await pub.publish("stream", b"%d" % i)
        after: set[bytes] = set()
        async with asyncio.timeout(BOUND):
            async for delivery in sub.messages():
                after.add(delivery.payload)
                if {b"%d" % i for i in range(5, 10)} <= after:
                    break
        assert [b"%d" % i for i in range(5)] == [d.payload for d in before]
        # QoS 1 is at-least-once: a persisted broker may redeliver older messages
        assert after <= {b"%d" % i for i in range(10)}
        assert 1 <= sub.stats.disconnects
        assert 2 <= pub.stats.connects


async def test_publish_waits_out_a_broker_restart(broker: RunningBroker) -> None:
    """A publish issued while the broker is down completes once it is back."""
    async with open_bus(broker, "pub") as pub:
        await broker.server.stop()
        await pub.wait_until(lambda s: s.disconnects >= 1, BOUND)
        publishing = asyncio.create_task(pub.publish("after", b"late"))
        await broker.server.start()
        async with asyncio.timeout(BOUND):
            await publishing
        assert 1 == pub.stats.published
        assert 2 <= pub.stats.connects


async def test_mosquitto_restart_keeps_sessions_and_queues(mosquitto: RunningBroker) -> None:
    """Mosquitto persists an absent party's session and queued messages across a restart."""
    async with open_bus(mosquitto, "prover-1") as prover:
        await prover.subscribe("assign/prover-1")
    async with open_bus(mosquitto, "coord") as coord:
        await coord.publish("assign/prover-1", b"queued before restart")
    await mosquitto.restart()
    async with open_bus(mosquitto, "prover-1") as prover:
        got = await take(prover, 1)
    assert [Delivery("assign/prover-1", b"queued before restart")] == got


WILL_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from runtime.bus import Bus

    async def main():
        url, name = sys.argv[1], sys.argv[2]
        will = ("market/m1/gone/" + name, b"lost " + name.encode())
        async with Bus(url, name, will=will):
            print("connected", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_last_will_published_when_process_killed(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """SIGKILL of a connected process makes the broker publish its last will."""
    async with open_bus(broker, "coord") as coord:
        await coord.subscribe("market/m1/gone/+")
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WILL_CHILD,
            broker.url_for("prover-7"),
            "prover-7",
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(30):
                line = await child.stdout.readline()
            assert b"connected\n" == line
            child.send_signal(signal.SIGKILL)
            got = await take(coord, 1)
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
        assert [Delivery("market/m1/gone/prover-7", b"lost prover-7")] == got


async def test_clean_close_sends_no_will(broker: RunningBroker) -> None:
    """Leaving the bus normally does not publish the last will."""
    async with open_bus(broker, "coord") as coord:
        await coord.subscribe("gone/+", "marker")
        async with open_bus(broker, "p", will=("gone/p", b"lost")):
            pass
        await coord.publish("marker", b"end")
        assert [Delivery("marker", b"end")] == await take(coord, 1)


async def test_full_queue_drops_and_counts(broker: RunningBroker) -> None:
    """An unread subscriber holds at most about 2*queue_size messages and counts the rest."""
    async with open_bus(broker, "slow", queue_size=2) as slow, open_bus(broker, "pub") as pub:
        await slow.subscribe("flood")
        for i in range(20):
            await pub.publish("flood", b"%02d" % i)
        await slow.wait_until(lambda s: s.received == 20, BOUND)
        kept = 20 - slow.stats.dropped_full
        assert kept <= 2 * 2 + 1
        got = await take(slow, kept)
        numbers = [int(d.payload) for d in got]
        assert sorted(numbers) == numbers
        assert 0 == numbers[0]
        assert 0 == slow.pending()


async def test_oversized_message_dropped_and_counted(broker: RunningBroker) -> None:
    """An incoming payload above max_payload arrives as size and digest only, and is counted."""
    async with (
        open_bus(broker, "small", max_payload=100) as small,
        open_bus(broker, "pub") as pub,
    ):
        await small.subscribe("in")
        await pub.publish("in", b"x" * 101)
        await pub.publish("in", b"fits")
        digest = hashlib.blake2b(b"x" * 101, digest_size=16).digest()
        expected = [Delivery("in", b"", 101, digest), Delivery("in", b"fits")]
        assert expected == await take(small, 2)
        assert 1 == small.stats.dropped_oversized


async def test_oversized_publish_refused(embedded_broker: RunningBroker) -> None:
    """Publishing above max_payload raises PayloadTooLargeError and sends nothing."""
    async with open_bus(embedded_broker, "pub", max_payload=10) as pub:
        with pytest.raises(PayloadTooLargeError):
            await pub.publish("t", b"x" * 11)
        assert 0 == pub.stats.published


async def test_wildcard_publish_refused(embedded_broker: RunningBroker) -> None:
    """Publishing to a wildcard topic is a configuration error."""
    async with open_bus(embedded_broker, "pub") as pub:
        with pytest.raises(BusConfigError):
            await pub.publish("market/+/bid", b"x")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1883",
        "mqtt://",
        "mqtt://host:port",
        "mqtt://host:70000",
        "mqtt://host:1883/path",
        "mqtt://host:1883?x=1",
        "127.0.0.1:1883",
    ],
)
def test_bad_url_rejected(url: str) -> None:
    """A malformed broker URL raises BusConfigError before any connection."""
    with pytest.raises(BusConfigError):
        Bus(url, "c")


def test_url_parts_parsed() -> None:
    """Credentials, host, port and TLS come out of the URL; ports default by scheme."""
    parsed = parse_broker_url("mqtts://ab%40c:p%3Aw@broker.example:9999")
    assert ("broker.example", 9999, True, "ab@c", "p:w") == (
        parsed.host,
        parsed.port,
        parsed.tls,
        parsed.username,
        parsed.password,
    )
    assert 1883 == parse_broker_url("mqtt://h").port
    assert 8883 == parse_broker_url("mqtts://h").port


def test_empty_client_id_rejected() -> None:
    """A persistent session needs a client id."""
    with pytest.raises(BusConfigError):
        Bus("mqtt://127.0.0.1", "")


async def test_no_broker_times_out(free_port: int) -> None:
    """Connecting where nothing listens fails with BusTimeoutError within the bound."""
    bus = Bus(f"mqtt://127.0.0.1:{free_port}", "c", connect_timeout=0.5)
    with pytest.raises(BusTimeoutError):
        async with asyncio.timeout(BOUND):
            await bus.__aenter__()


async def test_refused_login_raises_auth_error() -> None:
    """A broker that refuses the username makes the bus fail at once with BusAuthError."""
    from deploy.broker import EmbeddedBroker

    async with EmbeddedBroker(usernames=["alice"]) as server:
        async with Bus(server.url, "alice", username="alice") as ok:
            assert ok.connected
        with pytest.raises(BusAuthError):
            async with asyncio.timeout(BOUND):
                await Bus(server.url, "mallory", username="mallory").__aenter__()


async def test_bare_receive_counts_messages(broker: RunningBroker) -> None:
    """The bench baseline subscriber returns once it has received exactly N messages."""
    subscribed = asyncio.Event()
    receiving = asyncio.create_task(
        bare_receive(broker.url, "bench", 30, **broker.login("bare"), subscribed=subscribed)
    )
    async with asyncio.timeout(BOUND):
        await subscribed.wait()
    async with open_bus(broker, "pub") as pub:
        for i in range(30):
            await pub.publish("bench", b"%d" % i)
    async with asyncio.timeout(BOUND):
        seconds = await receiving
    assert seconds >= 0.0
    assert 30 == pub.stats.published


async def test_bare_receive_drains_what_its_session_queued(broker: RunningBroker) -> None:
    """With a client id, the baseline subscriber counts messages queued while it was away."""
    async with open_bus(broker, "bare-away") as away:
        await away.subscribe("queued")
    async with open_bus(broker, "pub") as pub:
        for i in range(20):
            await pub.publish("queued", b"%d" % i)
    async with asyncio.timeout(BOUND):
        seconds = await bare_receive(
            broker.url, "queued", 20, **broker.login("bare-away"), client_id="bare-away"
        )
    assert seconds >= 0.0


async def test_unsubscribed_topic_stops_arriving(broker: RunningBroker) -> None:
    """After unsubscribe, a topic's messages no longer arrive; other topics still do."""
    async with open_bus(broker, "leaver") as sub, open_bus(broker, "pub") as pub:
        await sub.subscribe("gone", "kept")
        await sub.unsubscribe("gone")
        await pub.publish("gone", b"late")
        await pub.publish("kept", b"marker")
        # one publisher's messages reach a subscriber in order: the marker comes after
        # anything "gone" would have delivered
        assert [Delivery("kept", b"marker")] == await take(sub, 1)
        assert 0 == sub.pending()


async def test_receive_batch_takes_what_has_arrived_in_order(broker: RunningBroker) -> None:
    """receive_batch waits for one delivery, then takes up to `limit`, keeping their order."""
    async with open_bus(broker, "batcher") as sub, open_bus(broker, "pub") as pub:
        await sub.subscribe("in")
        sent = [f"m{i}".encode() for i in range(5)]
        for payload in sent:
            await pub.publish("in", payload)
        await sub.wait_until(lambda stats: stats.received >= len(sent), BOUND)
        got: list[Delivery] = []
        async with asyncio.timeout(BOUND):
            while len(got) < len(sent):
                batch = await sub.receive_batch(3)
                assert 1 <= len(batch) <= 3
                got.extend(batch)
        assert [Delivery("in", p) for p in sent] == got


async def test_write_registration_of_a_socket_closed_meanwhile_is_dropped() -> None:
    """A connection closed before its scheduled write registration ran: no traceback."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    client = _Client("127.0.0.1", 1)
    closed, kept = socket.socketpair()
    try:
        client._on_socket_register_write(client._client, None, closed)
        client._on_socket_register_write(client._client, None, kept)
        closed.close()  # paho closes a broken socket before the loop gets to the call
        ran = loop.create_future()
        loop.call_soon(ran.set_result, None)  # runs after the registrations: FIFO
        await ran
        registered = loop.remove_writer(kept.fileno())
    finally:
        loop.set_exception_handler(None)
        kept.close()
    assert ([], True) == (errors, registered)
