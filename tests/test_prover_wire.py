"""The participant wire: topics, sealing to the coordinator, opening and refusing."""

from __future__ import annotations

from protocol import topics
from protocol.envelope import open_envelope, seal
from protocol.identity import Identity
from protocol.messages import (
    BidReceipt,
    MarketParams,
    ProverCostBid,
    ProverOnline,
    ProverWill,
    RoundAnnouncement,
)
from protocol.wire import Wire

MARKET = "m1"
COORD = Identity.from_seed(b"\x10" * 32)
PROVER = Identity.from_seed(b"\x11" * 32)
USER2 = Identity.from_seed(b"\x12" * 32)
MALLORY = Identity.from_seed(b"\x13" * 32)
PARAMS = MarketParams(
    market=MARKET,
    p_max=100,
    epoch_rounds=4,
    capacity_factor=2,
    mechanism="prooph",
    difficulty=8,
    setup=2,
    bid_window_ms=1000,
    prove_window_ms=2000,
)
ANNOUNCE = RoundAnnouncement(
    market=MARKET, round=3, epoch=0, bid_deadline=1, prove_deadline=2, params=PARAMS
)
RECEIPT = BidReceipt(market=MARKET, round=3, ref=b"x" * 16)


def wire(*identities: Identity) -> Wire:
    return Wire(list(identities) or [PROVER], coordinator=COORD.public_hex, market=MARKET)


def test_subscriptions_are_each_outbox_and_public_once() -> None:
    """A wire for two identities reads both outboxes and the public channel once."""
    w = wire(PROVER, USER2)
    assert [
        topics.outbox(MARKET, PROVER.public_hex),
        topics.public(MARKET),
        topics.outbox(MARKET, USER2.public_hex),
    ] == w.subscriptions()


def test_seal_goes_to_own_inbox_and_only_coordinator_can_open() -> None:
    """A sealed bid is published on the sender's inbox and opens with the coordinator key."""
    w = wire(PROVER, USER2)
    bid = ProverCostBid(market=MARKET, round=3, cost=5)
    ((topic, payload),) = w.seal(bid, to=COORD.public_hex, sender=USER2.public_hex)
    assert topics.inbox(MARKET, USER2.public_hex) == topic
    opened = open_envelope(COORD, payload, market=MARKET)
    assert (USER2.public_hex, bid) == (opened.sender, opened.message)


def test_public_announcement_opens_as_broadcast() -> None:
    """A signed public announcement yields an event with no recipient."""
    w = wire()
    result = w.open(topics.public(MARKET), seal(COORD, ANNOUNCE), now=42)
    assert result is not None
    recipient, event = result
    assert (None, ANNOUNCE, COORD.public_hex, 42) == (
        recipient,
        event.message,
        event.sender,
        event.now,
    )


def test_directed_message_names_its_recipient() -> None:
    """A message on an identity's outbox is opened with that identity's key."""
    w = wire(PROVER, USER2)
    payload = seal(COORD, RECEIPT, MARKET, USER2.public_hex)
    result = w.open(topics.outbox(MARKET, USER2.public_hex), payload, now=1)
    assert result is not None
    assert (USER2.public_hex, RECEIPT) == (result[0], result[1].message)


def test_message_signed_by_someone_else_is_refused() -> None:
    """An envelope signed by a key other than the coordinator's is dropped and counted."""
    w = wire()
    assert None is w.open(topics.public(MARKET), seal(MALLORY, ANNOUNCE), now=1)
    assert 1 == w.refused


def test_redelivered_envelope_is_dropped() -> None:
    """The same envelope twice (QoS 1 redelivery) yields one event."""
    w = wire()
    payload = seal(COORD, ANNOUNCE)
    assert w.open(topics.public(MARKET), payload, now=1) is not None
    assert None is w.open(topics.public(MARKET), payload, now=2)
    assert 1 == w.duplicates


def test_garbage_wrong_topic_and_other_market_are_refused() -> None:
    """Random bytes, someone else's outbox and another market's topic are all refused."""
    w = wire()
    assert None is w.open(topics.public(MARKET), b"\x00garbage", now=1)
    other = seal(COORD, RECEIPT, MARKET, USER2.public_hex)
    assert None is w.open(topics.outbox(MARKET, USER2.public_hex), other, now=1)
    assert None is w.open(topics.public("m2"), seal(COORD, ANNOUNCE), now=1)
    assert None is w.open("not/a/topic", seal(COORD, ANNOUNCE), now=1)
    assert 4 == w.refused


