"""Envelopes: sign, then (for one recipient) encrypt; open in the reverse order.

Byte layout (integers big-endian; the full description is in docs/protocol.md):

    offset  size  field
    0       1     envelope version, 1
    1       1     mode: 0 = public (signed only), 1 = sealed (signed, then encrypted)
    2       8     seq: u64 chosen by the sender, unique per sender and round
    10      32    sender Ed25519 public key
    42      32    recipient Ed25519 public key              (sealed only)
    h       1     market length m, 1..64
    h+1     m     market, ASCII
    ...     1     kind length k, 1..32
    ...     k     kind, ASCII
    H             end of the header
    public: H: 64-byte signature, H+64: body
    sealed: H: 24-byte nonce, H+24: NaCl crypto_box(signature || body) to the recipient

The signature is Ed25519 over DOMAIN || header || body, where header is bytes 0..H as
sent. So version, mode, seq, sender, recipient, market and kind are all signed with the
body, and the body's own `round` binds the message to its round. The body is a
MessagePack map (protocol.messages) whose `kind` and `market` must equal the header's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
import nacl.bindings as sodium
import nacl.exceptions

from protocol.errors import (
    BadCiphertext,
    BadEncoding,
    BadPublicKey,
    BadSignature,
    ProtocolError,
    TooLarge,
    UnknownKind,
    UnknownVersion,
    WrongKind,
    WrongMarket,
    WrongMode,
    WrongRecipient,
)
from protocol.events import MessageReceived
from protocol.identity import Identity, PublicKey
from protocol.messages import KINDS, SCHEMA_VERSION, Message, Reject, RoundAnnouncement

ENVELOPE_VERSION: Final = 1
DOMAIN: Final = b"proofmarket/envelope\x00"
MAX_ENVELOPE_SIZE: Final = 1 << 20
"""Default size limit in bytes, checked before any parsing (a batch of ~200 4 KiB tasks)."""

PUBLIC: Final = 0
SEALED: Final = 1
PUBLIC_KINDS: Final = frozenset({"round_announcement", "clearing_result"})
"""Kinds everyone may read; every other kind is sealed to its one recipient."""

SIGNATURE_SIZE: Final = 64
KEY_SIZE: Final = 32
NONCE_SIZE: Final = 24
MAC_SIZE: Final = 16
REF_SIZE: Final = 16
_FIXED_PUBLIC: Final = 2 + 8 + KEY_SIZE
_FIXED_SEALED: Final = _FIXED_PUBLIC + KEY_SIZE
_MAX_SEQ: Final = 2**64 - 1

_KIND_NAMES: Final = {kind.encode("ascii"): kind for kind in KINDS}
_TAGS: Final = {cls: kind for kind, cls in KINDS.items()}
_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(Message)
_MARKET_LENGTHS: Final = range(1, 65)
_KIND_LENGTHS: Final = range(1, 33)


class _Versioned(msgspec.Struct):
    """Only the body's schema version: decoding into it tells a missing `v` apart."""

    v: int


_VERSION_PROBE: Final = msgspec.msgpack.Decoder(_Versioned)


