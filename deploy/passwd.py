"""Mosquitto password files (PBKDF2-SHA512, the ``$7$`` format), shared by both brokers.

One file serves Mosquitto (``password_file``) and the embedded broker, so a
market's credentials are written once from its genesis.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["hash_password", "read_password_file", "verify_password", "write_password_file"]

ITERATIONS = 101  # mosquitto_passwd's default; the file is protected by permissions too
_SALT_BYTES = 12


class PasswordFileError(ValueError):
    """A password file line that is not ``username:$7$iterations$salt$hash``."""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` hash Mosquitto 2 writes and checks."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash; False for any other format."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Write ``users`` (username -> plaintext password) hashed, readable by the owner only."""
    lines = []
    for username, password in sorted(users.items()):
        if not username or ":" in username or "\n" in username:
            raise PasswordFileError(f"bad username {username!r}")
        lines.append(f"{username}:{hash_password(password)}\n")
    path.write_text("".join(lines))
    path.chmod(0o600)


def read_password_file(path: Path) -> dict[str, str]:
    """Username -> ``$7$`` hash; comments and blank lines are skipped."""
    users: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, hashed = line.partition(":")
        if not sep or not username or not hashed.startswith("$7$"):
            raise PasswordFileError(f"{path}:{number}: not username:$7$... ")
        users[username] = hashed
    return users
