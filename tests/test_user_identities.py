"""Deriving a load generator's identities from one key."""

from __future__ import annotations

import pytest

from protocol.identity import Identity
from user_client.identities import fleet_identities


def test_fleet_starts_with_root_and_is_distinct() -> None:
    """The first identity is the key itself and all M public keys differ."""
    root = Identity.from_seed(b"\x01" * 32)
    fleet = fleet_identities(root, 5)
    assert root.public_hex == fleet[0].public_hex
    assert 5 == len({i.public_hex for i in fleet})


def test_fleet_is_reproducible_from_the_key() -> None:
    """The same key always derives the same identities; another key derives others."""
    first = [i.public_hex for i in fleet_identities(Identity.from_seed(b"\x02" * 32), 3)]
    again = [i.public_hex for i in fleet_identities(Identity.from_seed(b"\x02" * 32), 3)]
    other = [i.public_hex for i in fleet_identities(Identity.from_seed(b"\x03" * 32), 3)]
    assert first == again
    assert not set(first) & set(other)


def test_fleet_needs_at_least_one_identity() -> None:
    """Zero identities is refused."""
    with pytest.raises(ValueError):
        fleet_identities(Identity.from_seed(b"\x01" * 32), 0)
