"""Bids, as rules: the round a bid stands in, and what an accepted bid asks of the core.

Pure: each function reads the core's state and returns a value, or raises Refusal with
the specific reason; the core escrows, locks, remembers and records.

A task bid needs its fee at most P_max, its task id new for its user, and the fee free in
the user's balance. One that comes after its round's bid deadline with `late_to_next`
stands in the round open then. A cost bid needs its cost at most P_max, a capacity declared
for the round's epoch, no earlier cost bid in the round, and its prover not suspended.
"""

from __future__ import annotations

from collections.abc import Mapping

from coordinator.state import Phase, ProverState, Refusal, Round, TaskKey, TaskState, wire_task_id
from coordinator.track_record import suspended
from protocol.messages import MarketParams, ProverCostBid, TaskBidEntry, TaskBidMessage
from protocol.rejects import RejectCode


def round_open_for_bid(rounds: Mapping[int, Round], bidding: int, number: int, now: int) -> Round:
    """The round a bid names, if it is open for bids at `now`; else a specific refusal."""
    r = rounds.get(number)
    if r is None:
        if number < bidding:
            raise Refusal(
                RejectCode.LATE_BID, f"round {number} has closed{_open_now(rounds, bidding)}"
            )
        raise Refusal(RejectCode.WRONG_ROUND, f"round {number} is not open for bids")
    if r.phase is not Phase.BID or now > r.bid_deadline:
        raise Refusal(
            RejectCode.LATE_BID,
            f"round {number} closed for bids at {r.bid_deadline}{_open_now(rounds, bidding)}",
        )
    return r


def _open_now(rounds: Mapping[int, Round], bidding: int) -> str:
    """For a late bid's reason: the round a bid could still stand in."""
    r = rounds.get(bidding)
    if r is None or r.phase is not Phase.BID:
        return ""
    return f"; round {r.number} is open until {r.bid_deadline}"


def round_for_task_bid(
    rounds: Mapping[int, Round], bidding: int, msg: TaskBidMessage, now: int
) -> Round:
    """The round a task bid stands in: the one it names, or, late, the one open now."""
    try:
        return round_open_for_bid(rounds, bidding, msg.round, now)
    except Refusal as refusal:
        open_now = rounds.get(bidding)
        if (
            refusal.code is not RejectCode.LATE_BID
            or not msg.late_to_next
            or open_now is None
            or open_now.phase is not Phase.BID
            or now > open_now.bid_deadline
        ):
            raise
        return open_now


def plan_task_bid(
    msg: TaskBidMessage | TaskBidEntry,
    sender: str,
    r: Round,
    tasks: Mapping[TaskKey, TaskState],
    wire: Mapping[str, TaskKey],
    available: int,
    p_max: int,
) -> TaskState:
    """The task `sender`'s bid (alone, or an entry of a bulk) adds to round `r`;
    `available` is what the sender's balance still holds for it."""
    if msg.fee > p_max:
        raise Refusal(RejectCode.FEE_ABOVE_P_MAX, f"fee {msg.fee} exceeds P_max {p_max}")
    wire_id = wire_task_id(sender, msg.task_id)
    if (sender, msg.task_id) in tasks or wire_id in wire:
        raise Refusal(RejectCode.DUPLICATE_TASK, f"you already bid task {msg.task_id!r}")
    if available < msg.fee:
        raise Refusal(RejectCode.INSUFFICIENT_BALANCE, f"fee {msg.fee} exceeds balance {available}")
    return TaskState(
        task_id=msg.task_id,
        user=sender,
        wire_id=wire_id,
        fee=msg.fee,
        task_input=msg.task_input,
        carry_over=msg.carry_over,
        round=r.number,
    )


def plan_cost_bid(
    msg: ProverCostBid, sender: str, r: Round, prover: ProverState | None, params: MarketParams
) -> int:
    """The deposit `sender` must have locked to bid `msg` in round `r`."""
    if msg.cost > params.p_max:
        raise Refusal(RejectCode.COST_ABOVE_P_MAX, f"cost {msg.cost} exceeds P_max {params.p_max}")
    capacity = None if prover is None else prover.capacities.get(r.epoch)
    if prover is None or capacity is None:
        raise Refusal(RejectCode.CAPACITY_NOT_DECLARED, f"no capacity declared for epoch {r.epoch}")
    if sender in r.cost_bids:
        raise Refusal(RejectCode.DUPLICATE_BID, f"already bid in round {r.number}")
    if suspended(prover.record, r.number, params):
        raise Refusal(RejectCode.PROVER_SUSPENDED, "suspended for failed batches")
    return params.p_max * capacity
