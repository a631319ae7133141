"""Brokers the market starts for itself: embedded amqtt and a Mosquitto subprocess.

Both listen on a loopback port of their own and expose ``.url``; both are
async context managers with ``start``/``stop``/``restart``. Parties log in
with their public key (hex) as username: amqtt 0.12 only queues QoS 1
messages for an offline persistent session whose client logged in with a
username, so anonymous login is always off in the embedded broker.

Run the embedded broker in its own process with::

    python -m deploy.broker --port 18830 [--passwd FILE] [--genesis FILE] [--host 127.0.0.1]

which prints ``ready mqtt://host:port`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from deploy.passwd import read_password_file, verify_password
from protocol import topics
from protocol.envelope import MAX_ENVELOPE_SIZE

__all__ = [
    "BrokerStartError",
    "EmbeddedBroker",
    "MarketAclPlugin",
    "MarketAuthPlugin",
    "MosquittoBroker",
    "free_port",
    "main",
    "mosquitto_binary",
]

LOOPBACK = "127.0.0.1"
MAX_PACKET_SIZE = MAX_ENVELOPE_SIZE + 4096
"""Room for the largest envelope plus the MQTT header and topic; larger drops the client."""


class BrokerStartError(RuntimeError):
    """A broker did not come up (or did not go down) within its bound."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def mosquitto_binary() -> str | None:
    """Path of the mosquitto binary on PATH (or in /usr/sbin), None when absent."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


async def _wait_accepting(host: str, port: int, timeout: float, alive: Any = None) -> None:
    """Poll until ``host:port`` accepts a TCP connection, bounded by ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if alive is not None and not alive():
                    raise BrokerStartError(f"broker on port {port} exited while starting")
                try:
                    _, writer = await asyncio.open_connection(host, port)
                except OSError:
                    await asyncio.sleep(0.02)  # polling a port that is not open yet
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
    except TimeoutError:
        raise BrokerStartError(
            f"nothing accepted connections on {host}:{port} in {timeout}s"
        ) from None


class MarketAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt login check: a username is required; then a password file or a username list.

    With ``password_file`` (Mosquitto ``$7$`` format) the password must match;
    otherwise, with ``usernames``, the username must be listed; otherwise any
    non-empty username is accepted.
    """

    @dataclass
    class Config:
        usernames: list[str] | None = None
        password_file: str | None = None

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._hashes = (
            read_password_file(Path(self.config.password_file))
            if self.config.password_file
            else None
        )
        self._usernames = None if self.config.usernames is None else set(self.config.usernames)

    async def authenticate(self, *, session: Any) -> bool:
        username: str | None = session.username
        if not username:
            return False
        if self._hashes is not None:
            hashed = self._hashes.get(username)
            return hashed is not None and verify_password(session.password or "", hashed)
        return self._usernames is None or username in self._usernames


def _covers(allowed: str, requested: str) -> bool:
    """Whether filter ``allowed`` matches every topic that ``requested`` can match."""
    want = requested.split("/")
    have = allowed.split("/")
    for i, level in enumerate(have):
        if level == "#":
            return True
        if i >= len(want) or want[i] == "#":
            return False
        if level != "+" and level != want[i]:
            return False
    return len(want) == len(have)


class MarketAclPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic check with the same rules the Mosquitto ACL carries.

    Every username (a public key) may write its own ``in``/``will`` topics and
    read its own ``out`` and the ``public`` channels; a coordinator listed in
    ``coordinators`` (key -> market) also gets its market's coordinator rules.
    """

    @dataclass
    class Config:
        coordinators: dict[str, str] = field(default_factory=dict)

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool:
        username: str | None = session.username if session is not None else None
        if not username or not topic:
            return False
        rules = list(topics.participant_acl())
        market = self.config.coordinators.get(username)
        if market is not None:
            rules += topics.coordinator_acl(market)
        access = "write" if action == Action.PUBLISH else "read"
        return any(
            rule.access == access and _covers(rule.topic.replace(topics.USERNAME, username), topic)
            for rule in rules
        )


_RECANCEL_S = 0.2


