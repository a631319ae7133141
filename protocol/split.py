"""Messages cut to fit the envelope size limit, so no party decides what it cannot send.

Six kinds carry a list that grows with the market: an assignment's tasks (capacity
times task input), a bidder's coalesced receipts, rejects and notices, a user's bulk task
bids and a prover's proofs. When one of them
would seal to more than the limit, it is sent as several messages of the same kind, each
with a share of the list; every other field is repeated. An assignment's parts are
numbered (`part` of `parts`) so the prover knows when its batch is whole; receipts and
proofs (and bids, rejects) mean the same in any number of messages, so they need no
numbering.

Sizes are computed from the encoded body and the envelope's fixed overhead (header,
nonce, MAC, signature): pure arithmetic, no sealing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeVar

import msgspec

from protocol.envelope import (
    KEY_SIZE,
    MAC_SIZE,
    MAX_ENVELOPE_SIZE,
    NONCE_SIZE,
    SIGNATURE_SIZE,
    kind_of,
)
from protocol.errors import TooLarge
from protocol.messages import (
    Assignment,
    BidReceipts,
    Message,
    Notices,
    ProofSubmission,
    Rejects,
    TaskBids,
)

_ENCODER: Final = msgspec.msgpack.Encoder()
_LIST_HEADER: Final = 5  # the largest MessagePack array header (array 32)
_PART_FIELDS: Final = 16  # room for "part" and "parts" with their largest values

T = TypeVar("T")

_LISTS: Final[dict[type[Message], str]] = {
    BidReceipts: "receipts",
    ProofSubmission: "proofs",
    TaskBids: "bids",
    Rejects: "rejects",
    Notices: "notices",
}
"""The kinds whose list may be cut into plain messages of the same kind, and the list."""


def envelope_size(message: Message) -> int:
    """The exact size of `message` sealed to one recipient (the larger mode)."""
    market = len(message.market.encode("ascii"))
    kind = len(kind_of(message))
    header = 2 + 8 + 2 * KEY_SIZE + 1 + market + 1 + kind
    return header + NONCE_SIZE + MAC_SIZE + SIGNATURE_SIZE + len(_ENCODER.encode(message))


def split_to_fit(message: Message, max_size: int = MAX_ENVELOPE_SIZE) -> list[Message]:
    """`message` as one or more messages that each seal to at most `max_size` bytes.

    Raises TooLarge when the message cannot be split (a kind without a growing list, or
    one list item alone over the limit): that is a bug in the sender, not input.
    """
    if envelope_size(message) <= max_size:
        return [message]
    if isinstance(message, Assignment):
        chunks = _chunks(message, message.tasks, max_size - _PART_FIELDS)
        return [
            msgspec.structs.replace(message, tasks=chunk, part=i, parts=len(chunks))
            for i, chunk in enumerate(chunks)
        ]
    field = _LISTS.get(type(message))
    if field is not None:
        chunks = _chunks(message, getattr(message, field), max_size)
        return [msgspec.structs.replace(message, **{field: chunk}) for chunk in chunks]
    raise TooLarge(f"a {kind_of(message)} of {envelope_size(message)} bytes cannot be split")


def _chunks(message: Message, items: Sequence[T], max_size: int) -> list[list[T]]:
    """`items` cut greedily, in order, so that each chunk fits beside the other fields."""
    empty = _empty(message)
    room = max_size - envelope_size(empty) - _LIST_HEADER
    chunks: list[list[T]] = []
    current: list[T] = []
    used = 0
    for item in items:
        size = len(_ENCODER.encode(item))
        if size > room:
            raise TooLarge(f"one {type(item).__name__} of {size} bytes exceeds {room}")
        if used + size > room:
            chunks.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    chunks.append(current)
    return chunks


def _empty(message: Message) -> Message:
    field = "tasks" if isinstance(message, Assignment) else _LISTS[type(message)]
    return msgspec.structs.replace(message, **{field: []})
