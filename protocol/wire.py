"""A participant's side of the wire: its topics, and envelopes in and out.

Provers and users speak to one coordinator in one market. This module turns the core's
messages into (topic, sealed envelope) pairs and broker deliveries back into
`MessageReceived` events, refusing what is not for us: bad topics, envelopes that fail
any check, senders other than the coordinator, and exact redeliveries (QoS 1 is
at-least-once). A refused delivery is logged and dropped; a participant has no one to
send a reject to. One wire can speak for many identities (a user load generator).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import structlog

from protocol import topics
from protocol.envelope import open_envelope, seal
from protocol.errors import ProtocolError
from protocol.events import MessageReceived
from protocol.horizon import drop_below
from protocol.identity import Identity
from protocol.messages import Message, ProverOnline, ProverWill, RoundAnnouncement
from protocol.split import split_to_fit

SEEN_ROUNDS: Final = 64
"""How many rounds, up to the newest one heard, remember their envelope references to drop
redeliveries. Refs are kept by the round their message is about (a message without a
round counts in the newest), so what a wire holds follows the rounds still open, not
the length of the run; a copy of anything older reaches the core, which counts it once.
"""


class Wire:
    """Seals and opens envelopes for `identities` talking to `coordinator` in `market`."""

    def __init__(
        self,
        identities: Identity | Iterable[Identity],
        *,
        coordinator: str,
        market: str,
    ) -> None:
        if isinstance(identities, Identity):
            identities = [identities]
        self.identities: dict[str, Identity] = {i.public_hex: i for i in identities}
        if not self.identities:
            raise ValueError("a wire needs at least one identity")
        # Validate early: a typo in the coordinator key or market must fail at start-up.
        topics.inbox(market, coordinator)
        self.coordinator = coordinator
        self.market = market
        self.refused = 0
        self.duplicates = 0
        self._will_stamp = -1
        self._seen: dict[int, set[bytes]] = {}  # round -> refs of envelopes opened for it
        self._seen_floor = 0  # rounds below this are no longer remembered
        self._newest = -1  # the newest round a message was about
        self._log = structlog.get_logger("wire").bind(market=market)

    @property
    def first(self) -> Identity:
        return next(iter(self.identities.values()))

    def subscriptions(self) -> list[str]:
        """Each identity's outbox and the market's public channel, once."""
        subs: list[str] = []
        for key in self.identities:
            subs.extend(
                t for t in topics.participant_subscriptions(self.market, key) if t not in subs
            )
        return subs

    def will(self, now: int) -> tuple[str, bytes]:
        """A last will for a connection made at `now` (ms), for the broker to publish if
        that connection dies: sealed to the coordinator and signed, so nobody else can
        write one, and stamped later than every earlier will, so none can be replayed."""
        stamp = max(now, self._will_stamp + 1)
        self._will_stamp = stamp
        will = ProverWill(market=self.market, connected_at=stamp)
        envelope = seal(self.first, will, self.market, self.coordinator)
        return topics.will(self.market, self.first.public_hex), envelope

    def online(self, now: int) -> tuple[str, bytes]:
        """The `prover_online` of the current connection, to send once it is up.

        Stamped as that connection's will, so the coordinator can tell a will of an older
        connection from one of this; a bus that made no will yet gets a fresh stamp.
        """
        if self._will_stamp < 0:
            self._will_stamp = now
        online = ProverOnline(market=self.market, connected_at=self._will_stamp)
        envelope = seal(self.first, online, self.market, self.coordinator)
        return topics.inbox(self.market, self.first.public_hex), envelope

    def seal(
        self, message: Message, to: str | None, sender: str | None = None
    ) -> list[tuple[str, bytes]]:
        """Sign (and encrypt to `to`) `message` as `sender`: where and what to publish.

        A proof submission too large for one envelope becomes several (protocol.split).
        """
        return [(topic, payload) for _, topic, payload in self.seal_parts(message, to, sender)]

    def seal_parts(
        self, message: Message, to: str | None, sender: str | None = None
    ) -> list[tuple[Message, str, bytes]]:
        """As `seal`, with the message each envelope carries (a part, when it was split)."""
        identity = self.identities[sender] if sender is not None else self.first
        topic = topics.inbox(self.market, identity.public_hex)
        return [
            (part, topic, seal(identity, part, self.market, to)) for part in split_to_fit(message)
        ]

    def open(
        self, topic: str, payload: bytes, now: int, *, retained: bool = False
    ) -> tuple[str | None, MessageReceived] | None:
        """The recipient (None for a public message) and the event, or None if refused.

        A `retained` round announcement (the broker kept it for late subscribers) whose
        bid deadline has passed at `now` is dropped: it is an old round of this market
        (its last, if the market ended), perhaps of an earlier run under the same
        coordinator key; the round to bid in is announced next. An announcement heard
        live is passed on as ever.
        """
        try:
            parsed = topics.parse(topic)
            if parsed.market != self.market:
                raise ProtocolError(f"topic of market {parsed.market!r}")
            recipient: str | None = None
            if parsed.channel == "out" and parsed.party in self.identities:
                recipient = parsed.party
            elif parsed.channel != "public":
                raise ProtocolError(f"not a topic we read: {topic}")
            reader = self.identities[recipient] if recipient else None
            opened = open_envelope(reader, payload, market=self.market)
        except ProtocolError as exc:
            self.refused += 1
            self._log.warning("wire.refused", topic=topic, code=exc.code, reason=str(exc))
            return None
        except Exception as exc:  # the boundary: no input may stop the party's loop
            self.refused += 1
            self._log.warning("wire.refused", topic=topic, code="unforeseen", reason=repr(exc))
            return None
        if opened.sender != self.coordinator:
            self.refused += 1
            self._log.warning(
                "wire.refused", topic=topic, code="not_coordinator", sender=opened.sender
            )
            return None
        message = opened.message
        if retained and isinstance(message, RoundAnnouncement) and message.bid_deadline < now:
            # Before the refs: an old run's round must not move the window of this one's.
            self._log.info(
                "wire.stale_announcement", round=message.round, bid_deadline=message.bid_deadline
            )
            return None
        seen = self._seen_in(message)
        if seen is not None and opened.ref in seen:
            self.duplicates += 1
            return None
        if seen is not None:
            seen.add(opened.ref)
        return recipient, MessageReceived(opened.sender, opened.message, opened.ref, now)

    def _seen_in(self, message: Message) -> set[bytes] | None:
        """The refs remembered for `message`'s round; None if that round is forgotten."""
        round: int | None = getattr(message, "round", None)
        if round is None:
            round = max(self._newest, 0)
        if round < self._seen_floor:
            return None
        if round > self._newest:
            self._newest = round
            floor = round - SEEN_ROUNDS + 1
            if floor > self._seen_floor:
                drop_below(self._seen, self._seen_floor, floor)
                self._seen_floor = floor
        return self._seen.setdefault(round, set())

    def remembered(self) -> int:
        """How many envelope refs are remembered to drop redeliveries: what must stay bounded."""
        return sum(len(refs) for refs in self._seen.values())