def _recancel_readers() -> None:
    """Cancel again every amqtt connection reader that outlived its cancellation.

    amqtt stops a connection by cancelling its reader, which waits in
    ``asyncio.wait_for``; on Python 3.11 wait_for loses a cancellation that lands as its
    read completes (CPython gh-86296), when a client's last packet arrives just as the
    broker stops. The reader then reads on and shutdown waits for it until the client's
    keepalive runs out. Cancelling it again ends it.
    """
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        reader = code is not None and code.co_qualname == "ProtocolHandler._reader_loop"
        if reader and task.cancelling() and not task.done():
            task.cancel()


class _RetainingBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, handing out retained messages as MQTT says.

    amqtt 0.12.1, when any client connects, walks every topic filter any client has
    subscribed to and sends the connecting client the retained messages matching each,
    whether it subscribed to them or not, awaiting each send inside that walk, so a
    subscription made meanwhile ends the walk with "dictionary changed size during
    iteration" and the connection with it. Here a client gets only the retained messages
    of filters it subscribed to itself, and they are sent without suspending the walk.
    """

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        topic_filter, qos = subscription
        subscribers = self._subscriptions.get(topic_filter, ())
        if all(s.client_id != session.client_id for s, _ in subscribers):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter):
                send = handler.mqtt_publish(
                    retained.topic, retained.data, min(qos, retained.qos or qos), retain=True
                )
                task = asyncio.ensure_future(send)
                _SENDING.add(task)
                task.add_done_callback(_SENDING.discard)


_SENDING: set[asyncio.Future[Any]] = set()
"""Retained sends in flight, held so the loop does not drop them half-way."""


@dataclass
class EmbeddedBroker:
    """amqtt broker in this event loop, on a free loopback port unless one is given.

    ``usernames``: accept only these (any password); ``password_file``: check
    passwords against a Mosquitto ``$7$`` file; neither: any non-empty username.
    ``coordinators`` (public key -> market) turns on the market ACL
    (:class:`MarketAclPlugin`); None leaves every topic open.
    Sessions live in memory, so :meth:`restart` loses them: clients must
    resubscribe (the Bus does).
    """

    host: str = LOOPBACK
    port: int = 0
    usernames: Iterable[str] | None = None
    password_file: Path | None = None
    coordinators: dict[str, str] | None = None
    _broker: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.port == 0:
            self.port = free_port(self.host)
        if self.usernames is not None:
            self.usernames = list(self.usernames)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config(self) -> dict[str, Any]:
        """The amqtt configuration this broker runs with."""
        auth: dict[str, Any] = {}
        if self.usernames is not None:
            auth["usernames"] = list(self.usernames)
        if self.password_file is not None:
            auth["password_file"] = str(self.password_file)
        plugins: dict[str, Any] = {f"{__name__}.MarketAuthPlugin": auth}
        if self.coordinators is not None:
            plugins[f"{__name__}.MarketAclPlugin"] = {"coordinators": dict(self.coordinators)}
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": plugins,
        }

    async def start(self, timeout: float = 10.0) -> None:
        broker = _RetainingBroker(self.config())
        async with asyncio.timeout(timeout):
            await broker.start()
        self._broker = broker

    async def stop(self, timeout: float = 10.0) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            # amqtt's shutdown can hang when awaited inside a task that owns client
            # connections' waiters; in a task of its own it completes promptly
            shutdown = asyncio.create_task(broker.shutdown())
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                left = deadline - asyncio.get_running_loop().time()
                done, _ = await asyncio.wait({shutdown}, timeout=min(_RECANCEL_S, left))
                if done or left <= _RECANCEL_S:
                    break
                _recancel_readers()
            if not done:
                shutdown.cancel()
                raise BrokerStartError(f"embedded broker did not stop within {timeout}s")
            shutdown.result()

    async def restart(self) -> None:
        """Stop and start again on the same port (sessions and queues are lost)."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


