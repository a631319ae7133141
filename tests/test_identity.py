"""Identities: key files, permissions, public key parsing, and `proofmarket keygen`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from proofmarket.cli import cli
from protocol.errors import BadKeyFile, BadPublicKey
from protocol.identity import KEY_FILE_PREFIX, Identity, PublicKey


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    """A saved identity loads back with the same public key."""
    identity = Identity.generate()
    identity.save(tmp_path / "key")
    assert identity.public_hex == Identity.load(tmp_path / "key").public_hex


def test_saved_file_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    """The key file is written with mode 0600 even under a permissive umask."""
    old = os.umask(0)
    try:
        Identity.generate().save(tmp_path / "key")
    finally:
        os.umask(old)
    assert 0o600 == stat.S_IMODE((tmp_path / "key").stat().st_mode)


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    """Saving over an existing key fails unless overwrite is asked for."""
    first, second = Identity.generate(), Identity.generate()
    first.save(tmp_path / "key")
    with pytest.raises(FileExistsError):
        second.save(tmp_path / "key")
    second.save(tmp_path / "key", overwrite=True)
    assert second.public_hex == Identity.load(tmp_path / "key").public_hex


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_loose_permissions(tmp_path: Path, mode: int) -> None:
    """A key file readable or writable by group or others is refused, naming the fix."""
    Identity.generate().save(tmp_path / "key")
    (tmp_path / "key").chmod(mode)
    with pytest.raises(BadKeyFile, match="chmod 600"):
        Identity.load(tmp_path / "key")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00" * 32,
        KEY_FILE_PREFIX.encode() + b"ab" * 31 + b"\n",
        KEY_FILE_PREFIX.encode() + b"ab" * 33 + b"\n",
        KEY_FILE_PREFIX.encode() + b"zz" * 32 + b"\n",
        KEY_FILE_PREFIX.encode() + b"AB" * 32 + b"\n",
        b"\xff" * 88,
        b"x" * 5000,
    ],
    ids=["empty", "raw-bytes", "short", "long", "not-hex", "upper-hex", "binary", "huge"],
)
def test_load_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    """Wrong sizes and garbage fail with BadKeyFile, not a library error."""
    path = tmp_path / "key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(BadKeyFile):
        Identity.load(path)


def test_load_missing_file(tmp_path: Path) -> None:
    """A missing key file fails with BadKeyFile naming the path."""
    with pytest.raises(BadKeyFile, match="missing"):
        Identity.load(tmp_path / "missing")


def test_public_key_from_hex_round_trip() -> None:
    """A public key parses from its hex form and prints back to it."""
    identity = Identity.from_seed(b"k" * 32)
    assert identity.public_key == PublicKey.from_hex(identity.public_hex)
    assert identity.public_hex == str(PublicKey.from_hex(identity.public_hex))


@pytest.mark.parametrize(
    "text",
    ["", "ab" * 31, "ab" * 33, "AB" * 32, "zz" * 32, " " + "ab" * 31 + "a"],
    ids=["empty", "short", "long", "upper", "not-hex", "spaces"],
)
def test_public_key_from_hex_refuses_malformed(text: str) -> None:
    """Malformed hex is refused with BadPublicKey."""
    with pytest.raises(BadPublicKey):
        PublicKey.from_hex(text)


def test_public_key_refuses_invalid_point() -> None:
    """32 bytes that are not a usable Ed25519 point are refused."""
    with pytest.raises(BadPublicKey):
        PublicKey.from_bytes(b"\x00" * 32)


def test_box_keys_agree_between_peers() -> None:
    """Both ends of a pair derive the same Box key, and it is cached."""
    a, b = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    key = a.box_key(b.public_key)
    assert key == b.box_key(a.public_key.raw)
    assert key is a.box_key(b.public_key.raw)


def test_repr_hides_the_secret() -> None:
    """repr names the public key only."""
    identity = Identity.from_seed(b"s" * 32)
    assert f"Identity({identity.public_hex})" == repr(identity)


def test_keygen_writes_key_and_prints_public_key(tmp_path: Path) -> None:
    """`proofmarket keygen --out` prints the hex public key of the file it wrote."""
    result = CliRunner().invoke(cli, ["keygen", "--out", str(tmp_path / "key")])
    assert 0 == result.exit_code, result.output
    assert Identity.load(tmp_path / "key").public_hex == result.output.strip()


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    """keygen keeps an existing key unless --force is given."""
    path = tmp_path / "key"
    first = CliRunner().invoke(cli, ["keygen", "--out", str(path)]).output.strip()
    refused = CliRunner().invoke(cli, ["keygen", "--out", str(path)])
    assert 0 != refused.exit_code
    assert first == Identity.load(path).public_hex
    forced = CliRunner().invoke(cli, ["keygen", "--out", str(path), "--force"])
    assert 0 == forced.exit_code
    assert forced.output.strip() == Identity.load(path).public_hex != first


def test_keygen_console_script(tmp_path: Path) -> None:
    """The installed command runs keygen in a real process."""
    out = subprocess.run(
        [sys.executable, "-m", "proofmarket", "keygen", "--out", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Identity.load(tmp_path / "k").public_hex == out


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    """Saving, overwriting and a refused save leave only the key file behind."""
    Identity.generate().save(tmp_path / "key")
    Identity.generate().save(tmp_path / "key", overwrite=True)
    with pytest.raises(FileExistsError):
        Identity.generate().save(tmp_path / "key")
    assert ["key"] == sorted(p.name for p in tmp_path.iterdir())
