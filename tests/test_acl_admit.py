"""`deploy admit`: a key the genesis never named is let in to a running Mosquitto by SIGHUP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy.acl import AdmitError, admit_party, party_password, write_broker_files
from deploy.broker import MosquittoBroker, mosquitto_binary
from deploy.genesis import MarketGenesis
from deploy.passwd import read_password_file, verify_password
from proofmarket.commands.deploy_cmd import deploy
from protocol import topics
from protocol.identity import Identity
from runtime.bus import Bus, BusAuthError, Delivery

BOUND = 10.0
COORD = Identity.generate().public_hex
OLD = Identity.generate().public_hex
NEW = Identity.generate().public_hex
GENESIS = MarketGenesis(market="m1", coordinator=COORD, users={OLD: 10})
SECRET = b"s" * 32


def test_admit_adds_password_and_credentials(tmp_path: Path) -> None:
    """The newcomer's derived password is in passwd (hashed) and credentials.json."""
    files = write_broker_files(GENESIS, tmp_path, secret=SECRET)
    password = admit_party(tmp_path, NEW)
    hashes = read_password_file(files.password_file)
    creds = json.loads(files.credentials.read_text())
    assert (party_password(SECRET, NEW), password) == (password, creds[NEW])
    assert sorted([COORD, OLD, NEW]) == sorted(hashes)
    assert verify_password(password, hashes[NEW])
    assert (0o600, 0o600) == (
        files.password_file.stat().st_mode & 0o777,
        files.credentials.stat().st_mode & 0o777,
    )


def test_admit_twice_changes_nothing(tmp_path: Path) -> None:
    """Admitting a key already admitted leaves passwd byte for byte as it was."""
    files = write_broker_files(GENESIS, tmp_path, secret=SECRET)
    admit_party(tmp_path, NEW)
    before = files.password_file.read_bytes()
    admit_party(tmp_path, NEW)
    assert before == files.password_file.read_bytes()


def test_admit_refuses_bad_key_and_bare_directory(tmp_path: Path) -> None:
    """A malformed key, or a directory without broker files, is refused and nothing written."""
    write_broker_files(GENESIS, tmp_path / "files", secret=SECRET)
    with pytest.raises(AdmitError, match="public key"):
        admit_party(tmp_path / "files", "zz" * 32)
    (tmp_path / "bare").mkdir()
    with pytest.raises(AdmitError, match="deploy acl"):
        admit_party(tmp_path / "bare", NEW)
    assert [] == list((tmp_path / "bare").iterdir())


def test_admit_command_prints_password(tmp_path: Path) -> None:
    """`proofmarket deploy admit --key K --dir D` prints the key's password and exits 0."""
    write_broker_files(GENESIS, tmp_path, secret=SECRET)
    result = CliRunner().invoke(deploy, ["admit", "--key", NEW, "--dir", str(tmp_path)])
    assert 0 == result.exit_code, result.output
    assert f"admitted {NEW}\npassword {party_password(SECRET, NEW)}\n" == result.output


async def _login_until_accepted(url: str, password: str) -> Bus:
    """Log in as NEW, again at once after each refusal: the reload lands within the bound."""
    async with asyncio.timeout(BOUND):
        while True:
            bus = Bus(url, NEW, username=NEW, password=password, connect_timeout=BOUND)
            try:
                return await bus.__aenter__()
            except BusAuthError:
                continue


@pytest.mark.broker
async def test_mosquitto_lets_admitted_key_in_after_sighup(tmp_path: Path) -> None:
    """Refused before; after admit and SIGHUP the newcomer logs in and the ACL pins it too."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not on PATH")
    files = write_broker_files(GENESIS, tmp_path / "broker")
    creds = json.loads(files.credentials.read_text())
    server = MosquittoBroker(
        password_file=files.password_file, acl_file=files.acl_file, workdir=tmp_path / "mq"
    )
    password = party_password(bytes.fromhex(files.secret.read_text().strip()), NEW)
    async with server, Bus(server.url, COORD, username=COORD, password=creds[COORD]) as coord:
        await coord.subscribe(*topics.coordinator_subscriptions("m1"))
        with pytest.raises(BusAuthError):
            async with Bus(server.url, NEW, username=NEW, password=password):
                pass
        assert password == admit_party(tmp_path / "broker", NEW)
        server.reload()
        newcomer = await _login_until_accepted(server.url, password)
        try:
            await newcomer.publish(topics.inbox("m1", OLD), b"forged")
            await newcomer.publish(topics.inbox("m1", NEW), b"mine")
            async with asyncio.timeout(BOUND):
                delivery = await anext(aiter(coord.messages()))
        finally:
            await newcomer.__aexit__(None, None, None)
        assert coord.connected  # the reload kept the coordinator's connection
    assert Delivery(topics.inbox("m1", NEW), b"mine") == delivery
