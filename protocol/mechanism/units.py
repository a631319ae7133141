"""A ranked book seen as units: the shared ground of the peers' mechanisms.

Fees are ranked high to low and prover bids by cost low to high, equal bids by tie key
(protocol.mechanism.ties). A prover of capacity s is s units of supply at its cost, so the
book's supply curve is u_1 <= u_2 <= ...: the k-th cheapest unit's cost. Capacities count
only up to n (the number of task bids), since no more units can ever trade.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol.mechanism.base import Outcome, ProverBid, TaskBid
from protocol.mechanism.bids import check_bids
from protocol.mechanism.ties import tie_keyer


@dataclass(frozen=True, slots=True)
class Book:
    """A checked book in rank order, with each prover's cumulative (clipped) capacity."""

    fees: tuple[TaskBid, ...]  # high to low
    bids: tuple[ProverBid, ...]  # cheap to dear
    ends: tuple[int, ...]  # ends[j] = units of provers 0..j, each clipped at n
    seed: bytes

    @property
    def units(self) -> int:
        """How many units can trade at most: min(total capacity, n)."""
        return min(self.ends[-1] if self.ends else 0, len(self.fees))

    def fee(self, k: int) -> int:
        """f_k, the k-th highest fee (1-based)."""
        return self.fees[k - 1].fee

    def unit_cost(self, k: int) -> int:
        """u_k, the cost of the k-th cheapest unit (1-based)."""
        return self.bids[bisect.bisect_left(self.ends, k)].cost

    def efficient(self, *, strict: bool) -> int:
        """k: the largest k with f_k >= u_k (f_k > u_k if strict); 0 if none.

        The condition holds on a prefix of k (fees fall, unit costs rise), so scan while
        it holds, one prover block at a time.
        """
        k = 0
        for j, bid in enumerate(self.bids):
            while k < self.ends[j] and k < len(self.fees):
                f = self.fees[k].fee
                if f < bid.cost or (strict and f == bid.cost):
                    return k
                k += 1
        return k

    def first_units(self, k: int) -> list[tuple[ProverBid, int]]:
        """The provers owning the k cheapest units, with how many of them each owns."""
        out: list[tuple[ProverBid, int]] = []
        start = 0
        for bid, end in zip(self.bids, self.ends, strict=True):
            if start >= k:
                break
            out.append((bid, min(end, k) - start))
            start = end
        return out


def rank(tasks: Sequence[TaskBid], provers: Sequence[ProverBid], seed: bytes) -> Book:
    """Check the bids and rank them; equal fees and costs go by tie key."""
    check_bids(tasks, provers)
    key = tie_keyer(seed)
    fees = tuple(sorted(tasks, key=lambda t: (-t.fee, key(t.id))))
    bids = tuple(sorted(provers, key=lambda p: (p.cost, key(p.id))))
    ends: list[int] = []
    total = 0
    for bid in bids:
        total += min(bid.capacity, len(fees))
        ends.append(total)
    return Book(fees, bids, tuple(ends), seed)


def welfare_of(chosen: Iterable[TaskBid], sizes: Iterable[tuple[ProverBid, int]]) -> int:
    """Sum of the chosen fees less what the used units cost at their bid costs."""
    return sum(t.fee for t in chosen) - sum(used * bid.cost for bid, used in sizes)


def batches_in_order(
    chosen: Sequence[TaskBid], sizes: Sequence[tuple[ProverBid, int]]
) -> dict[str, tuple[str, ...]]:
    """Hand the chosen tasks, in the given order, to the provers in order, `used` each."""
    out: dict[str, tuple[str, ...]] = {}
    start = 0
    for bid, used in sizes:
        out[bid.id] = tuple(sorted(t.id for t in chosen[start : start + used]))
        start += used
    return out


def batches_by_key(
    chosen: Sequence[TaskBid], sizes: Sequence[tuple[ProverBid, int]], seed: bytes
) -> dict[str, tuple[str, ...]]:
    """As batches_in_order with the tasks in tie-key order: for rules where every task pays
    the same, so which prover proves which task is economically neutral."""
    key = tie_keyer(seed)
    return batches_in_order(sorted(chosen, key=lambda t: key(t.id)), sizes)


def outcome(
    name: str,
    chosen: Sequence[TaskBid],
    sizes: Sequence[tuple[ProverBid, int]],
    assignments: Mapping[str, tuple[str, ...]],
    charges: Mapping[str, int],
    payments: Mapping[str, int],
    prices: tuple[int | None, int | None] = (None, None),
) -> Outcome:
    """An Outcome with its welfare computed from the chosen tasks and used units."""
    if not chosen:
        return Outcome(mechanism=name)
    return Outcome(
        mechanism=name,
        assignments=dict(assignments),
        charges=dict(charges),
        payments=dict(payments),
        user_price=prices[0],
        prover_price=prices[1],
        welfare=welfare_of(chosen, sizes),
    )


def uniform(name: str, book: Book, k: int, user_price: int, prover_price: int) -> Outcome:
    """The k highest fees trade with the k cheapest units: users pay `user_price` each,
    each prover `prover_price` per unit it proves."""
    if k <= 0:
        return Outcome(mechanism=name)
    chosen = book.fees[:k]
    sizes = book.first_units(k)
    return outcome(
        name,
        chosen,
        sizes,
        batches_by_key(chosen, sizes, book.seed),
        {t.id: user_price for t in chosen},
        {bid.id: used * prover_price for bid, used in sizes},
        (user_price, prover_price),
    )
