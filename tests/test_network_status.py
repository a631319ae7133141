"""Status queries to a live coordinator over real brokers: answered, refused, never recorded."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import msgspec
import pytest
from conftest import RunningBroker, seal_body, with_bad_signature
from test_network_hostile import (
    ATTACKER,
    COORDINATOR,
    MARKET,
    PARAMS,
    VICTIM,
    WAIT,
    coordinator_config,
    listening,
)

from coordinator.records import decode_record
from coordinator.service import run_coordinator
from coordinator.status import QUERIES_PER_PARTY
from coordinator.store import SqliteStore
from protocol import topics
from protocol.envelope import envelope_ref, seal
from protocol.events import MessageReceived
from protocol.messages import AccountStatus, Reject, RoundAnnouncement, StatusQuery

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SLOW_ROUNDS = msgspec.structs.replace(PARAMS, bid_window_ms=4000)
"""One round long enough for every query to be sent and answered while it is open."""


async def test_status_queries_answered_refused_and_never_recorded(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """A query gets its sealed answer; a copy, a forgery, bad bytes, a flood: their rejects."""
    ledger = tmp_path / "ledger.sqlite"
    config = dataclasses.replace(
        coordinator_config(broker, rounds=1, start_delay_ms=0, params=SLOW_ROUNDS),
        ledger=str(ledger),
    )
    to = COORDINATOR.public_hex
    attacker_topics = (topics.outbox(MARKET, ATTACKER.public_hex), topics.public(MARKET))
    async with (
        listening(broker, ATTACKER, *attacker_topics) as (bus, attacker),
        listening(broker, VICTIM, topics.outbox(MARKET, VICTIM.public_hex)) as (_, victim),
    ):
        market = asyncio.create_task(run_coordinator(COORDINATOR, config))
        try:
            announced = await attacker.first(RoundAnnouncement)
            assert isinstance(announced, RoundAnnouncement)
            query = StatusQuery(market=MARKET, round=announced.round)
            inbox = topics.inbox(MARKET, ATTACKER.public_hex)
            asked = seal(ATTACKER, query, MARKET, to)
            forged = seal(ATTACKER, query, MARKET, to)
            bad_signature = with_bad_signature(seal(ATTACKER, query, MARKET, to), ATTACKER, to)
            flood = [seal(ATTACKER, query, MARKET, to) for _ in range(QUERIES_PER_PARTY)]
            # A round as a float: refused by the decoder, whole number or not.
            body = msgspec.msgpack.encode(
                {"kind": "status_query", "v": 1, "market": MARKET, "round": float(query.round)}
            )
            malformed = seal_body(ATTACKER, body, kind="status_query", market=MARKET, to=to)
            for payload in (asked, asked, bad_signature, malformed, *flood):
                await bus.publish(inbox, payload)
            await bus.publish(topics.inbox(MARKET, VICTIM.public_hex), forged)

            status = await attacker.first(AccountStatus, envelope_ref(asked))
            assert isinstance(status, AccountStatus)
            assert (announced.round, 10_000, 0) == (status.round, status.balance, status.escrow)
            for code, payload in [
                ("replay", asked),
                ("bad_signature", bad_signature),
                ("bad_encoding", malformed),
                ("too_many_queries", flood[-1]),
            ]:
                reject = await attacker.first(Reject, envelope_ref(payload))
                assert isinstance(reject, Reject)
                assert code == reject.code
            wrong_sender = await victim.first(Reject, envelope_ref(forged))
            assert "wrong_sender" == wrong_sender.code  # type: ignore[attr-defined]
            answered = [m for m in attacker.messages if isinstance(m, AccountStatus)]
            assert QUERIES_PER_PARTY == len(answered)
            async with asyncio.timeout(WAIT):
                await market
        finally:
            if not market.done():
                market.cancel()
            await asyncio.gather(market, return_exceptions=True)
    store = SqliteStore(ledger)
    try:
        recorded = [decode_record(r) for r in store.replay()]
    finally:
        store.close()
    messages = [e.message for e in recorded if isinstance(e, MessageReceived)]
    assert [] == [m for m in messages if isinstance(m, StatusQuery)]
