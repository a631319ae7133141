"""Shared fixtures: real MQTT brokers on free loopback ports.

- ``broker``: parametrised over ``mosquitto`` and ``embedded``; a fresh broker per
  test (Mosquitto skipped only when its binary is absent). Yields a
  :class:`RunningBroker`:
  ``Bus(broker.url, "alice", **broker.login("alice"))`` or, for a subprocess,
  ``broker.url_for("alice")``; ``await broker.restart()`` for reconnect tests.
- ``mosquitto`` / ``embedded_broker``: one kind only.
- ``free_port``: an unused loopback TCP port.

Also ``with_bad_signature``: a sealed envelope re-encrypted around a broken signature, and
``seal_body``: any body bytes, signed and sealed as a well-formed envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings as sodium
import pytest

from deploy.broker import EmbeddedBroker, MosquittoBroker, mosquitto_binary
from deploy.broker import free_port as _free_port
from protocol.envelope import DOMAIN, ENVELOPE_VERSION, NONCE_SIZE, PUBLIC, SEALED
from protocol.identity import Identity

BROKER_KINDS = ["mosquitto", "embedded"]


@dataclass
class RunningBroker:
    """A broker started for one test; anonymous login is off on the embedded one."""

    kind: str
    server: EmbeddedBroker | MosquittoBroker

    @property
    def url(self) -> str:
        return self.server.url

    def login(self, name: str) -> dict[str, str]:
        """Keyword arguments for ``Bus`` logging in as ``name`` (e.g. a public key hex)."""
        return {"username": name, "password": name}

    def url_for(self, name: str) -> str:
        """The broker URL with ``name``'s credentials in it, for child processes."""
        return f"mqtt://{name}:{name}@{self.server.host}:{self.server.port}"

    async def restart(self) -> None:
        """Stop and start the broker on the same port."""
        await self.server.restart()


def _need_mosquitto() -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not on PATH (install the mosquitto package)")


async def _running(kind: str, workdir: Path) -> AsyncIterator[RunningBroker]:
    server: EmbeddedBroker | MosquittoBroker
    if kind == "mosquitto":
        _need_mosquitto()
        server = MosquittoBroker(workdir=workdir / "mosquitto")
    else:
        server = EmbeddedBroker()
    async with server:
        yield RunningBroker(kind, server)


@pytest.fixture(params=BROKER_KINDS)
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningBroker]:
    """A fresh real broker of each kind on a free loopback port."""
    async for running in _running(request.param, tmp_path):
        yield running


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[RunningBroker]:
    """A fresh Mosquitto subprocess (anonymous allowed, persistence on)."""
    async for running in _running("mosquitto", tmp_path):
        yield running


@pytest.fixture
async def embedded_broker() -> AsyncIterator[RunningBroker]:
    """A fresh embedded amqtt broker in the test's event loop."""
    async for running in _running("embedded", Path()):
        yield running


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    return _free_port()


def with_bad_signature(envelope: bytes, sender: Identity, recipient: Identity) -> bytes:
    """`envelope`, sealed by `sender` to `recipient`, re-encrypted around a signature with
    one bit flipped: its box opens, its signature fails."""
    market_end = 75 + envelope[74]
    header_end = market_end + 1 + envelope[market_end]
    nonce = envelope[header_end : header_end + NONCE_SIZE]
    key = recipient.box_key(sender.public_key.raw)
    plain = sodium.crypto_box_open_easy_afternm(envelope[header_end + NONCE_SIZE :], nonce, key)
    bad = bytes([plain[0] ^ 0x01]) + plain[1:]
    return envelope[: header_end + NONCE_SIZE] + sodium.crypto_box_easy_afternm(bad, nonce, key)


def seal_body(
    sender: Identity, body: bytes, *, kind: str, market: str, to: Identity | str | None
) -> bytes:
    """`body` as it is, whatever it holds, signed by `sender` and sealed to `to` (public
    when `to` is None).

    What a hostile party with a key of its own can send: the envelope is well formed and
    authentic, so only the body's decoding stands between it and the reader's loop.
    """
    recipient = b""
    if to is not None:
        recipient = to.public_key.raw if isinstance(to, Identity) else bytes.fromhex(to)
    header = b"".join(
        (
            bytes((ENVELOPE_VERSION, PUBLIC if to is None else SEALED)),
            (7).to_bytes(8, "big"),
            sender.public_key.raw,
            recipient,
            bytes((len(market),)),
            market.encode("ascii"),
            bytes((len(kind),)),
            kind.encode("ascii"),
        )
    )
    signature = sender.sign(DOMAIN + header + body)
    if to is None:
        return header + signature + body
    nonce = bytes(NONCE_SIZE)
    key = sender.box_key(recipient)
    return header + nonce + sodium.crypto_box_easy_afternm(signature + body, nonce, key)
