"""The market's clock, as rules: round deadlines, what falls due, what an outage moves.

Round r of a market started at `start_ms`, with bid window B and prove window P, and
moved by outages of `shift` ms in all:

    opens at          start + shift + r*B               (announced to everyone)
    bid deadline      start + shift + (r+1)*B  -> CLEAR r, and round r+1 opens (pipelining)
    prove deadline    bid deadline + P         -> SETTLE whatever of r is still open
                                                  (after the grace, `late_grace_ms`, if any)

A batch settles as soon as every task in it has a proof, or at the prove deadline; the
open batches of a prover whose will came while it held them settle earlier, failed, at
the end of its reconnect grace (`will_grace_ms`) unless it is back by then. Pure:
the time is always an argument, and these functions only read the rounds they are given.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Literal

from coordinator.state import Phase, Round
from protocol.messages import MarketParams

Due = tuple[Literal["settle", "clear"], int] | tuple[Literal["rescue"], str]
"""A deadline that has passed: the round to settle, the round to clear, or the prover
whose reconnect grace ran out (its open batches fail now)."""


def round_deadlines(
    params: MarketParams, start_ms: int, shift: int, number: int
) -> tuple[int, int]:
    """(bid deadline, prove deadline) of round `number`."""
    bid = start_ms + shift + (number + 1) * params.bid_window_ms
    return bid, bid + params.prove_window_ms


def new_round(params: MarketParams, start_ms: int, shift: int, number: int) -> Round:
    """Round `number` as it opens for bids."""
    bid_deadline, prove_deadline = round_deadlines(params, start_ms, shift, number)
    return Round(number, number // params.epoch_rounds, bid_deadline, prove_deadline)


def settle_at(r: Round, grace_ms: int) -> int:
    """When round `r`'s open batches settle: its prove deadline, plus the grace."""
    return r.prove_deadline + grace_ms


def next_due(
    rounds: Mapping[int, Round],
    proving: Collection[int],
    bidding: int,
    now: int,
    grace_ms: int,
    rescues: Mapping[str, int] | None = None,
) -> Due | None:
    """The earliest deadline passed by `now`, if any.

    Settling before clearing at the same instant frees provers for the next batch; a
    rescue (`rescues`: prover -> when its reconnect grace ends) comes between, so the
    tasks it hands on stand in the round that clears then.
    """
    due: list[tuple[int, int, Due]] = [
        (settle_at(rounds[n], grace_ms), 0, ("settle", n))
        for n in proving
        if settle_at(rounds[n], grace_ms) <= now
    ]
    if rescues:
        due += [(at, 1, ("rescue", key)) for key, at in rescues.items() if at <= now]
    r = rounds.get(bidding)
    if r is not None and r.phase is Phase.BID and r.bid_deadline <= now:
        due.append((r.bid_deadline, 2, ("clear", r.number)))
    if not due:
        return None
    # A tie of time and kind falls to the lower round or prover key: kinds never compare.
    return min(due)[2]


def next_deadline(
    rounds: Mapping[int, Round],
    proving: Collection[int],
    bidding: int,
    grace_ms: int,
    rescues: Mapping[str, int] | None = None,
) -> int | None:
    """When the next deadline falls: a settlement, a rescue, or the open round's bid deadline."""
    times = [settle_at(rounds[n], grace_ms) for n in proving]
    times += rescues.values() if rescues else []
    r = rounds.get(bidding)
    if r is not None and r.phase is Phase.BID:
        times.append(r.bid_deadline)
    return min(times) if times else None


def outage_moves(
    rounds: Iterable[Round], since: int, grace_ms: int
) -> tuple[list[Round], list[Round]]:
    """The rounds whose bid deadline, and those whose prove deadline, an outage moves.

    Every deadline after `since` (the coordinator's last record) moves; a round still in
    its grace is still open to proofs, so its prove deadline moves too.
    """
    bids, proofs = [], []
    for r in rounds:
        if r.phase is Phase.BID and r.bid_deadline > since:
            bids.append(r)
        if r.phase is not Phase.SETTLED and settle_at(r, grace_ms) > since:
            proofs.append(r)
    return bids, proofs


def outage_rescues(rescues: Mapping[str, int], since: int, outage: int) -> dict[str, int]:
    """Pending rescues after an outage: each one after `since` moves by its length."""
    return {key: at + outage if at > since else at for key, at in rescues.items()}


def forget_below(rounds: Mapping[int, Round], floor: int, bidding: int, seen_rounds: int) -> int:
    """The new floor once round `bidding` opens: rounds below it are settled and forgotten.

    A round is forgotten `seen_rounds` rounds after it, once settled; the floor stops at
    the first one still open, so nothing a batch in flight needs is forgotten.
    """
    while floor <= bidding - seen_rounds:
        r = rounds.get(floor)
        if r is not None and r.phase is not Phase.SETTLED:
            break
        floor += 1
    return floor
