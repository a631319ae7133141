"""The protocol's own errors: one hierarchy, one stable code per kind of failure.

Opening an envelope, parsing a topic or a public key, loading a key file and the replay
guard raise only these. Each wire code is a `protocol.rejects.RejectCode`, the one
registry of codes; a key file's error never reaches the wire and keeps a local code.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.rejects import RejectCode


class ProtocolError(Exception):
    """Base of every protocol error; `code` is stable, the message is for humans."""

    code: ClassVar[str] = "protocol_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLarge(ProtocolError):
    """The envelope exceeds the size limit; refused before any parsing."""

    code = RejectCode.TOO_LARGE


class BadEncoding(ProtocolError):
    """The bytes are not a well-formed envelope, or the body does not fit its schema."""

    code = RejectCode.BAD_ENCODING


class UnknownVersion(ProtocolError):
    """The envelope's protocol version or the body's schema version is not supported."""

    code = RejectCode.UNKNOWN_VERSION


class UnknownKind(ProtocolError):
    """The envelope names a message kind this protocol does not define."""

    code = RejectCode.UNKNOWN_KIND


class WrongKind(ProtocolError):
    """The body's kind differs from the kind named (and signed) in the envelope."""

    code = RejectCode.WRONG_KIND


class WrongMode(ProtocolError):
    """A private kind arrived unsealed, or a public kind arrived sealed."""

    code = RejectCode.WRONG_MODE


class WrongMarket(ProtocolError):
    """The envelope or its body belongs to another market."""

    code = RejectCode.WRONG_MARKET


class WrongRecipient(ProtocolError):
    """A sealed envelope addressed to another party (or opened without an identity)."""

    code = RejectCode.WRONG_RECIPIENT


class WrongSender(ProtocolError):
    """The envelope's signer is not the party named by the topic it arrived on."""

    code = RejectCode.WRONG_SENDER


class BadPublicKey(ProtocolError):
    """A public key is malformed or not a valid Ed25519 point."""

    code = RejectCode.BAD_PUBLIC_KEY


class BadCiphertext(ProtocolError):
    """A sealed envelope failed authenticated decryption: it was altered in transit."""

    code = RejectCode.BAD_CIPHERTEXT


class BadSignature(ProtocolError):
    """The sender's signature does not verify over the signed header and body."""

    code = RejectCode.BAD_SIGNATURE


class Replay(ProtocolError):
    """The same message (sender and sequence number) was already accepted."""

    code = RejectCode.REPLAY


class ClosedRound(Replay):
    """The message is for a round that is already closed to this kind of input."""

    code = RejectCode.CLOSED_ROUND


class FutureRound(ProtocolError):
    """The message is for a round too far ahead to be open yet."""

    code = RejectCode.FUTURE_ROUND


class OverCapacity(ProtocolError):
    """The replay guard tracks as many senders or rounds as it may; try again later."""

    code = RejectCode.OVER_CAPACITY


class BadTopic(ProtocolError):
    """A topic string is not one of the protocol's topics."""

    code = RejectCode.BAD_TOPIC


class BadKeyFile(ProtocolError):
    """A key file is missing, readable by others, the wrong size, or garbage."""

    code = "bad_key_file"  # local only: a key file never comes off the wire


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
