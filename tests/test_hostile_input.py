"""The nastiest inputs known, fed to every decoder: each is refused, none escapes.

Deep nesting, lengths that claim gigabytes, a wrong type in every field of every kind,
and every truncation of an envelope: the answer is always a ProtocolError with a code,
never another exception (which would stop the loop that called the decoder).
"""

from __future__ import annotations

import msgspec
import pytest
from conftest import seal_body
from test_envelope import MARKET, SAMPLES

from protocol.envelope import PUBLIC_KINDS, decode_body, kind_of, open_envelope, seal
from protocol.errors import BadEncoding, ProtocolError, UnknownVersion
from protocol.identity import Identity
from protocol.messages import TaskBidMessage

SENDER = Identity.from_seed(b"\x81" * 32)
READER = Identity.from_seed(b"\x82" * 32)
ENCODE = msgspec.msgpack.encode
DEEP = b"\x91" * 5_000 + b"\x00"  # 5,000 arrays, each holding the next
WRONG_VALUES = [None, -1, 2**64 - 1, -(2**63), 1.5, True, "x" * 600, b"\xff" * 5000, [], {}]


def fields(message: msgspec.Struct) -> dict[str, object]:
    encoded: dict[str, object] = msgspec.msgpack.decode(ENCODE(message))
    return encoded


def raw_map(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A MessagePack map written by hand, so that any value bytes can go in it."""
    assert len(entries) < 16
    return bytes((0x80 | len(entries),)) + b"".join(k + v for k, v in entries)


def task_bid_entries() -> list[tuple[bytes, bytes]]:
    bid = TaskBidMessage(market=MARKET, round=1, task_id="t", fee=5, task_input=b"in")
    return [(ENCODE(k), ENCODE(v)) for k, v in fields(bid).items()]


@pytest.mark.parametrize("position", range(len(task_bid_entries()) + 1))
def test_deep_nesting_anywhere_in_a_body_is_bad_encoding(position: int) -> None:
    """A value nested thousands deep, before, among or after the fields, is bad_encoding."""
    entries = task_bid_entries()
    entries.insert(position, (ENCODE("junk"), DEEP))
    with pytest.raises(BadEncoding):
        decode_body(raw_map(entries))
    entries = task_bid_entries()
    if position < len(entries):
        entries[position] = (entries[position][0], DEEP)  # in place of a real field
        with pytest.raises((BadEncoding, UnknownVersion)):
            decode_body(raw_map(entries))


@pytest.mark.parametrize(
    "header",
    [
        b"\xdf\xff\xff\xff\xff",
        b"\xdd\xff\xff\xff\xff",
        b"\xdb\xff\xff\xff\xff",
        b"\xc6\xff\xff\xff\xff",
    ],
    ids=["map32", "array32", "str32", "bin32"],
)
def test_lengths_that_claim_gigabytes_are_bad_encoding(header: bytes) -> None:
    """A map, array, string or bytes header claiming 4 GiB over a few bytes is refused."""
    with pytest.raises(BadEncoding):
        decode_body(header + b"\x00" * 16)
    entries = [(k, header if k == ENCODE("task_input") else v) for k, v in task_bid_entries()]
    with pytest.raises(BadEncoding):
        decode_body(raw_map(entries))


@pytest.mark.parametrize("sample", SAMPLES, ids=kind_of)
def test_a_wrong_type_in_any_field_is_refused_with_a_code(sample: msgspec.Struct) -> None:
    """Every field of every kind, given each wrong value, decodes or is refused: never raises."""
    original = fields(sample)
    for name in original:
        for value in WRONG_VALUES:
            body = ENCODE({**original, name: value})
            try:
                decode_body(body)
            except ProtocolError as exc:
                assert exc.code in {"bad_encoding", "unknown_version"}, (name, value)


def test_a_body_without_v_is_refused() -> None:
    """Every body carries its schema version: one without `v` is bad_encoding."""
    body = fields(TaskBidMessage(market=MARKET, round=1, task_id="t", fee=5, task_input=b""))
    del body["v"]
    with pytest.raises(BadEncoding, match="no schema version"):
        decode_body(ENCODE(body))
    with pytest.raises(UnknownVersion):
        decode_body(ENCODE({**body, "v": 2}))


@pytest.mark.parametrize("sample", SAMPLES, ids=kind_of)
def test_every_truncation_of_an_envelope_is_refused(sample: msgspec.Struct) -> None:
    """Each prefix of a valid envelope, sealed or public, is a ProtocolError, never more."""
    kind = kind_of(sample)  # type: ignore[arg-type]
    to = None if kind in PUBLIC_KINDS else READER.public_key
    envelope = seal(SENDER, sample, MARKET, to)  # type: ignore[arg-type]
    for end in range(len(envelope)):
        with pytest.raises(ProtocolError):
            open_envelope(READER, envelope[:end], market=MARKET)


@pytest.mark.parametrize(("at", "length"), [(0, 0), (0, 65), (1, 0), (1, 33)])
def test_header_lengths_outside_their_ranges_are_bad_encoding(at: int, length: int) -> None:
    """Market length 0 or 65 and kind length 0 or 33 are framing errors, as documented."""
    envelope = bytearray(seal(SENDER, SAMPLES[3], MARKET, READER.public_key))  # type: ignore[arg-type]
    market_at = 74
    where = market_at if at == 0 else market_at + 1 + envelope[market_at]
    envelope[where] = length
    with pytest.raises(BadEncoding, match="length"):
        open_envelope(READER, bytes(envelope), market=MARKET)


def test_a_signed_poisoned_body_is_refused_after_its_signature_checks() -> None:
    """Deep nesting signed by a real key reaches the decoder and is refused, not raised."""
    entries = task_bid_entries()
    entries.insert(0, (ENCODE("junk"), DEEP))
    poison = seal_body(SENDER, raw_map(entries), kind="task_bid", market=MARKET, to=READER)
    with pytest.raises(BadEncoding, match="nests deeper"):
        open_envelope(READER, poison, market=MARKET)
