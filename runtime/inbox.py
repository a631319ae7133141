"""Who gets into a service's bounded inbox when it is full, and who is told they did not.

Below the bound every delivery is taken. At the bound, a sender the service marks as a
priority (a coordinator marks the provers: their declarations, cost bids and proofs must
never be lost to a flood of task bids) still gets in, up to a reserve above the bound;
anyone else's delivery is dropped unread, and its topic and reference are noted so the
service can answer it with an `overloaded` reject instead of leaving the sender to guess.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable
from typing import Final

OVERFLOW_NOTED: Final = 65_536
"""Dropped deliveries remembered for an answer; past this only the count grows."""


class InboxAdmission:
    """The admission rule of one bounded inbox (a bus holds one)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.reserve = max(1024, bound // 8)  # room above the bound for priority senders
        self.priority: Callable[[str], bool] | None = None
        self.noting = False  # remember what is dropped, for a service that answers it
        self._overflow: collections.deque[tuple[str, bytes]] = collections.deque(
            maxlen=OVERFLOW_NOTED
        )

    def admits(self, queued: int, topic: str) -> bool:
        """Whether a delivery on `topic` joins an inbox that holds `queued` already."""
        if queued < self.bound:
            return True
        priority = self.priority
        return priority is not None and queued < self.bound + self.reserve and priority(topic)

    def dropped(self, topic: str, payload: bytes) -> None:
        """Note a delivery left out, by its topic and envelope reference (when noting)."""
        if self.noting:
            self._overflow.append((topic, hashlib.blake2b(payload, digest_size=16).digest()))

    def take_overflow(self) -> list[tuple[str, bytes]]:
        """The deliveries left out since the last call, oldest first: (topic, reference)."""
        taken = list(self._overflow)
        self._overflow.clear()
        return taken
