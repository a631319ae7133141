"""The replay guard: once per (sender, seq) per round, closed rounds refused, memory bounded."""

from __future__ import annotations

import pytest

from protocol import messages as m
from protocol.envelope import open_envelope, seal
from protocol.errors import ClosedRound, FutureRound, OverCapacity, Replay
from protocol.identity import Identity
from protocol.replay import ReplayGuard, round_of

A = "a" * 64
B = "b" * 64


def test_duplicate_is_refused_and_changes_nothing() -> None:
    """The same (sender, seq, round) twice raises Replay; the guard's size stays."""
    guard = ReplayGuard()
    guard.admit(A, 1, 0)
    with pytest.raises(Replay):
        guard.admit(A, 1, 0)
    assert 1 == len(guard)


def test_same_seq_from_other_sender_or_round_is_fine() -> None:
    """seqs are per sender and per round."""
    guard = ReplayGuard()
    guard.admit(A, 1, 0)
    guard.admit(B, 1, 0)
    guard.admit(A, 1, 1)
    assert 3 == len(guard)


def test_closed_round_is_refused_and_forgotten() -> None:
    """After close_through(r), round r is refused and its entries are dropped."""
    guard = ReplayGuard()
    guard.admit(A, 1, 0)
    guard.admit(A, 2, 1)
    guard.close_through(0)
    assert 1 == guard.floor
    assert 1 == len(guard)
    with pytest.raises(ClosedRound):
        guard.admit(A, 3, 0)
    with pytest.raises(Replay):
        guard.admit(A, 2, 1)


def test_closing_is_monotone() -> None:
    """Closing an older round after a newer one does not reopen anything."""
    guard = ReplayGuard()
    guard.close_through(5)
    guard.close_through(2)
    assert 6 == guard.floor


def test_closed_round_is_a_replay() -> None:
    """ClosedRound is a kind of Replay with its own code."""
    assert issubclass(ClosedRound, Replay)
    assert "closed_round" == ClosedRound.code


def test_far_future_round_is_refused() -> None:
    """A round beyond the horizon is refused so it cannot pin memory."""
    guard = ReplayGuard(horizon=4)
    guard.admit(A, 1, 3)
    with pytest.raises(FutureRound):
        guard.admit(A, 1, 4)


def test_per_sender_bound() -> None:
    """One sender cannot have more than max_per_sender seqs in a round."""
    guard = ReplayGuard(max_per_sender=2)
    guard.admit(A, 1, 0)
    guard.admit(A, 2, 0)
    with pytest.raises(OverCapacity):
        guard.admit(A, 3, 0)
    guard.admit(B, 3, 0)
    assert 3 == len(guard)


def test_total_bound_until_round_closes() -> None:
    """The guard is full at max_entries and has room again once a round closes."""
    guard = ReplayGuard(max_entries=2)
    guard.admit(A, 1, 0)
    guard.admit(B, 1, 1)
    with pytest.raises(OverCapacity):
        guard.admit(A, 2, 1)
    guard.close_through(0)
    guard.admit(A, 2, 1)
    assert 2 == len(guard)


def test_check_does_not_remember() -> None:
    """check raises like admit but records nothing."""
    guard = ReplayGuard()
    guard.check(A, 1, 0)
    guard.admit(A, 1, 0)
    with pytest.raises(Replay):
        guard.check(A, 1, 0)
    assert 1 == len(guard)


def test_admit_opened_uses_message_round_or_current() -> None:
    """A replayed envelope is refused; a round-less kind counts in the current round."""
    coordinator = Identity.from_seed(b"c" * 32)
    prover = Identity.from_seed(b"p" * 32)
    guard = ReplayGuard()
    bid = seal(
        prover, m.ProverCostBid(market="x", round=2, cost=1), to=coordinator.public_key, seq=7
    )
    capacity = seal(
        prover, m.CapacityDeclaration(market="x", epoch=0, capacity=3), to=coordinator.public_key
    )
    guard.admit_opened(open_envelope(coordinator, bid, market="x"), current_round=1)
    guard.admit_opened(open_envelope(coordinator, capacity, market="x"), current_round=1)
    with pytest.raises(Replay):
        guard.admit_opened(open_envelope(coordinator, bid, market="x"), current_round=1)
    guard.close_through(1)
    with pytest.raises(Replay):
        guard.admit_opened(open_envelope(coordinator, bid, market="x"), current_round=2)
    assert 1 == len(guard)


def test_round_of() -> None:
    """round_of reads the body's round, None for capacity declarations."""
    assert 4 == round_of(m.ProverCostBid(market="x", round=4, cost=1))
    assert round_of(m.CapacityDeclaration(market="x", epoch=0, capacity=3)) is None


def test_guard_rebuilt_from_recorded_refs_refuses_replays() -> None:
    """A guard refilled from (sender, ref, round) after a restart refuses the old envelope."""
    coordinator = Identity.from_seed(b"c" * 32)
    user = Identity.from_seed(b"u" * 32)
    bid = m.TaskBidMessage(market="x", round=3, task_id="t", fee=1, task_input=b"")
    data = seal(user, bid, to=coordinator.public_key)
    first = open_envelope(coordinator, data, market="x")
    rebuilt = ReplayGuard()
    rebuilt.admit(first.sender, first.ref, 3)
    with pytest.raises(Replay):
        rebuilt.admit_opened(open_envelope(coordinator, data, market="x"), current_round=3)


def test_resealed_message_is_a_new_message() -> None:
    """The same bid sealed again (new seq and nonce) is not a replay."""
    coordinator = Identity.from_seed(b"c" * 32)
    user = Identity.from_seed(b"u" * 32)
    bid = m.TaskBidMessage(market="x", round=3, task_id="t", fee=1, task_input=b"")
    guard = ReplayGuard()
    for _ in range(2):
        data = seal(user, bid, to=coordinator.public_key)
        guard.admit_opened(open_envelope(coordinator, data, market="x"), current_round=3)
    assert 2 == len(guard)