@dataclass
class MosquittoBroker:
    """A ``mosquitto`` subprocess with a generated config, on a free loopback port.

    Without ``password_file`` anonymous clients are allowed; with it, only its
    users; ``acl_file`` restricts topics per user. Persistence is on, so
    :meth:`restart` keeps sessions and queued QoS 1 messages.
    """

    host: str = LOOPBACK
    port: int = 0
    password_file: Path | None = None
    acl_file: Path | None = None
    workdir: Path | None = None
    binary: str | None = None
    start_timeout: float = 10.0
    log_file: Path | None = None
    tls_cert: Path | None = None
    """Server certificate (with ``tls_key``): the listener speaks TLS, ``url`` is mqtts://."""
    tls_key: Path | None = None
    config: str | None = None
    """Full mosquitto.conf text to run instead of the generated one (its listener must
    be ``port`` on ``host``)."""
    _process: asyncio.subprocess.Process | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.port == 0:
            self.port = free_port(self.host)
        if self.binary is None:
            self.binary = mosquitto_binary()
        if self.binary is None:
            raise BrokerStartError("mosquitto binary not found on PATH")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls_cert is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def config_text(self, workdir: Path) -> str:
        """The mosquitto.conf this broker runs with."""
        lines = [
            # started as root, mosquitto would switch to user "mosquitto" and then
            # fail to write the persistence file in our directory
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {workdir}/",
            f"log_dest file {self.log_file}" if self.log_file else "log_dest none",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            f"max_packet_size {MAX_PACKET_SIZE}",
        ]
        if self.tls_cert is not None:
            lines += [f"certfile {self.tls_cert}", f"keyfile {self.tls_key}"]
        if self.log_file is not None:
            lines.append("log_type all")
        if self.password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        return "\n".join(lines) + "\n"

    def _workdir(self) -> Path:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mosquitto-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir

    async def start(self) -> None:
        assert self.binary is not None
        workdir = self._workdir()
        conf = workdir / "mosquitto.conf"
        conf.write_text(self.config if self.config is not None else self.config_text(workdir))
        process = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._process = process
        try:
            await _wait_accepting(
                self.host, self.port, self.start_timeout, lambda: process.returncode is None
            )
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL past ``timeout``."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self, *, kill: bool = False) -> None:
        """Stop and start on the same port; persisted sessions and queues survive.

        With ``kill`` it is a crash instead: SIGKILL, so whatever changed since the last
        persistence save (every queued message and session of this run) is lost.
        """
        if kill and self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        await self.stop()
        await self.start()

    def reload(self) -> None:
        """SIGHUP: mosquitto rereads its password and ACL files; connections stay up."""
        if self._process is None or self._process.returncode is not None:
            raise BrokerStartError("mosquitto is not running")
        self._process.send_signal(signal.SIGHUP)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        self.cleanup()


STOP_GRACE_S = 0.5
"""How long a broker process told to stop lets amqtt close its sessions before exiting."""


async def serve_embedded(
    host: str = LOOPBACK,
    port: int = 0,
    password_file: Path | None = None,
    coordinators: dict[str, str] | None = None,
) -> None:
    """Run an embedded broker until SIGINT/SIGTERM; print ``ready URL`` once it listens.

    ``coordinators`` (key -> market) turns on the market ACL.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    broker = EmbeddedBroker(
        host=host, port=port, password_file=password_file, coordinators=coordinators
    )
    await broker.start()
    print(f"ready {broker.url}", flush=True)
    await stopping.wait()
    # Sessions live in memory and die with the process either way, and amqtt's polite
    # goodbye to every client can take seconds; a short bound, then the process exits
    # and the OS closes every socket, which tells clients to reconnect at once.
    with contextlib.suppress(BrokerStartError):
        await broker.stop(timeout=STOP_GRACE_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.broker", description=__doc__)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--passwd", type=Path, default=None, help="Mosquitto $7$ password file")
    parser.add_argument("--genesis", type=Path, default=None, help="enforce this market's ACL")
    args = parser.parse_args(argv)
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    coordinators = None
    if args.genesis is not None:
        from deploy.genesis import load_genesis

        genesis = load_genesis(args.genesis)
        coordinators = {genesis.coordinator: genesis.market}
    asyncio.run(serve_embedded(args.host, args.port, args.passwd, coordinators))
    return 0


if __name__ == "__main__":
    sys.exit(main())
