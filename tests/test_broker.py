"""Broker launchers and password files, against real brokers and real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.broker import EmbeddedBroker, MosquittoBroker, mosquitto_binary
from deploy.passwd import hash_password, read_password_file, verify_password, write_password_file
from runtime.bus import Bus, BusAuthError

pytestmark = pytest.mark.broker

BOUND = 10.0
ROOT = Path(__file__).resolve().parents[1]


def test_password_hash_round_trip() -> None:
    """A $7$ hash verifies its password and no other."""
    hashed = hash_password("s3cret")
    assert (True, False) == (verify_password("s3cret", hashed), verify_password("s3cret!", hashed))


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our verifier accepts what mosquitto_passwd writes, so one file serves both brokers."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not on PATH")
    path = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(path), "alice", "pw-a"], check=True)
    hashed = read_password_file(path)["alice"]
    assert (True, False) == (verify_password("pw-a", hashed), verify_password("pw-b", hashed))


def test_unknown_hash_format_not_verified() -> None:
    """Hashes in formats other than $7$ never verify."""
    assert False is verify_password("x", "$6$abc$def")


async def _logins(url: str, attempts: dict[str, str]) -> dict[str, bool]:
    """Which of ``username -> password`` the broker at ``url`` accepts."""
    accepted = {}
    for user, password in attempts.items():
        try:
            async with asyncio.timeout(BOUND):
                async with Bus(url, user, username=user, password=password):
                    accepted[user] = True
        except BusAuthError:
            accepted[user] = False
    return accepted


def _passwd(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    write_password_file(path, {"aa" * 32: "pw-a", "bb" * 32: "pw-b"})
    return path


async def test_embedded_checks_password_file(tmp_path: Path) -> None:
    """The embedded broker admits only password-file users with the right password."""
    async with EmbeddedBroker(password_file=_passwd(tmp_path)) as server:
        got = await _logins(server.url, {"aa" * 32: "pw-a", "bb" * 32: "pw-a", "cc" * 32: "x"})
    assert {"aa" * 32: True, "bb" * 32: False, "cc" * 32: False} == got


async def test_embedded_refuses_anonymous() -> None:
    """Without a username the embedded broker refuses the login."""
    async with EmbeddedBroker() as server:
        with pytest.raises(BusAuthError):
            async with asyncio.timeout(BOUND):
                await Bus(server.url, "anon").__aenter__()


async def test_mosquitto_checks_password_file(tmp_path: Path) -> None:
    """Mosquitto reads our password file and admits only the right passwords."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not on PATH")
    async with MosquittoBroker(password_file=_passwd(tmp_path), workdir=tmp_path / "mq") as mq:
        got = await _logins(mq.url, {"aa" * 32: "pw-a", "bb" * 32: "wrong"})
    assert {"aa" * 32: True, "bb" * 32: False} == got


async def test_embedded_broker_process(tmp_path: Path) -> None:
    """`python -m deploy.broker` announces its URL, serves logins and stops on SIGTERM."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.broker",
        "--passwd",
        str(_passwd(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            line = (await child.stdout.readline()).decode().split()
        assert "ready" == line[0]
        got = await _logins(line[1], {"aa" * 32: "pw-a", "bb" * 32: "nope"})
        child.send_signal(signal.SIGTERM)
        async with asyncio.timeout(BOUND):
            code = await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert ({"aa" * 32: True, "bb" * 32: False}, 0) == (got, code)


async def test_mosquitto_stops_and_frees_port(tmp_path: Path) -> None:
    """After stop, the broker process is gone and its port refuses connections."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not on PATH")
    mq = MosquittoBroker(workdir=tmp_path / "mq")
    await mq.start()
    await mq.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection(mq.host, mq.port)


async def test_mosquitto_killed_loses_what_changed_since_its_last_save(tmp_path: Path) -> None:
    """restart() saves and keeps a retained message; restart(kill=True) loses a newer one."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not on PATH")
    topic = "proofmarket/v1/m/public"
    async with MosquittoBroker(workdir=tmp_path / "mq") as mq:
        for payload, kill in ((b"saved", False), (b"unsaved", True)):
            async with Bus(mq.url, "coord") as coord:
                await coord.publish(topic, payload, retain=True)
            await mq.restart(kill=kill)
        async with Bus(mq.url, "late") as late:
            await late.subscribe(topic)
            async with asyncio.timeout(BOUND):
                delivery = await anext(aiter(late.messages()))
    assert b"saved" == delivery.payload
