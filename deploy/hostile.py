"""Hostile traffic: every class of bad input a market's coordinator must refuse.

Each input says where it goes, what the coordinator must answer (the reject code), to
whom (the party the topic names) and under which reference, so a run can check that every
attributable input got its specific signed reject. Used by the hostile-traffic test and
`proofmarket bench hostile`; pure apart from the randomness it is given.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import msgspec
import nacl.bindings as sodium

from protocol import topics
from protocol.envelope import (
    DOMAIN,
    ENVELOPE_VERSION,
    MAX_ENVELOPE_SIZE,
    NONCE_SIZE,
    PUBLIC,
    SEALED,
    envelope_ref,
    seal,
)
from protocol.identity import Identity, valid_public_key
from protocol.messages import Message, ProverWill, TaskBidMessage
from protocol.rejects import RejectCode

_ENCODE = msgspec.msgpack.encode


@dataclass(frozen=True, slots=True)
class HostileInput:
    """One input, and the answer it must get: `code` sealed to `answer_to`, naming `ref`."""

    kind: str  # the class of attack, for reports
    topic: str
    payload: bytes
    code: str | None  # None: no one can be answered (the topic names no usable key)
    answer_to: str | None
    ref: bytes


def deep_body(kind: str, depth: int = 1_000) -> bytes:
    """A body whose first key holds `depth` nested arrays, placed before "kind".

    About a kilobyte; it stopped the coordinator and provers with a RecursionError.
    """
    nested = b"\x91" * depth + b"\x00"
    return (
        b"\x83" + _ENCODE("x") + nested + _ENCODE("kind") + _ENCODE(kind) + _ENCODE("v") + b"\x01"
    )


def seal_body(
    sender: Identity, body: bytes, *, kind: str, market: str, to: Identity | str | None
) -> bytes:
    """`body` as it is, whatever it holds, signed by `sender` and sealed to `to` (public
    when `to` is None).

    What a hostile party with a key of its own can send: the envelope is well formed and
    authentic, so only the body's decoding stands between it and the reader's loop.
    """
    recipient = b""
    if to is not None:
        recipient = to.public_key.raw if isinstance(to, Identity) else bytes.fromhex(to)
    header = b"".join(
        (
            bytes((ENVELOPE_VERSION, PUBLIC if to is None else SEALED)),
            (7).to_bytes(8, "big"),
            sender.public_key.raw,
            recipient,
            bytes((len(market),)),
            market.encode("ascii"),
            bytes((len(kind),)),
            kind.encode("ascii"),
        )
    )
    signature = sender.sign(DOMAIN + header + body)
    if to is None:
        return header + signature + body
    nonce = bytes(NONCE_SIZE)
    key = sender.box_key(recipient)
    return header + nonce + sodium.crypto_box_easy_afternm(signature + body, nonce, key)


def with_bad_signature(envelope: bytes, sender: Identity, recipient: Identity | str) -> bytes:
    """`envelope`, sealed by `sender` to `recipient`, re-encrypted around a signature with
    one bit flipped: its box opens, its signature fails."""
    market_end = 75 + envelope[74]
    header_end = market_end + 1 + envelope[market_end]
    nonce = envelope[header_end : header_end + NONCE_SIZE]
    raw = recipient.public_key.raw if isinstance(recipient, Identity) else bytes.fromhex(recipient)
    key = sender.box_key(raw)
    plain = sodium.crypto_box_open_easy_afternm(envelope[header_end + NONCE_SIZE :], nonce, key)
    bad = bytes([plain[0] ^ 0x01]) + plain[1:]
    return envelope[: header_end + NONCE_SIZE] + sodium.crypto_box_easy_afternm(bad, nonce, key)


def invalid_point_key() -> str:
    """64 lowercase hex that names no usable Ed25519 public key."""
    for i in range(256):
        candidate = (bytes([i]) * 32).hex()
        if not valid_public_key(candidate):
            return candidate
    raise AssertionError("no invalid point among the candidates")


@dataclass
class HostileTraffic:
    """Makes hostile inputs against one round of one market, class after class."""

    attacker: Identity  # a funded key: its genuine bid is the original that copies replay
    victim: str  # an honest party whose topics the attacker abuses
    coordinator: str
    market: str
    round: int
    p_max: int
    rng: random.Random
    oversized_every: int = 1_000  # a 1 MiB input is costly to send: one per this many
    funded: bool = True  # without money, the genuine bid and its copies are refused

    def __post_init__(self) -> None:
        self._number = 0
        self.genuine = self._bid(fee=1)
        """A bid the coordinator accepts: send it first; the replay class copies it."""

    def inputs(self, count: int) -> Iterator[HostileInput]:
        """`count` inputs cycling through every class (and one oversized per thousand)."""
        makers = self._makers()
        for i in range(count):
            if self.oversized_every and i % self.oversized_every == self.oversized_every - 1:
                yield self._oversized()
            else:
                yield makers[i % len(makers)]()

    def _makers(self) -> list[Callable[[], HostileInput]]:
        return [
            self._truncated,
            self._bad_version,
            self._bad_mode,
            self._wrong_market,
            self._unknown_kind,
            self._wrong_mode,
            self._wrong_recipient,
            self._bad_ciphertext,
            self._bad_signature,
            self._deep_nesting,
            self._missing_version,
            self._wrong_kind,
            self._wrong_sender,
            self._replay,
            self._fee_above_p_max,
            self._future_round,
            self._forged_will,
            self._unanswerable_topic,
        ]

    # -- helpers ------------------------------------------------------------------------

    def _bid(self, *, fee: int, round: int | None = None, market: str | None = None) -> bytes:
        self._number += 1
        message = TaskBidMessage(
            market=market or self.market,
            round=self.round if round is None else round,
            task_id=f"hostile-{self._number}-{self.rng.getrandbits(32)}",
            fee=fee,
            task_input=b"x",
        )
        return seal(self.attacker, message, market or self.market, self.coordinator)

    def _mine(self, kind: str, payload: bytes, code: str | None) -> HostileInput:
        topic = topics.inbox(self.market, self.attacker.public_hex)
        return HostileInput(
            kind, topic, payload, code, self.attacker.public_hex, envelope_ref(payload)
        )

    def _body(self, message: Message) -> dict[str, object]:
        decoded: dict[str, object] = msgspec.msgpack.decode(_ENCODE(message))
        return decoded

    # -- the classes --------------------------------------------------------------------

    def _truncated(self) -> HostileInput:
        return self._mine(
            "truncated", self._bid(fee=1)[: self.rng.randrange(2, 40)], RejectCode.BAD_ENCODING
        )

    def _bad_version(self) -> HostileInput:
        return self._mine(
            "bad_version", b"\x02" + self.rng.randbytes(200), RejectCode.UNKNOWN_VERSION
        )

    def _bad_mode(self) -> HostileInput:
        return self._mine(
            "bad_mode", b"\x01\x07" + self.rng.randbytes(200), RejectCode.BAD_ENCODING
        )

    def _wrong_market(self) -> HostileInput:
        return self._mine(
            "wrong_market", self._bid(fee=1, market="elsewhere"), RejectCode.WRONG_MARKET
        )

    def _unknown_kind(self) -> HostileInput:
        body = _ENCODE({"kind": "nonsense", "v": 1})
        payload = seal_body(
            self.attacker, body, kind="nonsense", market=self.market, to=self.coordinator
        )
        return self._mine("unknown_kind", payload, RejectCode.UNKNOWN_KIND)

    def _wrong_mode(self) -> HostileInput:
        body = self._body(
            TaskBidMessage(market=self.market, round=self.round, task_id="m", fee=1, task_input=b"")
        )
        payload = seal_body(
            self.attacker, _ENCODE(body), kind="task_bid", market=self.market, to=None
        )
        return self._mine("wrong_mode", payload, RejectCode.WRONG_MODE)

    def _wrong_recipient(self) -> HostileInput:
        message = TaskBidMessage(
            market=self.market, round=self.round, task_id="r", fee=1, task_input=b""
        )
        payload = seal(self.attacker, message, self.market, self.victim)
        return self._mine("wrong_recipient", payload, RejectCode.WRONG_RECIPIENT)

    def _bad_ciphertext(self) -> HostileInput:
        payload = bytearray(self._bid(fee=1))
        payload[-1 - self.rng.randrange(16)] ^= 0x01
        return self._mine("bad_ciphertext", bytes(payload), RejectCode.BAD_CIPHERTEXT)

    def _bad_signature(self) -> HostileInput:
        payload = with_bad_signature(self._bid(fee=1), self.attacker, self.coordinator)
        return self._mine("bad_signature", payload, RejectCode.BAD_SIGNATURE)

    def _deep_nesting(self) -> HostileInput:
        payload = seal_body(
            self.attacker,
            deep_body("task_bid"),
            kind="task_bid",
            market=self.market,
            to=self.coordinator,
        )
        return self._mine("deep_nesting", payload, RejectCode.BAD_ENCODING)

    def _missing_version(self) -> HostileInput:
        body = self._body(
            TaskBidMessage(market=self.market, round=self.round, task_id="v", fee=1, task_input=b"")
        )
        del body["v"]
        payload = seal_body(
            self.attacker, _ENCODE(body), kind="task_bid", market=self.market, to=self.coordinator
        )
        return self._mine("missing_version", payload, RejectCode.BAD_ENCODING)

    def _wrong_kind(self) -> HostileInput:
        body = self._body(
            TaskBidMessage(market=self.market, round=self.round, task_id="k", fee=1, task_input=b"")
        )
        payload = seal_body(
            self.attacker, _ENCODE(body), kind="prover_bid", market=self.market, to=self.coordinator
        )
        return self._mine("wrong_kind", payload, RejectCode.WRONG_KIND)

    def _wrong_sender(self) -> HostileInput:
        payload = self._bid(fee=1)
        topic = topics.inbox(self.market, self.victim)
        return HostileInput(
            "wrong_sender",
            topic,
            payload,
            RejectCode.WRONG_SENDER,
            self.victim,
            envelope_ref(payload),
        )

    def _replay(self) -> HostileInput:
        code = RejectCode.REPLAY if self.funded else RejectCode.INSUFFICIENT_BALANCE
        return self._mine("replay", self.genuine, code)

    def _fee_above_p_max(self) -> HostileInput:
        return self._mine(
            "fee_above_p_max", self._bid(fee=self.p_max + 1), RejectCode.FEE_ABOVE_P_MAX
        )

    def _future_round(self) -> HostileInput:
        return self._mine(
            "future_round", self._bid(fee=1, round=self.round + 1_000), RejectCode.FUTURE_ROUND
        )

    def _forged_will(self) -> HostileInput:
        will = ProverWill(market=self.market, connected_at=self.rng.getrandbits(40))
        payload = seal(self.attacker, will, self.market, self.coordinator)
        topic = topics.will(self.market, self.victim)
        return HostileInput(
            "forged_will",
            topic,
            payload,
            RejectCode.WRONG_SENDER,
            self.victim,
            envelope_ref(payload),
        )

    def _unanswerable_topic(self) -> HostileInput:
        payload = self._bid(fee=1)
        topic = topics.inbox(self.market, invalid_point_key())
        return HostileInput("bad_topic_key", topic, payload, None, None, envelope_ref(payload))

    def _oversized(self) -> HostileInput:
        return self._mine("oversized", b"\x01" * (MAX_ENVELOPE_SIZE + 1024), RejectCode.TOO_LARGE)
