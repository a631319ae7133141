"""The market file: defaults, round trips and one named error per bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.market import (
    DEFAULT_MARKET,
    MarketFileError,
    dump_market,
    load_market,
    market_from_dict,
)
from protocol.messages import FailureRules, MarketParams


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "market.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    """The documented defaults are the ones in DEFAULT_MARKET."""
    assert (
        MarketParams(
            market="zk-default",
            p_max=100,
            epoch_rounds=10,
            capacity_factor=2,
            mechanism="prooph",
            difficulty=100,
            setup=1000,
            bid_window_ms=1000,
            prove_window_ms=2000,
        )
        == DEFAULT_MARKET
    )


def test_empty_file_is_the_default_market(tmp_path: Path) -> None:
    """An empty market file gives DEFAULT_MARKET."""
    assert DEFAULT_MARKET == load_market(_write(tmp_path, ""))


def test_given_keys_override_defaults(tmp_path: Path) -> None:
    """Keys present in the file replace defaults; the rest stay default."""
    path = _write(tmp_path, 'market = "zk-fast"\np_max = 250\ndifficulty = 7\n')
    assert msgspec.structs.replace(
        DEFAULT_MARKET, market="zk-fast", p_max=250, difficulty=7
    ) == load_market(path)


def test_dump_then_load_round_trips(tmp_path: Path) -> None:
    """dump_market output loads back to the same parameters."""
    params = MarketParams(
        market="zk.test_1",
        p_max=1,
        epoch_rounds=3,
        capacity_factor=1,
        mechanism="prooph",
        difficulty=1,
        setup=0,
        bid_window_ms=5,
        prove_window_ms=7,
    )
    assert params == load_market(_write(tmp_path, dump_market(params)))
    assert DEFAULT_MARKET == load_market(_write(tmp_path, dump_market(DEFAULT_MARKET)))


@settings(max_examples=30, deadline=None)
@given(
    market=st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z"),
    p_max=st.integers(1, 2**53),
    epoch_rounds=st.integers(1, 2**31),
    setup=st.integers(0, 2**31),
)
def test_dump_round_trips_any_valid_market(
    market: str, p_max: int, epoch_rounds: int, setup: int
) -> None:
    """Any valid parameters survive dump_market and TOML parsing unchanged."""
    import tomllib

    params = msgspec.structs.replace(
        DEFAULT_MARKET, market=market, p_max=p_max, epoch_rounds=epoch_rounds, setup=setup
    )
    assert params == market_from_dict(tomllib.loads(dump_market(params)))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("p_max", "100"),
        ("p_max", 1.5),
        ("p_max", True),
        ("difficulty", [1]),
        ("market", 7),
        ("mechanism", 1),
        ("bid_window_ms", {"ms": 1}),
    ],
)
def test_wrong_type_names_the_key(key: str, value: Any) -> None:
    """A value of the wrong type raises MarketFileError naming its key."""
    with pytest.raises(MarketFileError, match=key) as caught:
        market_from_dict({key: value})
    assert key == caught.value.key


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("p_max", 0),
        ("p_max", -5),
        ("p_max", 2**60),
        ("epoch_rounds", 0),
        ("capacity_factor", 0),
        ("difficulty", 0),
        ("setup", -1),
        ("bid_window_ms", 0),
        ("prove_window_ms", -1),
        ("market", ""),
        ("market", "has space"),
        ("market", "x" * 65),
        ("mechanism", ""),
        ("mechanism", "vickrey-someday"),
    ],
)
def test_out_of_range_names_the_key(key: str, value: Any) -> None:
    """A value out of range (or an unknown mechanism) raises MarketFileError naming its key."""
    with pytest.raises(MarketFileError, match=key) as caught:
        market_from_dict({key: value})
    assert key == caught.value.key


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    """A key the market file does not define is refused by name, e.g. a typo."""
    with pytest.raises(MarketFileError, match="p_maks") as caught:
        load_market(_write(tmp_path, "p_maks = 100\n"))
    assert "p_maks" == caught.value.key


def test_nested_table_is_an_unknown_key(tmp_path: Path) -> None:
    """A TOML table is not part of the format and is refused by its name."""
    with pytest.raises(MarketFileError, match="round") as caught:
        load_market(_write(tmp_path, "[round]\nbid_window_ms = 5\n"))
    assert "round" == caught.value.key


def test_invalid_toml_is_a_market_file_error(tmp_path: Path) -> None:
    """A file that is not TOML raises MarketFileError, not a parser exception."""
    with pytest.raises(MarketFileError, match="not TOML"):
        load_market(_write(tmp_path, "p_max = = 3\n"))


def test_missing_file_is_a_market_file_error(tmp_path: Path) -> None:
    """A missing market file raises MarketFileError naming the path."""
    with pytest.raises(MarketFileError, match=r"nowhere\.toml"):
        load_market(tmp_path / "nowhere.toml")


def test_market_file_error_is_a_value_error() -> None:
    """Callers catching ValueError also catch MarketFileError."""
    with pytest.raises(ValueError, match="p_max"):
        market_from_dict({"p_max": -1})


def test_failure_rules_are_read_and_left_off_the_wire_at_their_defaults() -> None:
    """The failure keys parse from a market file; at their defaults the wire omits them."""
    rules = market_from_dict(
        {"late_grace_ms": 300, "rescue": True, "suspend_after_failures": 2, "suspend_window": 5}
    )
    assert (300, True, 2, 5) == (
        rules.late_grace_ms,
        rules.rescue,
        rules.suspend_after_failures,
        rules.suspend_window,
    )
    expected = FailureRules(
        late_grace_ms=300, rescue=True, suspend_after_failures=2, suspend_window=5
    )
    assert expected == rules.failures
    written_out = market_from_dict({"late_grace_ms": 0, "rescue": False})
    assert msgspec.msgpack.encode(DEFAULT_MARKET) == msgspec.msgpack.encode(written_out)
    assert "failures" not in msgspec.msgpack.decode(msgspec.msgpack.encode(DEFAULT_MARKET))


def test_a_suspension_window_shorter_than_its_count_is_refused() -> None:
    """suspend_window below suspend_after_failures could never suspend: refused, naming the key."""
    with pytest.raises(MarketFileError) as raised:
        market_from_dict({"suspend_after_failures": 3, "suspend_window": 2})
    assert "suspend_window" == raised.value.key


def test_a_grace_longer_than_the_bid_window_is_refused() -> None:
    """late_grace_ms above bid_window_ms would outlast the round's replay window: refused."""
    with pytest.raises(MarketFileError) as raised:
        market_from_dict({"late_grace_ms": 1001, "bid_window_ms": 1000})
    assert "late_grace_ms" == raised.value.key


def test_a_bad_failure_rule_is_named_by_its_own_key() -> None:
    """A failure rule of the wrong type is refused naming its top-level key."""
    with pytest.raises(MarketFileError) as raised:
        market_from_dict({"rescue": 1})
    assert "rescue" == raised.value.key
