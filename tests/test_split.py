"""Messages cut to fit the envelope limit: every part seals within it and loses nothing."""

from __future__ import annotations

import pytest

from protocol.envelope import MAX_ENVELOPE_SIZE, open_envelope, seal
from protocol.errors import TooLarge
from protocol.identity import Identity
from protocol.messages import (
    AssignedTask,
    Assignment,
    BidReceipts,
    ProofSubmission,
    ReceiptEntry,
    TaskBidMessage,
    TaskProof,
)
from protocol.split import envelope_size, split_to_fit

MARKET = "split"
SENDER = Identity.from_seed(b"\x61" * 32)
RECIPIENT = Identity.from_seed(b"\x62" * 32)


def assignment(tasks: int, input_bytes: int = 4096) -> Assignment:
    return Assignment(
        market=MARKET,
        round=4,
        prove_deadline=9_000,
        difficulty=5,
        setup=20,
        payment=1_234,
        tasks=[AssignedTask(f"task-{i:05}", bytes([i % 251]) * input_bytes) for i in range(tasks)],
    )


def test_envelope_size_is_the_sealed_size() -> None:
    """envelope_size predicts to the byte what seal produces for one recipient."""
    message = assignment(3)
    assert len(seal(SENDER, message, MARKET, RECIPIENT.public_key)) == envelope_size(message)


def test_small_message_is_sent_whole() -> None:
    """A message within the limit is one message, unchanged."""
    message = assignment(10)
    assert [message] == split_to_fit(message)


def test_large_assignment_comes_in_numbered_parts_that_each_fit() -> None:
    """An assignment over 1 MiB becomes parts 0..n-1, each sealing within the limit."""
    message = assignment(700)
    parts = split_to_fit(message)
    assert isinstance(parts[0], Assignment)
    assert [(i, len(parts)) for i in range(len(parts))] == [
        (p.part, p.parts) for p in parts if isinstance(p, Assignment)
    ]
    sealed = [seal(SENDER, p, MARKET, RECIPIENT.public_key) for p in parts]
    assert all(len(e) <= MAX_ENVELOPE_SIZE for e in sealed)
    opened = [open_envelope(RECIPIENT, e, market=MARKET).message for e in sealed]
    tasks = [t for p in opened if isinstance(p, Assignment) for t in p.tasks]
    assert message.tasks == tasks
    assert {message.payment} == {p.payment for p in opened if isinstance(p, Assignment)}


def test_receipts_and_proofs_split_without_numbering() -> None:
    """Coalesced receipts and proof submissions split into plain messages of the same kind."""
    receipts = BidReceipts(
        market=MARKET,
        receipts=[ReceiptEntry(3, i.to_bytes(16, "big"), 7) for i in range(40_000)],
    )
    proofs = ProofSubmission(
        market=MARKET,
        round=3,
        proofs=[TaskProof(f"{i:0128}", bytes(64)) for i in range(6_000)],
    )
    for message, field in ((receipts, "receipts"), (proofs, "proofs")):
        parts = split_to_fit(message, max_size=256 * 1024)
        assert len(parts) > 1
        assert all(envelope_size(p) <= 256 * 1024 for p in parts)
        assert {type(message)} == {type(p) for p in parts}
        joined = [x for p in parts for x in getattr(p, field)]
        assert getattr(message, field) == joined


def test_a_message_that_cannot_be_split_is_a_bug() -> None:
    """A kind without a growing list, over the limit, raises TooLarge rather than send."""
    bid = TaskBidMessage(market=MARKET, round=1, task_id="t", fee=1, task_input=bytes(4096))
    with pytest.raises(TooLarge):
        split_to_fit(bid, max_size=1_000)


def test_assignment_part_must_be_below_parts() -> None:
    """An assignment whose part number is not below its part count does not exist."""
    with pytest.raises(ValueError, match="part 2 of an assignment in 2 parts"):
        Assignment(
            market=MARKET,
            round=1,
            prove_deadline=1,
            difficulty=1,
            setup=0,
            payment=0,
            tasks=[],
            part=2,
            parts=2,
        )
