"""A copy of an accepted envelope gets one answer, `replay`, in memory and on the network."""

from __future__ import annotations

from test_coordinator_helpers import START, USERS, Market, reject_codes

from protocol.errors import Replay
from protocol.rejects import RejectCode
from protocol.replay import ReplayGuard


def guard_answer(guard: ReplayGuard, sender: str, ref: bytes) -> str:
    """What the coordinator service's guard says of (sender, ref) in round 0."""
    try:
        guard.admit(sender, ref, 0)
    except Replay as exc:
        return exc.code
    return "admitted"


def test_core_and_guard_answer_a_copy_alike() -> None:
    """The core (all a simulation has) and the service's guard both call a copy `replay`."""
    market = Market()
    market.tick(START)
    market.task_bid(USERS[0], "t", 5)
    copy = market.recorded[-1]
    guard = ReplayGuard()
    first = guard_answer(guard, copy.sender, copy.ref)
    again = guard_answer(guard, copy.sender, copy.ref)
    assert ["admitted", RejectCode.REPLAY, RejectCode.REPLAY] == [
        first,
        again,
        *reject_codes(market.feed(copy)),
    ]