def test_will_is_sealed_signed_and_stamped_later_each_time() -> None:
    """A will is on the prover's will topic, sealed to the coordinator, newer every time."""
    w = wire()
    first_topic, first = w.will(now=1_000)
    _, second = w.will(now=1_000)  # same millisecond: still a later stamp
    assert topics.will(MARKET, PROVER.public_hex) == first_topic
    opened = [open_envelope(COORD, e, market=MARKET) for e in (first, second)]
    assert [PROVER.public_hex] * 2 == [o.sender for o in opened]
    expected = [ProverWill(market=MARKET, connected_at=t) for t in (1_000, 1_001)]
    assert expected == [o.message for o in opened]


def test_online_carries_its_connection_s_will_stamp() -> None:
    """`prover_online` goes to the coordinator's inbox, stamped as the newest will."""
    w = wire()
    w.will(now=1_000)
    w.will(now=1_000)  # a reconnect: the connection now up has the stamp 1_001
    topic, envelope = w.online(now=5_000)
    opened = open_envelope(COORD, envelope, market=MARKET)
    assert (topics.inbox(MARKET, PROVER.public_hex), PROVER.public_hex) == (topic, opened.sender)
    assert ProverOnline(market=MARKET, connected_at=1_001) == opened.message


def test_online_without_a_will_takes_a_fresh_stamp_below_the_next_will() -> None:
    """A bus that made no will yet: the online's stamp is the time, the next will's later."""
    w = wire()
    _, online = w.online(now=2_000)
    _, will = w.will(now=2_000)
    stamps = [open_envelope(COORD, e, market=MARKET).message for e in (online, will)]
    assert [2_000, 2_001] == [m.connected_at for m in stamps]  # type: ignore[union-attr]


def announcement(round: int) -> RoundAnnouncement:
    return RoundAnnouncement(
        market=MARKET,
        round=round,
        epoch=round // 4,
        bid_deadline=10**9,
        prove_deadline=10**9,
        params=PARAMS,
    )


def test_refs_remembered_follow_the_open_rounds_not_the_run() -> None:
    """After 300 or 3,000 rounds a wire remembers the same number of refs: its last rounds'."""
    from protocol.wire import SEEN_ROUNDS

    w = wire()
    out = topics.outbox(MARKET, PROVER.public_hex)
    remembered = {}
    for r in range(3000):
        assert w.open(topics.public(MARKET), seal(COORD, announcement(r)), now=r) is not None
        receipt = BidReceipt(market=MARKET, round=r, ref=r.to_bytes(16, "big"))
        assert w.open(out, seal(COORD, receipt, MARKET, PROVER.public_hex), now=r) is not None
        remembered[r] = w.remembered()
    assert 2 * SEEN_ROUNDS == remembered[299] == remembered[2999]


def test_a_copy_within_the_window_is_dropped_and_an_old_round_is_not_remembered() -> None:
    """A redelivery of a recent round is dropped; one of a round past the window passes on."""
    from protocol.wire import SEEN_ROUNDS

    w = wire()
    first = seal(COORD, announcement(0))
    assert w.open(topics.public(MARKET), first, now=0) is not None
    latest = seal(COORD, announcement(SEEN_ROUNDS - 1))
    assert w.open(topics.public(MARKET), latest, now=0) is not None
    assert None is w.open(topics.public(MARKET), first, now=1)
    assert w.open(topics.public(MARKET), seal(COORD, announcement(SEEN_ROUNDS)), now=1)
    assert w.open(topics.public(MARKET), first, now=2) is not None
    assert (1, 2) == (w.duplicates, w.remembered())  # rounds SEEN_ROUNDS - 1 and SEEN_ROUNDS


def test_a_stale_retained_announcement_does_not_move_the_window() -> None:
    """An old run's retained last round (far ahead) leaves this run's rounds remembered."""
    w = wire()
    first = seal(COORD, announcement(0))
    assert w.open(topics.public(MARKET), first, now=0) is not None
    stale = RoundAnnouncement(
        market=MARKET, round=10**6, epoch=0, bid_deadline=1, prove_deadline=2, params=PARAMS
    )
    assert None is w.open(topics.public(MARKET), seal(COORD, stale), now=5, retained=True)
    assert None is w.open(topics.public(MARKET), first, now=6)
    assert 1 == w.duplicates
