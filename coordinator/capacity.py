"""Capacity declarations, as a plan: the rule of epochs and the capacity lock.

A prover declares its capacity s for an epoch (E rounds) before the epoch's first round
clears, that is before any of the epoch's outcomes can be seen, and at most one epoch
ahead. The capacity is then fixed for the epoch, may differ from the previous epoch's by
at most the factor m, and needs P_max * s of the prover's deposit locked.
"""

from __future__ import annotations

from coordinator.state import ProverState, Refusal
from protocol.messages import CapacityDeclaration, MarketParams
from protocol.rejects import RejectCode


def previous_capacity(prover: ProverState | None, epoch: int) -> int | None:
    """The capacity `prover` declared for its latest epoch before `epoch`, if any."""
    if prover is None:
        return None
    earlier = [e for e in prover.capacities if e < epoch]
    return prover.capacities[max(earlier)] if earlier else None


def plan_declaration(
    msg: CapacityDeclaration,
    prover: ProverState | None,
    params: MarketParams,
    *,
    bidding: int,
    first_round_cleared: bool,
) -> int | None:
    """The deposit to lock for `msg`, None if it repeats the declaration in force.

    `bidding` is the round open for bids; `first_round_cleared` whether the epoch's first
    round has left its bid phase. Raises Refusal when the declaration breaks a rule.
    """
    epoch, capacity = msg.epoch, msg.capacity
    if epoch > bidding // params.epoch_rounds + 1:
        raise Refusal(RejectCode.WRONG_EPOCH, f"epoch {epoch} is too far ahead")
    declared = None if prover is None else prover.capacities.get(epoch)
    if declared is not None:
        if declared != capacity:
            raise Refusal(
                RejectCode.CAPACITY_LOCKED, f"capacity {declared} is locked for epoch {epoch}"
            )
        return None  # the same declaration again, re-signed: nothing to change
    if epoch * params.epoch_rounds < bidding or first_round_cleared:
        raise Refusal(RejectCode.CAPACITY_LOCKED, f"declarations for epoch {epoch} have closed")
    previous = previous_capacity(prover, epoch)
    m = params.capacity_factor
    if previous is not None and (capacity > previous * m or capacity * m < previous):
        raise Refusal(
            RejectCode.CAPACITY_CHANGE_TOO_LARGE,
            f"capacity {capacity} is more than a factor {m} from {previous}",
        )
    return params.p_max * capacity


def lock_top_up(need: int, locked: int, free: int) -> int:
    """Free deposit to move into the lock so that `need` is locked; Refusal if too little."""
    extra = need - locked
    if extra <= 0:
        return 0
    if free < extra:
        raise Refusal(
            RejectCode.INSUFFICIENT_DEPOSIT, f"needs {need} locked deposit; {free} free to add"
        )
    return extra


def lock_excess(prover: ProverState, locked: int, *, bidding: int, params: MarketParams) -> int:
    """Locked deposit backing no open batch and no current or future epoch: to unlock."""
    if prover.open_rounds:
        return 0
    current = bidding // params.epoch_rounds
    caps = [c for e, c in prover.capacities.items() if e >= current]
    return max(0, locked - params.p_max * max(caps, default=0))


def stale_capacities(prover: ProverState, kept: int) -> list[int]:
    """The epochs before `kept` whose declared capacity no rule reads any more.

    All but the latest: the factor-m rule compares a new declaration with that one.
    """
    return sorted(e for e in prover.capacities if e < kept)[:-1]
