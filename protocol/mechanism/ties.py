"""The tie rule: which of two equal bids goes first.

Equal fees (or equal costs) are ordered by `tie_key(seed, id)`, a keyed hash of the bid's
id under the round's seed, then by the id itself. Arrival order never enters, so the
outcome is a pure function of the bid set and the seed. A hash rather than the bare id
because users and provers choose their own ids: with a plain id order, "a..." would win
every tie; under a round seed nobody can aim for the front before the seed is drawn.
"""

from __future__ import annotations

import hashlib


def tie_key(seed: bytes, bid_id: str) -> tuple[bytes, str]:
    """Sort key among equal bids: lower goes first."""
    # Length-prefixed so that no two (seed, id) pairs hash the same bytes.
    h = hashlib.blake2b(len(seed).to_bytes(8, "big"), digest_size=16)
    h.update(seed)
    h.update(bid_id.encode("utf-8"))
    return h.digest(), bid_id
