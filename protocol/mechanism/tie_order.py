"""Putting bids into tie-key order fast, from 64-bit prefixes of their tie keys.

A sort of Python bytes keys costs a microsecond a bid; a numpy sort of 64-bit integers
costs nanoseconds. Each bid's tie key prefix (`ties.tie_prefix`) is known once its id and
the round's seed are, so a caller that keeps the prefixes beside the bids (the coordinator
computes them as bids arrive) can order any subset of them by packing the prefix's high
bits with the bid's index into one uint64 and sorting those. Positions
whose high bits collide, rare at any size, are ordered by their full keys, so the order is
exactly the tie-key order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Int64Array = NDArray[np.int64]
UInt64Array = NDArray[np.uint64]


class TieOrder:
    """Sorts indices into a book of bids by the bids' tie keys.

    `prefixes[i]` is bid i's `tie_prefix`; `full_key(i)` its whole tie key, asked for only
    where prefixes collide.
    """

    def __init__(self, prefixes: UInt64Array, full_key: Callable[[int], bytes]) -> None:
        self.prefixes = prefixes
        self.full_key = full_key

    def sort(self, indices: Int64Array) -> Int64Array:
        """`indices` in tie-key order of the bids they point at."""
        if indices.size < 2:
            return indices.astype(np.int64, copy=True)
        # The low bits carry the index itself, so the sorted words are the answer.
        bits = max(1, (self.prefixes.size - 1).bit_length())
        low = np.uint64((1 << bits) - 1)
        packed = self.prefixes[indices]
        packed &= ~low
        packed |= indices.astype(np.uint64)
        packed.sort()
        # Neighbours whose prefixes agree above the index bits: order unsettled there.
        same = np.flatnonzero((packed[1:] ^ packed[:-1]) <= low)
        packed &= low
        order = packed.view(np.int64)  # indices < 2**63: the same bits
        if same.size:
            self._settle_collisions(order, same)
        return order

    def _settle_collisions(self, order: Int64Array, same: Int64Array) -> None:
        """Reorder, by full key, each run of positions whose packed high bits are equal."""
        starts = same[np.r_[True, same[1:] != same[:-1] + 1]]
        ends = same[np.r_[same[1:] != same[:-1] + 1, True]] + 2
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            run = sorted(order[start:end].tolist(), key=self.full_key)
            order[start:end] = run
