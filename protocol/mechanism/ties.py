"""The tie rule: which of two equal bids goes first.

Equal fees (or equal costs) are ordered by `tie_key(seed, id)`: a 128-bit blake2b hash of
the length-prefixed seed followed by the id, then the id itself (utf-8) to make the order
total. Arrival order never enters, so the outcome is a pure function of the bid set and the
seed. A hash rather than the bare id because users and provers choose their own ids: under
plain id order "0000" would win every tie; under a round seed nobody can aim for the front
before the seed is drawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def tie_keyer(seed: bytes) -> Callable[[str], bytes]:
    """The sort key among equal bids under `seed` (lower goes first), as a fast callable."""
    # Length-prefixed so that no two (seed, id) pairs hash the same bytes.
    base = hashlib.blake2b(len(seed).to_bytes(8, "big"), digest_size=16)
    base.update(seed)

    def key(bid_id: str) -> bytes:
        raw = bid_id.encode("utf-8")
        h = base.copy()
        h.update(raw)
        # Fixed-length digest first: bytes order is (digest, id), and utf-8 byte order is
        # code point order, the same as str order.
        return h.digest() + raw

    return key


def tie_key(seed: bytes, bid_id: str) -> bytes:
    """Sort key among equal bids: lower goes first."""
    return tie_keyer(seed)(bid_id)


def tie_prefix(key: bytes) -> int:
    """A tie key's first 8 bytes as an integer: ordering by it never contradicts the key."""
    return int.from_bytes(key[:8], "big")
