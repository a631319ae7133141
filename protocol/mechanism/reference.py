"""Proo-phi and the welfare optimum as plain loops over sorted bids: the readable reference
the fast path (protocol.mechanism.arrays) must equal, outcome for outcome."""

from __future__ import annotations

from collections.abc import Sequence

from protocol.mechanism.base import Outcome, ProverBid, TaskBid
from protocol.mechanism.bids import check_bids
from protocol.mechanism.ties import tie_keyer


def _ranked(
    tasks: Sequence[TaskBid], provers: Sequence[ProverBid], seed: bytes
) -> tuple[list[TaskBid], list[ProverBid]]:
    """Fees high to low, costs low to high; equal bids by tie key (protocol.mechanism.ties)."""
    key = tie_keyer(seed)
    fees = sorted(tasks, key=lambda t: (-t.fee, key(t.id)))
    bids = sorted(provers, key=lambda p: (p.cost, key(p.id)))
    return fees, bids


def _batches(
    chosen: list[TaskBid], sizes: list[tuple[ProverBid, int]], seed: bytes
) -> dict[str, tuple[str, ...]]:
    """Hand the chosen tasks, in tie-key order, to the provers in cost order, `size` each.

    Every allocated task pays the same price, so which prover proves which task is
    economically neutral; tie-key order lets the fast path batch without sorting by fee.
    """
    key = tie_keyer(seed)
    queue = sorted(chosen, key=lambda t: key(t.id))
    out: dict[str, tuple[str, ...]] = {}
    start = 0
    for bid, size in sizes:
        out[bid.id] = tuple(sorted(t.id for t in queue[start : start + size]))
        start += size
    return out


def clear_prooph_reference(
    tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
) -> Outcome:
    """Clear one round with Proo-phi (DESIGN.md, "Market model and the mechanism")."""
    check_bids(tasks, provers)
    fees, bids = _ranked(tasks, provers, seed)
    # ell = the largest j in 0..N-1 with p_(j+1) <= f_(S_j + 1). The condition holds on a
    # prefix of j (costs rise, fees fall), so scan while it holds; `ell` ends one past it.
    ell, allocated = 0, 0
    while ell < len(bids) and allocated < len(fees) and bids[ell].cost <= fees[allocated].fee:
        allocated += bids[ell].capacity
        ell += 1
    ell -= 1
    if ell <= 0:
        return Outcome(mechanism="prooph")
    allocated -= bids[ell].capacity  # S_ell
    user_price = fees[allocated].fee  # f_(S_ell + 1)
    prover_price = bids[ell].cost  # p_(ell + 1)
    winners = bids[:ell]
    chosen = fees[:allocated]
    welfare = sum(t.fee for t in chosen) - sum(b.capacity * b.cost for b in winners)
    return Outcome(
        mechanism="prooph",
        assignments=_batches(chosen, [(b, b.capacity) for b in winners], seed),
        charges={t.id: user_price for t in chosen},
        payments={b.id: b.capacity * prover_price for b in winners},
        user_price=user_price,
        prover_price=prover_price,
        welfare=welfare,
    )


def clear_optimum_reference(
    tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
) -> Outcome:
    """The welfare optimum (see protocol.mechanism.arrays.clear_optimum_arrays): pair the
    k-th highest fee with the k-th cheapest unit of capacity while the fee exceeds the cost."""
    check_bids(tasks, provers)
    fees, bids = _ranked(tasks, provers, seed)
    sizes: list[tuple[ProverBid, int]] = []
    k = 0
    for bid in bids:
        used = 0
        while used < bid.capacity and k < len(fees) and fees[k].fee > bid.cost:
            used += 1
            k += 1
        if used:
            sizes.append((bid, used))
        if used < bid.capacity:
            break
    chosen = fees[:k]
    payments = {b.id: used * b.cost for b, used in sizes}
    charges = {t.id: t.fee for t in chosen}
    return Outcome(
        mechanism="optimum",
        assignments=_batches(chosen, sizes, seed),
        charges=charges,
        payments=payments,
        welfare=sum(charges.values()) - sum(payments.values()),
    )
