"""The genesis file format: parse, validate, round-trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.genesis import GenesisError, MarketGenesis, dump_genesis, load_genesis, parse_genesis

C, P, U = "c" * 64, "a" * 64, "b" * 64
GOOD: dict[str, Any] = {"market": "m1", "coordinator": C, "provers": {P: 100}, "users": {U: 70}}


def test_parses_and_totals() -> None:
    """A valid genesis parses with its roles, participants and total money."""
    genesis = parse_genesis(json.dumps(GOOD))
    assert ("m1", C, {P: 100}, {U: 70}, [P, U], 170) == (
        genesis.market,
        genesis.coordinator,
        dict(genesis.provers),
        dict(genesis.users),
        genesis.participants,
        genesis.total_money,
    )


def test_round_trip_through_file(tmp_path: Path) -> None:
    """dump_genesis then load_genesis gives back an equal genesis."""
    genesis = parse_genesis(json.dumps(GOOD))
    path = tmp_path / "genesis.json"
    path.write_text(dump_genesis(genesis))
    assert genesis == load_genesis(path)


def test_loaded_genesis_is_read_only() -> None:
    """Balances of a loaded genesis cannot be changed in place."""
    genesis = parse_genesis(json.dumps(GOOD))
    with pytest.raises(TypeError):
        genesis.users[U] = 10**9  # type: ignore[index]
    assert 70 == genesis.users[U]


@pytest.mark.parametrize(
    "change",
    [
        {"market": "bad/market"},
        {"market": ""},
        {"coordinator": "C" * 64},
        {"coordinator": "c" * 63},
        {"provers": {P: -1}},
        {"provers": {P: 1.5}},
        {"provers": {P: True}},
        {"users": {"zz": 5}},
        {"users": {P: 5}},
        {"users": {C: 5}},
        {"provers": [P]},
        {"extra": 1},
    ],
)
def test_bad_genesis_rejected(change: dict[str, Any]) -> None:
    """Each malformed or inconsistent genesis raises GenesisError."""
    with pytest.raises(GenesisError):
        parse_genesis(json.dumps({**GOOD, **change}))


@pytest.mark.parametrize("text", ["", "[]", "{", '{"market": "m1"}'])
def test_not_a_genesis_rejected(text: str) -> None:
    """Text that is not a genesis object raises GenesisError."""
    with pytest.raises(GenesisError):
        parse_genesis(text)


def test_missing_file_is_genesis_error(tmp_path: Path) -> None:
    """A missing genesis file raises GenesisError naming the path."""
    with pytest.raises(GenesisError, match=r"nope\.json"):
        load_genesis(tmp_path / "nope.json")


def test_constructor_validates() -> None:
    """Building a MarketGenesis directly validates just like parsing."""
    with pytest.raises(GenesisError):
        MarketGenesis(market="m1", coordinator=C, provers={P: 1}, users={P: 1})


def test_faucet_round_trips_and_logs_in_like_a_participant(tmp_path: Path) -> None:
    """A genesis naming a faucet keeps it through a file and lists it among the logins."""
    faucet = "f" * 64
    genesis = parse_genesis(json.dumps({**GOOD, "faucet": faucet}))
    path = tmp_path / "genesis.json"
    path.write_text(dump_genesis(genesis))
    loaded = load_genesis(path)
    assert (faucet, sorted([P, U, faucet])) == (loaded.faucet, loaded.participants)


def test_faucet_may_not_be_the_coordinator() -> None:
    """The coordinator's key cannot double as the faucet's."""
    with pytest.raises(GenesisError, match="faucet"):
        parse_genesis(json.dumps({**GOOD, "faucet": C}))
