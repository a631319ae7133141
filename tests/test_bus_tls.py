"""mqtts:// with a CA file, against a real Mosquitto TLS listener."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.broker import MosquittoBroker, mosquitto_binary
from runtime.bus import Bus, BusTimeoutError, Delivery

pytestmark = pytest.mark.broker

BOUND = 10.0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(where: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert, key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=proofmarket test CA",
        cwd=where,
    )
    _openssl(
        "req",
        *ec,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=where,
    )
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        cwd=where,
    )
    return where / "ca.crt", where / "server.crt", where / "server.key"


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[tuple[MosquittoBroker, Path]]:
    """Mosquitto with a TLS listener, and the CA file that signed its certificate."""
    if mosquitto_binary() is None or shutil.which("openssl") is None:
        pytest.skip("needs the mosquitto and openssl binaries on PATH")
    ca, cert, key = make_certs(tmp_path)
    server = MosquittoBroker(tls_cert=cert, tls_key=key, workdir=tmp_path / "mq")
    async with server:
        yield server, ca


async def test_round_trip_over_tls(tls_broker: tuple[MosquittoBroker, Path]) -> None:
    """With the CA file, a mqtts:// bus verifies the broker and carries messages."""
    server, ca = tls_broker
    assert server.url.startswith("mqtts://")
    async with (
        Bus(server.url, "sub", ca_file=str(ca)) as sub,
        Bus(server.url, "pub", ca_file=str(ca)) as pub,
    ):
        await sub.subscribe("t")
        await pub.publish("t", b"over tls")
        async with asyncio.timeout(BOUND):
            got = await anext(aiter(sub.messages()))
    assert Delivery("t", b"over tls") == got


async def test_unknown_ca_never_connects(tls_broker: tuple[MosquittoBroker, Path]) -> None:
    """Without our CA the certificate does not verify and the bus never connects."""
    server, _ = tls_broker
    bus = Bus(server.url, "c", connect_timeout=1.0)
    with pytest.raises(BusTimeoutError, match="certificate"):
        await bus.__aenter__()
