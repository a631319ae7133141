"""Replay guard: each message is accepted once per round, and closed rounds not at all.

Pure state, no clock: the owner says which rounds are closed. A message is identified by
its sender and a token: the envelope's `ref` (what `admit_opened` uses) or its signed
`seq`. The ref works because envelopes are not malleable: every byte is signed or
authenticated, so a replay is byte-identical, while a sender's every new envelope differs
(fresh seq, fresh nonce). Keying on the ref lets a coordinator rebuild the guard from the
`MessageReceived` events in its log after a restart. Use one kind of token per guard.

A token remembers how its envelope fared: accepted (None) or refused with a code. A copy
of an accepted envelope is a `replay`; a copy of a refused one is answered with the first
refusal's code (see :meth:`ReplayGuard.refusal`), so a copy never gets a different
answer than the original, and never changes anything. Refusals are remembered only for
envelopes that reached the market rules (signed, on their sender's topic).

The guard remembers tokens for each open round and forgets a round's tokens when the
round closes, because from then on the round itself is refused. Memory is bounded: at
most `horizon` open rounds, `max_per_sender` tokens per sender and round, and
`max_entries` tokens in all.

Duplicates, once for the whole tree. MQTT at QoS 1 delivers at least once and a restarted
coordinator resends what it may not have sent, so copies are normal. The rule: a copy of
an envelope the coordinator accepted gets a signed `replay` reject quoting its ref, and
changes nothing; a copy of one it refused gets the first refusal's code again; a copy of
a coordinator's message changes nothing at the party. The layers, each with its horizon:

=====================  =====================================  ==============================
layer                  what it suppresses, and the answer     horizon
=====================  =====================================  ==============================
bus (runtime/bus.py)   nothing: at-least-once by design       -
ReplayGuard (here),    byte-equal copies at the coordinator:  rounds floor..floor+L-1 (the
coordinator service    `replay`, or the first refusal code    service's L); older: closed
coordinator core       copies that pass the guard (in the     SEEN_ROUNDS (64) rounds of
(`_seen` refs)         simulation, which has no guard, all):  accepted refs; older rounds
                       `replay`, the same answer              are refused as late
protocol.wire.Wire     copies of coordinator messages at a    SEEN_ROUNDS (64) rounds, by
                       prover or user: dropped, counted       the round a message is about
user / prover cores    resent receipts and settlements after  the open task or batch they
                       a coordinator restart: counted once    name; a closed one is gone
=====================  =====================================  ==============================
"""

from __future__ import annotations

from protocol.envelope import Opened
from protocol.errors import ClosedRound, FutureRound, OverCapacity, Replay
from protocol.messages import Message


def round_of(message: Message) -> int | None:
    """The round a message belongs to, or None for kinds without one (capacity)."""
    value: int | None = getattr(message, "round", None)
    return value


class ReplayGuard:
    """Accepts each (sender, token) at most once in rounds `floor` .. `floor + horizon - 1`."""

    def __init__(
        self,
        *,
        floor: int = 0,
        horizon: int = 16,
        max_per_sender: int = 65_536,
        max_entries: int = 1_000_000,
    ) -> None:
        if horizon < 1 or max_per_sender < 1 or max_entries < 1 or floor < 0:
            raise ValueError("floor must be >= 0 and every limit >= 1")
        self._floor = floor
        self._horizon = horizon
        self._max_per_sender = max_per_sender
        self._max_entries = max_entries
        self._entries = 0
        self._rounds: dict[int, dict[str, dict[int | bytes, str | None]]] = {}

    @property
    def floor(self) -> int:
        """The lowest round still open; every round below it is closed."""
        return self._floor

    def __len__(self) -> int:
        """How many (round, sender, token) entries are remembered."""
        return self._entries

    def check(self, sender: str, token: int | bytes, round: int) -> None:
        """Raise what `admit` would raise, without remembering anything."""
        self._check(sender, token, round)

    def admit(
        self, sender: str, token: int | bytes, round: int, refused: str | None = None
    ) -> None:
        """Remember (sender, token) in `round`, or raise and change nothing.

        `refused` is the code the envelope was refused with, None if it was accepted.
        Raises ClosedRound (round below the floor), FutureRound (beyond the horizon),
        Replay (seen before) or OverCapacity (a memory bound is reached).
        """
        seen = self._check(sender, token, round)
        if seen is None:
            senders = self._rounds.setdefault(round, {})
            seen = senders.setdefault(sender, {})
        seen[token] = refused
        self._entries += 1

    def refusal(self, sender: str, token: int | bytes, round: int) -> str | None:
        """The code a remembered envelope was refused with; None if accepted or unknown."""
        return self._rounds.get(round, {}).get(sender, {}).get(token)

    def admit_opened(self, opened: Opened, current_round: int) -> None:
        """`admit` keyed on the envelope ref; kinds without a round count in `current_round`."""
        message_round = round_of(opened.message)
        self.admit(
            opened.sender, opened.ref, current_round if message_round is None else message_round
        )

    def close_through(self, round: int) -> None:
        """Close every round up to and including `round`, forgetting their tokens."""
        if round < self._floor:
            return
        self._floor = round + 1
        for closed in [r for r in self._rounds if r <= round]:
            self._entries -= sum(len(seqs) for seqs in self._rounds.pop(closed).values())

    def _check(
        self, sender: str, token: int | bytes, round: int
    ) -> dict[int | bytes, str | None] | None:
        if round < self._floor:
            raise ClosedRound(f"round {round} is closed (open rounds start at {self._floor})")
        if round >= self._floor + self._horizon:
            raise FutureRound(f"round {round} is not open yet (floor {self._floor})")
        seen = self._rounds.get(round, {}).get(sender)
        if seen is not None:
            if token in seen:
                outcome = "refused" if seen[token] else "accepted"
                raise Replay(f"{sender} sent this message already in round {round} ({outcome})")
            if len(seen) >= self._max_per_sender:
                raise OverCapacity(f"{sender} sent {len(seen)} messages in round {round}")
        if self._entries >= self._max_entries:
            raise OverCapacity("the replay guard is full until a round closes")
        return seen
