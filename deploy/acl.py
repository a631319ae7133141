"""Broker credentials and ACL for one market, written from its genesis.

Every party logs in with its public key (hex) as username, so one Mosquitto
``pattern`` line per channel (from :mod:`protocol.topics`) pins each identity to
its own topics; the coordinator gets a ``user`` block for its market only.
Passwords are derived from a per-deployment secret, ``HMAC-SHA256(secret,
username)``, so the operator can hand any party its password later without
storing a table; ``credentials.json`` lists them all for distribution.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from deploy.genesis import MarketGenesis
from deploy.passwd import hash_password, read_password_file, write_password_file
from protocol import topics
from protocol.identity import valid_public_key

__all__ = [
    "AdmitError",
    "BrokerFiles",
    "acl_text",
    "admit_party",
    "party_password",
    "write_broker_files",
]

SECRET_FILE = "broker-secret"


@dataclass(frozen=True)
class BrokerFiles:
    """Where :func:`write_broker_files` put things."""

    password_file: Path
    acl_file: Path
    credentials: Path
    secret: Path


def party_password(secret: bytes, username: str) -> str:
    """The broker password of ``username`` (a public key hex) under ``secret``."""
    return hmac.new(secret, username.encode(), hashlib.sha256).hexdigest()[:40]


def _rule_line(rule: topics.AclRule) -> str:
    return f"{'pattern' if rule.per_user else 'topic'} {rule.access} {rule.topic}"


def acl_text(genesis: MarketGenesis) -> str:
    """A Mosquitto acl_file: the market's coordinator block, then per-username patterns."""
    lines = [
        f"# proofmarket ACL for market {genesis.market}; generated from its genesis.",
        "# Each participant logs in with its public key as username (%u below).",
        "",
        f"user {genesis.coordinator}",
        *(_rule_line(rule) for rule in topics.coordinator_acl(genesis.market)),
        "",
        *(_rule_line(rule) for rule in topics.participant_acl()),
    ]
    return "\n".join(lines) + "\n"


def _private_write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _load_or_make_secret(path: Path) -> bytes:
    # reusing the secret keeps every party's password stable across rewrites
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    secret = os.urandom(32)
    _private_write(path, secret.hex() + "\n")
    return secret


def write_broker_files(
    genesis: MarketGenesis, out_dir: Path, secret: bytes | None = None
) -> BrokerFiles:
    """Write ``passwd``, ``acl``, ``credentials.json`` (and the secret) into ``out_dir``.

    Without ``secret`` the one in ``out_dir/broker-secret`` is reused, or made.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    secret_path = out_dir / SECRET_FILE
    if secret is None:
        secret = _load_or_make_secret(secret_path)
    else:
        _private_write(secret_path, secret.hex() + "\n")
    users = {
        key: party_password(secret, key) for key in [genesis.coordinator, *genesis.participants]
    }
    files = BrokerFiles(
        password_file=out_dir / "passwd",
        acl_file=out_dir / "acl",
        credentials=out_dir / "credentials.json",
        secret=secret_path,
    )
    write_password_file(files.password_file, users)
    files.acl_file.write_text(acl_text(genesis))
    _private_write(files.credentials, json.dumps(users, indent=2, sort_keys=True) + "\n")
    return files


class AdmitError(ValueError):
    """A party that cannot be admitted: a bad key, or a directory `deploy acl` never wrote."""


def admit_party(out_dir: Path, key: str) -> str:
    """Let `key` log in to the broker whose files `write_broker_files` put in `out_dir`.

    Adds the key's line to ``passwd`` and its password to ``credentials.json`` (both
    rewritten whole, then renamed into place, so a broker reloading mid-way reads the old
    file or the new one), and returns the password. The ACL needs no line: its
    ``pattern`` rules are keyed on the login username, so they cover a new key as they
    cover the genesis's. Admitting a key twice changes nothing. Mosquitto rereads both
    files on SIGHUP; the embedded broker reads them when it starts.
    """
    if not valid_public_key(key):
        raise AdmitError(f"not a public key (64 lowercase hex, an Ed25519 point): {key!r}")
    secret_path, credentials = out_dir / SECRET_FILE, out_dir / "credentials.json"
    passwd = out_dir / "passwd"
    if not secret_path.exists() or not passwd.exists():
        raise AdmitError(f"{out_dir} holds no broker files: run `proofmarket deploy acl` first")
    password = party_password(_load_or_make_secret(secret_path), key)
    if key not in read_password_file(passwd):
        line = f"{key}:{hash_password(password)}\n"
        _replace_private(passwd, passwd.read_text() + line)
    users = json.loads(credentials.read_text()) if credentials.exists() else {}
    if users.get(key) != password:
        users[key] = password
        _replace_private(credentials, json.dumps(users, indent=2, sort_keys=True) + "\n")
    return password


def _replace_private(path: Path, text: str) -> None:
    """Write `text` to `path` (owner-only) through a temporary file renamed over it."""
    tmp = path.with_name(f".{path.name}.new")
    _private_write(tmp, text)
    os.replace(tmp, path)
