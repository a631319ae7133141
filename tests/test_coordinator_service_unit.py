"""The coordinator service's pure helpers: receipt coalescing and the round tally."""

from __future__ import annotations

from coordinator.service import coalesce_receipts
from protocol.events import Publish
from protocol.messages import BidReceipt, BidReceipts, ReceiptEntry, Reject

A, B = "a" * 64, "b" * 64


def _receipt(n: int) -> BidReceipt:
    return BidReceipt(market="m", round=1, ref=bytes([n]) * 16, escrowed=n)


def test_receipts_to_one_bidder_travel_in_one_envelope() -> None:
    """Several receipts for one bidder become one bid_receipts; a lone one stays as it is."""
    reject = Reject(market="m", code="late_bid", reason="late", ref=b"\x09" * 16)
    sends = [
        Publish(_receipt(1), A),
        Publish(_receipt(2), B),
        Publish(reject, A),
        Publish(_receipt(3), A),
    ]
    expected = [
        Publish(
            BidReceipts(
                market="m",
                receipts=[ReceiptEntry(1, b"\x01" * 16, 1), ReceiptEntry(1, b"\x03" * 16, 3)],
            ),
            A,
        ),
        Publish(_receipt(2), B),
        Publish(reject, A),
    ]
    assert expected == coalesce_receipts(sends)


def test_coalescing_keeps_every_receipt() -> None:
    """The entries sent add up to exactly the receipts the core produced, none lost or doubled."""
    sends = [Publish(_receipt(n), A if n % 3 else B) for n in range(1, 40)]
    out = coalesce_receipts(sends)
    refs = sorted(
        entry.ref
        for p in out
        for entry in (
            p.message.receipts if isinstance(p.message, BidReceipts) else [p.message]  # type: ignore[attr-defined]
        )
    )
    assert sorted(r.message.ref for r in sends) == refs  # type: ignore[union-attr]
    assert 2 == len(out)


def test_fold_resends_only_what_follows_the_published_watermark() -> None:
    """Records past the watermark give back their messages; earlier ones replay silently."""
    from coordinator.core import Coordinator
    from coordinator.record_log import RecordLog, RunMeta, fold
    from coordinator.records import encode_record
    from coordinator.state import OpeningBalances
    from coordinator.store import MemoryStore
    from deploy.market import DEFAULT_MARKET
    from protocol.events import Record, Tick
    from protocol.messages import RoundAnnouncement

    genesis = OpeningBalances()
    live = Coordinator(DEFAULT_MARKET, genesis, A, 1000)
    log = RecordLog(MemoryStore(), RunMeta(A, 1000, DEFAULT_MARKET, genesis))
    for tick in (Tick(1000), Tick(1000 + DEFAULT_MARKET.bid_window_ms)):
        log.append_many(
            [encode_record(e.event) for e in live.handle(tick) if isinstance(e, Record)]
        )

    log.mark_published(0)
    resend = fold(log, use_snapshot=False).resend
    assert [1] == [p.message.round for p in resend if isinstance(p.message, RoundAnnouncement)]

    log.mark_published(1)
    assert [] == fold(log, use_snapshot=False).resend
