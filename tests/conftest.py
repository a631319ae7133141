"""Shared fixtures: real MQTT brokers on free loopback ports.

- ``broker``: parametrised over ``mosquitto`` and ``embedded``; a fresh broker per
  test (Mosquitto skipped only when its binary is absent). Yields a
  :class:`RunningBroker`:
  ``Bus(broker.url, "alice", **broker.login("alice"))`` or, for a subprocess,
  ``broker.url_for("alice")``; ``await broker.restart()`` for reconnect tests.
- ``mosquitto`` / ``embedded_broker``: one kind only.
- ``free_port``: an unused loopback TCP port.

Also, from deploy.hostile, ``with_bad_signature`` (a sealed envelope re-encrypted around a
broken signature) and ``seal_body`` (any body bytes, signed and sealed as an envelope).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from deploy.broker import EmbeddedBroker, MosquittoBroker, mosquitto_binary
from deploy.broker import free_port as _free_port
from deploy.hostile import seal_body, with_bad_signature

__all__ = ["RunningBroker", "seal_body", "with_bad_signature"]

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


@pytest.fixture(autouse=True)
def _fresh_logging() -> object:
    """Each test starts with structlog's defaults: a CLI run in-process that raised the
    level (or cached its loggers) must not hide the next test's log lines."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


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
