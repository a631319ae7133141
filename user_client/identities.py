"""The identities a load generator acts for, derived from one key file.

Identity 0 is the key itself; identity i > 0 is seeded by a hash of the key's Ed25519
signature over a fixed tag and i. Ed25519 signing is deterministic, so whoever holds the
key file (and only they) can recreate the same M users, and a testnet can fund them in
its genesis before the load generator starts.
"""

from __future__ import annotations

import hashlib
from typing import Final

from protocol.identity import Identity

_DERIVE_TAG: Final = b"proofmarket/user-fleet/v1/"


def fleet_identities(root: Identity, count: int) -> list[Identity]:
    """`count` distinct identities: `root` first, then its derived children."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"a fleet has at least one identity, got {count!r}")
    children = [
        Identity.from_seed(hashlib.sha256(root.sign(_DERIVE_TAG + str(i).encode())).digest())
        for i in range(1, count)
    ]
    return [root, *children]