def decode_body(body: bytes) -> Message:
    """The typed message a body holds; only ProtocolError for any input whatever.

    Every body must carry `v` (the Struct default would silently fill it in), and the
    decoder's own limits (nesting deeper than the interpreter allows) are refusals like
    any other, never an exception that escapes to the caller's loop.
    """
    try:
        try:
            version = _VERSION_PROBE.decode(body).v
        except msgspec.ValidationError as exc:
            if "missing required field `v`" in str(exc):
                raise BadEncoding("body has no schema version `v`") from exc
            if str(exc).endswith("`$.v`"):
                raise UnknownVersion(f"body schema version not supported: {exc}") from exc
            raise BadEncoding(f"body does not fit its schema: {exc}") from exc
        if version != SCHEMA_VERSION:
            raise UnknownVersion(f"body schema version {version} is not supported")
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise BadEncoding(f"body does not fit its schema: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadEncoding(f"body is not valid MessagePack: {exc}") from exc
    except RecursionError as exc:
        raise BadEncoding("body nests deeper than any message does") from exc


@dataclass(frozen=True, slots=True)
class Opened:
    """An envelope that passed every check: who sent what, and how to refer to it."""

    sender: str  # hex Ed25519 public key
    message: Message
    ref: bytes  # blake2b-16 of the envelope bytes: its name in receipts and rejects
    kind: str
    seq: int
    market: str
    sealed: bool

    def received(self, now: int) -> MessageReceived:
        """The event a pure core is fed for this envelope, opened at `now` (ms)."""
        return MessageReceived(sender=self.sender, message=self.message, ref=self.ref, now=now)


def envelope_ref(data: bytes) -> bytes:
    """The 16-byte reference of an envelope (blake2b-128 of its exact bytes).

    Envelopes are not malleable (every byte is signed or authenticated), so a replayed
    envelope has the same reference as the original.
    """
    return hashlib.blake2b(data, digest_size=REF_SIZE).digest()


def bid_ref(envelope: bytes, index: int) -> bytes:
    """The reference of entry `index` of the `task_bids` envelope referenced `envelope`.

    Sender and coordinator both derive it, so each task of a bulk envelope is receipted
    or refused on its own without the envelope carrying a reference per entry.
    """
    return hashlib.blake2b(
        envelope + index.to_bytes(4, "big"), digest_size=REF_SIZE, person=b"task_bids"
    ).digest()


def kind_of(message: Message) -> str:
    """The wire kind (tag) of a message."""
    tag: str = type(message).__struct_config__.tag  # type: ignore[assignment]
    return tag


def rejection(error: ProtocolError, data: bytes, market: str, round: int | None = None) -> Reject:
    """The Reject to send back for an envelope that failed to open (or a rule it broke).

    Send it sealed to the party named by the topic the envelope came on: the broker ACL
    vouches for that name even when the envelope itself could not be authenticated.
    """
    return Reject(
        market=market,
        code=error.code,
        reason=error.reason[:512],
        ref=envelope_ref(data),
        round=round,
    )


def seal(
    identity: Identity,
    message: Message,
    market: str | None = None,
    to: PublicKey | str | None = None,
    *,
    seq: int | None = None,
    nonce: bytes | None = None,
    max_size: int = MAX_ENVELOPE_SIZE,
) -> bytes:
    """Sign `message` as `identity` and, when `to` names a recipient, encrypt it to them.

    Public kinds (PUBLIC_KINDS) take no recipient; every other kind needs one. `market`
    defaults to the message's own and must equal it. `seq` defaults to a random u64, which
    is unique per sender and round with overwhelming probability; `nonce` defaults to 24
    random bytes (pass both only for reproducible tests).
    """
    kind = kind_of(message)
    if market is None:
        market = message.market
    elif market != message.market:
        raise WrongMarket(f"message is for market {message.market!r}, not {market!r}")
    if (kind in PUBLIC_KINDS) != (to is None):
        need = "no recipient" if kind in PUBLIC_KINDS else "a recipient"
        raise WrongMode(f"a {kind} envelope takes {need}")
    if seq is None:
        seq = int.from_bytes(os.urandom(8), "big")
    elif not 0 <= seq <= _MAX_SEQ:
        raise BadEncoding("seq must fit in an unsigned 64-bit integer")
    market_bytes = market.encode("ascii")
    kind_bytes = kind.encode("ascii")
    recipient = b""
    if to is not None:
        recipient = to.raw if isinstance(to, PublicKey) else _raw_key(to)
    header = b"".join(
        (
            bytes((ENVELOPE_VERSION, PUBLIC if to is None else SEALED)),
            seq.to_bytes(8, "big"),
            identity.public_key.raw,
            recipient,
            bytes((len(market_bytes),)),
            market_bytes,
            bytes((len(kind_bytes),)),
            kind_bytes,
        )
    )
    body = _ENCODER.encode(message)
    try:
        # Structs are not validated when built; refuse here what no reader would accept.
        _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise BadEncoding(f"message does not fit its schema: {exc}") from exc
    signature = identity.sign(DOMAIN + header + body)
    if to is None:
        envelope = header + signature + body
    else:
        if nonce is None:
            nonce = os.urandom(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise BadEncoding("a Box nonce is 24 bytes")
        key = identity.box_key(recipient)
        envelope = header + nonce + sodium.crypto_box_easy_afternm(signature + body, nonce, key)
    if len(envelope) > max_size:
        raise TooLarge(f"envelope of {len(envelope)} bytes exceeds the limit of {max_size}")
    return envelope


@dataclass(frozen=True, slots=True)
class Unverified:
    """An envelope whose framing checked out and whose seal is off, its signature unchecked.

    The middle step of :func:`open_envelope`, split out so that a reader under load can
    check many signatures at once, elsewhere (a worker process), and then
    :meth:`accept` each. Nothing in it has been decoded.
    """

    data: bytes  # the envelope as received
    sender: bytes  # raw Ed25519 public key
    signed_message: bytes  # signature || DOMAIN || header || body, as crypto_sign_open wants
    body: bytes
    kind: str
    market: str
    sealed: bool

    def accept(self, signature_valid: bool) -> Opened:
        """The opened envelope, given whether its signature verified; ProtocolError if not."""
        if not signature_valid:
            raise BadSignature("signature does not verify")
        message = decode_body(self.body)
        if _TAGS[type(message)] != self.kind:
            raise WrongKind(f"body is a {_TAGS[type(message)]}, envelope says {self.kind}")
        if message.market != self.market or (
            type(message) is RoundAnnouncement and message.params.market != self.market
        ):
            raise WrongMarket(f"body is for market {message.market!r}, envelope {self.market!r}")
        data = self.data
        return Opened(
            sender=self.sender.hex(),
            message=message,
            ref=hashlib.blake2b(data, digest_size=REF_SIZE).digest(),
            kind=self.kind,
            seq=int.from_bytes(data[2:10], "big"),
            market=self.market,
            sealed=self.sealed,
        )


def signatures_valid(items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
    """Whether each ``(signed_message, sender key)`` verifies (``Unverified`` fields).

    Pure and picklable in and out: a worker process can run it for a whole batch.
    """
    valid = []
    for signed_message, sender in items:
        try:
            sodium.crypto_sign_open(signed_message, sender)
        except (nacl.exceptions.CryptoError, ValueError):
            valid.append(False)
        else:
            valid.append(True)
    return valid


def open_envelope(
    identity: Identity | None,
    data: bytes | bytearray | memoryview,
    *,
    market: str | None,
    max_size: int = MAX_ENVELOPE_SIZE,
) -> Opened:
    """Check and open an envelope; raise only ProtocolError subclasses.

    `identity` is the reader (None for a party that reads only public envelopes).
    `market` is the market the reader expects; None accepts any (then check
    `Opened.market` yourself). Checks run cheapest first and nothing is decoded before
    its bytes are authenticated.
    """
    unverified = unseal(identity, data, market=market, max_size=max_size)
    (valid,) = signatures_valid(((unverified.signed_message, unverified.sender),))
    return unverified.accept(valid)


def unseal(
    identity: Identity | None,
    data: bytes | bytearray | memoryview,
    *,
    market: str | None,
    max_size: int = MAX_ENVELOPE_SIZE,
) -> Unverified:
    """Every check of :func:`open_envelope` before the signature's, and the decryption.

    Raises only ProtocolError subclasses; the signature is left to
    :func:`signatures_valid` and the body to :meth:`Unverified.accept`.
    """
    size = len(data)
    if size > max_size:
        raise TooLarge(f"envelope of {size} bytes exceeds the limit of {max_size}")
    if type(data) is not bytes:
        data = bytes(data)
    if size < _FIXED_PUBLIC + 2:
        raise BadEncoding("envelope truncated")
    if data[0] != ENVELOPE_VERSION:
        raise UnknownVersion(f"envelope version {data[0]} is not supported")
    mode = data[1]
    if mode == PUBLIC:
        at = _FIXED_PUBLIC
    elif mode == SEALED:
        at = _FIXED_SEALED
    else:
        raise BadEncoding(f"unknown envelope mode {mode}")
    if size < at + 2:
        raise BadEncoding("envelope truncated")
    if data[at] not in _MARKET_LENGTHS:
        raise BadEncoding(f"market length {data[at]} is outside 1..64")
    market_end = at + 1 + data[at]
    if market_end >= size:
        raise BadEncoding("envelope truncated")
    market_bytes = data[at + 1 : market_end]
    if data[market_end] not in _KIND_LENGTHS:
        raise BadEncoding(f"kind length {data[market_end]} is outside 1..32")
    header_end = market_end + 1 + data[market_end]
    kind = _KIND_NAMES.get(data[market_end + 1 : header_end])
    if header_end > size:
        raise BadEncoding("envelope truncated")
    try:
        market_name = market_bytes.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadEncoding("market is not ASCII") from exc
    if market is not None and market_name != market:
        raise WrongMarket(f"envelope is for market {market_name!r}, not {market!r}")
    if kind is None:
        raise UnknownKind("envelope names an unknown message kind")
    if (kind in PUBLIC_KINDS) != (mode == PUBLIC):
        raise WrongMode(f"a {kind} envelope must be {'public' if mode else 'sealed'}")
    sender = data[10:42]

    if mode == PUBLIC:
        if size < header_end + SIGNATURE_SIZE:
            raise BadEncoding("envelope truncated")
        body = data[header_end + SIGNATURE_SIZE :]
        # crypto_sign_open wants signature || message; the message is DOMAIN || header ||
        # body, which is `data` with the signature cut out of the middle.
        signed = data[header_end : header_end + SIGNATURE_SIZE] + DOMAIN + data[:header_end] + body
    else:
        if identity is None or data[42:74] != identity.public_key.raw:
            raise WrongRecipient("sealed envelope is addressed to another party")
        if size < header_end + NONCE_SIZE + MAC_SIZE + SIGNATURE_SIZE:
            raise BadEncoding("envelope truncated")
        key = identity.box_key(sender)  # BadPublicKey if the sender is not a valid point
        nonce_end = header_end + NONCE_SIZE
        try:
            plain = sodium.crypto_box_open_easy_afternm(
                data[nonce_end:], data[header_end:nonce_end], key
            )
        except nacl.exceptions.CryptoError as exc:
            raise BadCiphertext("sealed envelope failed authentication") from exc
        body = plain[SIGNATURE_SIZE:]
        signed = plain[:SIGNATURE_SIZE] + DOMAIN + data[:header_end] + body
    return Unverified(data, sender, signed, body, kind, market_name, mode == SEALED)


def _raw_key(text: str) -> bytes:
    if len(text) != 64:
        raise BadPublicKey("a public key is 64 lowercase hex characters")
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise BadPublicKey("a public key is 64 lowercase hex characters") from exc
    if raw.hex() != text:
        raise BadPublicKey("a public key is 64 lowercase hex characters")
    return raw
