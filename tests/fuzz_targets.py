"""Fuzz targets: every decoder of outside input, fed arbitrary bytes.

Each target takes bytes and returns normally when the decoder answered as it must: a
value, or its own documented refusal (ProtocolError for the wire, a file error for files).
Any other exception is a crash. The suite runs them with hypothesis and replays every
input kept in tests/fuzz_corpus/<target>/; `python tests/fuzz_atheris.py TARGET` runs one
coverage-guided for as long as you like (docs/fuzzing.md).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from deploy.genesis import GenesisError, parse_genesis
from deploy.market import MarketFileError, load_market
from protocol import topics
from protocol.envelope import decode_body, open_envelope
from protocol.errors import ProtocolError
from protocol.identity import Identity, PublicKey

READER: Final = Identity.from_seed(b"\x71" * 32)
MARKET: Final = "fuzz"


def envelope(data: bytes) -> None:
    """Envelope framing, decryption, signature and body, as the coordinator opens them."""
    with contextlib.suppress(ProtocolError):
        open_envelope(READER, data, market=MARKET)


def body(data: bytes) -> None:
    """A body of any kind, straight to the schema decoder (past the signature)."""
    with contextlib.suppress(ProtocolError):
        decode_body(data)


def topic(data: bytes) -> None:
    """Topic parsing, as every party parses each delivery's topic."""
    with contextlib.suppress(ProtocolError):
        topics.parse(data.decode("utf-8", "replace"))


def public_key(data: bytes) -> None:
    """Public keys in their wire (32 bytes) and text (hex) forms."""
    for parse in (
        lambda: PublicKey.from_bytes(data),
        lambda: PublicKey.from_hex(data.decode("utf-8", "replace")),
    ):
        with contextlib.suppress(ProtocolError):
            parse()


def key_file(data: bytes) -> None:
    """A key file's contents, as `Identity.load` reads them."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "party.key"
        path.write_bytes(data)
        path.chmod(0o600)
        with contextlib.suppress(ProtocolError):
            Identity.load(path)


def market_file(data: bytes) -> None:
    """A market file (TOML), as the coordinator and `sim` read it."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "market.toml"
        path.write_bytes(data)
        with contextlib.suppress(MarketFileError):
            load_market(path)


def genesis_file(data: bytes) -> None:
    """A genesis file (JSON), as the coordinator reads it."""
    with contextlib.suppress(GenesisError):
        parse_genesis(data)


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "envelope": envelope,
    "body": body,
    "topic": topic,
    "public_key": public_key,
    "key_file": key_file,
    "market_file": market_file,
    "genesis_file": genesis_file,
}
