"""The genesis file: who takes part in a market and the money each starts with.

A JSON object, shared by the testnet launcher, the coordinator and the broker
ACL writer::

    {
      "market": "m1",
      "coordinator": "<64 hex>",
      "provers": {"<64 hex>": 1000, ...},   # free deposit of each prover
      "users":   {"<64 hex>": 5000, ...}    # balance of each user
    }

Keys are Ed25519 public keys as 64 lowercase hex; amounts are non-negative
integers. A key has one role: the coordinator is neither prover nor user, and
no key is both. ``opening_balances`` gives a coordinator its opening balances
from the file, refusing one made for another market or coordinator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from coordinator.service import CoordinatorStartError
from coordinator.state import OpeningBalances

__all__ = [
    "GenesisError",
    "MarketGenesis",
    "dump_genesis",
    "load_genesis",
    "opening_balances",
    "parse_genesis",
]

_KEY = re.compile(r"[0-9a-f]{64}")
_MARKET = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the same names protocol.topics accepts
_FIELDS = {"market", "coordinator", "provers", "users", "faucet"}


class GenesisError(ValueError):
    """A genesis that is malformed or inconsistent; the message says where."""


@dataclass(frozen=True)
class MarketGenesis:
    """A validated genesis; build it with :func:`parse_genesis` or :func:`load_genesis`."""

    market: str
    coordinator: str
    provers: Mapping[str, int] = field(default_factory=dict)
    users: Mapping[str, int] = field(default_factory=dict)
    faucet: str | None = None  # the one key whose signed faucet grants add money later

    def __post_init__(self) -> None:
        if not isinstance(self.market, str) or not _MARKET.fullmatch(self.market):
            raise GenesisError(f"market: {self.market!r} is not 1-64 of A-Z a-z 0-9 _ . -")
        _check_key("coordinator", self.coordinator)
        if self.faucet is not None:
            _check_key("faucet", self.faucet)
        for role, accounts in (("provers", self.provers), ("users", self.users)):
            if not isinstance(accounts, Mapping):
                raise GenesisError(f"{role}: expected an object of key -> amount")
            for key, amount in accounts.items():
                _check_key(f"{role} key", key)
                if type(amount) is not int or amount < 0:
                    raise GenesisError(f"{role}[{key}]: {amount!r} is not a non-negative integer")
        both = set(self.provers) & set(self.users)
        if both:
            raise GenesisError(f"keys both prover and user: {sorted(both)}")
        if self.coordinator in self.provers or self.coordinator in self.users:
            raise GenesisError("the coordinator's key is also a participant's")
        if self.faucet is not None and self.faucet == self.coordinator:
            raise GenesisError("the faucet needs a key of its own, not the coordinator's")
        # frozen means frozen: callers cannot move money in a loaded genesis
        object.__setattr__(self, "provers", MappingProxyType(dict(self.provers)))
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))

    @property
    def participants(self) -> list[str]:
        """Every key that logs in to publish besides the coordinator: provers, users, faucet."""
        faucet = [] if self.faucet is None else [self.faucet]
        return sorted({*self.provers, *self.users, *faucet})

    @property
    def total_money(self) -> int:
        """All deposits plus all balances: what settlement must conserve."""
        return sum(self.provers.values()) + sum(self.users.values())


def _check_key(where: str, key: Any) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise GenesisError(f"{where}: {key!r} is not a 64-hex lowercase public key")


def parse_genesis(text: str | bytes) -> MarketGenesis:
    """Parse and validate genesis JSON; GenesisError for anything off."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GenesisError(f"not JSON: {exc}") from None
    except RecursionError:
        raise GenesisError("not a genesis file: nested deeper than any genesis is") from None
    if not isinstance(data, dict):
        raise GenesisError("expected a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        raise GenesisError(f"unknown fields: {sorted(unknown)}")
    for name in ("market", "coordinator"):
        if name not in data:
            raise GenesisError(f"missing field {name!r}")
    return MarketGenesis(
        market=data["market"],
        coordinator=data["coordinator"],
        provers=data.get("provers", {}),
        users=data.get("users", {}),
        faucet=data.get("faucet"),
    )


def load_genesis(path: Path) -> MarketGenesis:
    """Read and validate a genesis file."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise GenesisError(f"cannot read {path}: {exc}") from None
    try:
        return parse_genesis(text)
    except GenesisError as exc:
        raise GenesisError(f"{path}: {exc}") from None


def dump_genesis(genesis: MarketGenesis) -> str:
    """The canonical JSON text of a genesis (sorted keys, trailing newline)."""
    data: dict[str, object] = {
        "market": genesis.market,
        "coordinator": genesis.coordinator,
        "provers": dict(sorted(genesis.provers.items())),
        "users": dict(sorted(genesis.users.items())),
    }
    if genesis.faucet is not None:
        data["faucet"] = genesis.faucet
    return json.dumps(data, indent=2) + "\n"


def opening_balances(path: str, *, market: str, key: str) -> OpeningBalances:
    """A coordinator's opening balances from the genesis file at `path`.

    The file names its market and coordinator; a coordinator refuses one made for
    another market or another key rather than start a market nobody funded.
    """
    try:
        genesis = load_genesis(Path(path))
    except GenesisError as exc:
        raise CoordinatorStartError(str(exc)) from exc
    if genesis.market != market:
        raise CoordinatorStartError(
            f"genesis {path} is for market {genesis.market!r}, not {market!r}"
        )
    if genesis.coordinator != key:
        raise CoordinatorStartError(f"genesis {path} names another coordinator key")
    return OpeningBalances(
        balances=dict(genesis.users), deposits=dict(genesis.provers), faucet=genesis.faucet
    )
