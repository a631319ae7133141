"""Proo-phi as a plain loop over sorted bids: the readable reference the fast path must equal."""

from __future__ import annotations

from collections.abc import Sequence

from protocol.mechanism.base import Outcome, ProverBid, TaskBid


def clear_prooph_reference(
    tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
) -> Outcome:
    """Clear one round with Proo-phi (DESIGN.md, "Market model and the mechanism").

    Ties: fees high to low, then id; costs low to high, then id. Input order cannot
    change the outcome. `seed` is unused here: ties are broken by id alone.
    """
    fees = sorted(tasks, key=lambda t: (-t.fee, t.id))
    bids = sorted(provers, key=lambda p: (p.cost, p.id))
    ell, allocated = 0, 0
    # ell = largest j in 0..N-1 with p_(j+1) <= f_(S_j + 1); monotone in j, so scan.
    while ell < len(bids) and allocated < len(fees) and bids[ell].cost <= fees[allocated].fee:
        allocated += bids[ell].capacity
        ell += 1
    ell -= 1  # the scan stopped one past the last j whose condition held
    if ell <= 0:
        return Outcome(mechanism="prooph")
    allocated -= bids[ell].capacity
    if allocated >= len(fees):
        return Outcome(mechanism="prooph")
    user_price = fees[allocated].fee
    prover_price = bids[ell].cost
    assignments: dict[str, tuple[str, ...]] = {}
    start = 0
    for bid in bids[:ell]:
        assignments[bid.id] = tuple(t.id for t in fees[start : start + bid.capacity])
        start += bid.capacity
    charges = {t.id: user_price for t in fees[:allocated]}
    payments = {bid.id: bid.capacity * prover_price for bid in bids[:ell]}
    welfare = sum(t.fee for t in fees[:allocated]) - sum(b.capacity * b.cost for b in bids[:ell])
    return Outcome(
        mechanism="prooph",
        assignments=assignments,
        charges=charges,
        payments=payments,
        user_price=user_price,
        prover_price=prover_price,
        welfare=welfare,
    )
