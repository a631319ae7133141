"""Forgetting by round: state kept in buckets keyed by round number, pruned from below.

A party that remembers things per round (bids sent, batches held, envelope refs) forgets
everything below a moving floor. Pruning walks the rounds it passes, not the rounds it
keeps, so a long-running party pays per round what it forgets that round and no more;
a floor that jumps far ahead (a party joining a market late) walks the buckets instead.
"""

from __future__ import annotations

from typing import TypeVar

V = TypeVar("V")


def drop_below(buckets: dict[int, V], old_floor: int, new_floor: int) -> list[tuple[int, V]]:
    """Remove and return (round, bucket) for rounds in [old_floor, new_floor), oldest first.

    Buckets below `old_floor` are assumed gone already. Costs min(rounds passed, buckets
    held) dictionary operations.
    """
    if new_floor <= old_floor:
        return []
    if new_floor - old_floor > len(buckets):
        passed = sorted(r for r in buckets if r < new_floor)
    else:
        passed = [r for r in range(old_floor, new_floor) if r in buckets]
    return [(r, buckets.pop(r)) for r in passed]


def discard_below(rounds: set[int], old_floor: int, new_floor: int) -> None:
    """Remove round numbers in [old_floor, new_floor) from `rounds`, as `drop_below` does."""
    if new_floor <= old_floor:
        return
    if new_floor - old_floor > len(rounds):
        rounds.difference_update([r for r in rounds if r < new_floor])
    else:
        rounds.difference_update(range(old_floor, new_floor))
