"""Keeping Python's cyclic garbage collector off a large, long-lived state.

A coordinator holding 100,000 task bids holds millions of objects. CPython's collector
scans every tracked object in a full collection, and it runs one whenever the objects
surviving collections have grown by a quarter, which a round of new bids does several
times: a clearing that took 0.9 s with the collector off took 1.7 s with it on. After a
clearing, `Heap.settle` collects what the round left (only objects made since the last
settle are scanned) and moves every object still alive out of the collector's reach
(gc.freeze), so later collections scan only what is new.

A frozen object is still freed when its last reference goes, and the market's state has
no reference cycles; but a cycle frozen while alive (an asyncio task in flight, say)
would never be collected once it is garbage, so every `full_every` settles the heap is
thawed and collected whole: such garbage lives at most that many rounds, and the one
full pass costs what it costs once, not several times a round.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

FULL_EVERY = 256


class Heap:
    """The collector's treatment of one service's heap (one per process)."""

    def __init__(self, full_every: int = FULL_EVERY) -> None:
        self.full_every = full_every
        self.settles = 0

    def settle(self) -> None:
        """Collect the garbage made since the last settle, then freeze what is alive."""
        self.settles += 1
        if self.settles % self.full_every == 0:
            gc.unfreeze()
        gc.collect()
        gc.freeze()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off for a burst that makes many objects and little garbage (a
    clearing makes one notice per task): young collections in the burst would scan the
    round's bids again and again. The next settle collects whatever the burst left."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze() -> None:
    """Freeze what is alive without a collection first: for a state just built with the
    collector paused (a fold), which made little garbage; what it made waits for the next
    full settle."""
    gc.freeze()
