"""The protocol's own errors: one hierarchy, one stable code per kind of failure.

Opening an envelope, parsing a topic or a public key, loading a key file and the replay
guard raise only these. The `code` string is part of the wire contract: it goes into
`Reject.code` and structured logs, and clients match on it, so codes never change.
"""

from __future__ import annotations

from typing import ClassVar


class ProtocolError(Exception):
    """Base of every protocol error; `code` is stable, the message is for humans."""

    code: ClassVar[str] = "protocol_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLarge(ProtocolError):
    """The envelope exceeds the size limit; refused before any parsing."""

    code = "too_large"


class BadEncoding(ProtocolError):
    """The bytes are not a well-formed envelope, or the body does not fit its schema."""

    code = "bad_encoding"


class UnknownVersion(ProtocolError):
    """The envelope's protocol version or the body's schema version is not supported."""

    code = "unknown_version"


class UnknownKind(ProtocolError):
    """The envelope names a message kind this protocol does not define."""

    code = "unknown_kind"


class WrongKind(ProtocolError):
    """The body's kind differs from the kind named (and signed) in the envelope."""

    code = "wrong_kind"


class WrongMode(ProtocolError):
    """A private kind arrived unsealed, or a public kind arrived sealed."""

    code = "wrong_mode"


class WrongMarket(ProtocolError):
    """The envelope or its body belongs to another market."""

    code = "wrong_market"


class WrongRecipient(ProtocolError):
    """A sealed envelope addressed to another party (or opened without an identity)."""

    code = "wrong_recipient"


class WrongSender(ProtocolError):
    """The envelope's signer is not the party named by the topic it arrived on."""

    code = "wrong_sender"


class BadPublicKey(ProtocolError):
    """A public key is malformed or not a valid Ed25519 point."""

    code = "bad_public_key"


class BadCiphertext(ProtocolError):
    """A sealed envelope failed authenticated decryption: it was altered in transit."""

    code = "bad_ciphertext"


class BadSignature(ProtocolError):
    """The sender's signature does not verify over the signed header and body."""

    code = "bad_signature"


class Replay(ProtocolError):
    """The same message (sender and sequence number) was already accepted."""

    code = "replay"


class ClosedRound(Replay):
    """The message is for a round that is already closed to this kind of input."""

    code = "closed_round"


class FutureRound(ProtocolError):
    """The message is for a round too far ahead to be open yet."""

    code = "future_round"


class OverCapacity(ProtocolError):
    """The replay guard tracks as many senders or rounds as it may; try again later."""

    code = "over_capacity"


class BadTopic(ProtocolError):
    """A topic string is not one of the protocol's topics."""

    code = "bad_topic"


class BadKeyFile(ProtocolError):
    """A key file is missing, readable by others, the wrong size, or garbage."""

    code = "bad_key_file"


ERRORS: tuple[type[ProtocolError], ...] = (
    TooLarge,
    BadEncoding,
    UnknownVersion,
    UnknownKind,
    WrongKind,
    WrongMode,
    WrongMarket,
    WrongRecipient,
    WrongSender,
    BadPublicKey,
    BadCiphertext,
    BadSignature,
    Replay,
    ClosedRound,
    FutureRound,
    OverCapacity,
    BadTopic,
    BadKeyFile,
)
"""Every concrete error, for documentation and tests; codes are unique."""

CODES: dict[str, type[ProtocolError]] = {cls.code: cls for cls in ERRORS}
