"""VCG: the welfare-maximising allocation, each party paying the externality it imposes.

It is the optimum's allocation (the k highest fees with the k cheapest units while
f_k > u_k). Task bids are unit demand, so a winning task's externality is the same for
all of them: max(u_k, f_(k+1)), f_(k+1) = 0 if there is none. A winning prover j is paid
its used units at its cost plus its contribution to welfare, W - W_(-j), where W_(-j) is
the optimum's welfare without j. Everything is integer: there is nothing to round.

VCG runs a deficit (payments exceed charges) whenever it trades: Outcome.surplus is then
negative, and a live market must name a subsidy account to pay it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.mechanism.base import Outcome, ProverBid, TaskBid
from protocol.mechanism.units import Book, batches_by_key, outcome, rank


def optimum_welfare(fees: Sequence[int], bids: Sequence[ProverBid]) -> int:
    """The optimum's welfare for fees high to low and bids cheap to dear."""
    welfare, i, n = 0, 0, len(fees)
    for bid in bids:
        room = bid.capacity
        while room and i < n and fees[i] > bid.cost:
            welfare += fees[i] - bid.cost
            i += 1
            room -= 1
        if room or i == n:
            break
    return welfare


def _payments(book: Book, sizes: list[tuple[ProverBid, int]], welfare: int) -> dict[str, int]:
    fees = [t.fee for t in book.fees]
    out: dict[str, int] = {}
    for bid, used in sizes:
        without = [b for b in book.bids if b.id != bid.id]
        out[bid.id] = used * bid.cost + welfare - optimum_welfare(fees, without)
    return out


@dataclass(frozen=True)
class Vcg:
    """Vickrey-Clarke-Groves on a round's book (see the module docstring)."""

    name: str = "vcg"

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        book = rank(tasks, provers, seed)
        k = book.efficient(strict=True)
        if k == 0:
            return Outcome(mechanism=self.name)
        chosen = book.fees[:k]
        sizes = book.first_units(k)
        welfare = sum(book.fee(i) - book.unit_cost(i) for i in range(1, k + 1))
        next_fee = book.fee(k + 1) if k < len(book.fees) else 0
        charge = max(book.unit_cost(k), next_fee)
        return outcome(
            self.name,
            chosen,
            sizes,
            batches_by_key(chosen, sizes, book.seed),
            {t.id: charge for t in chosen},
            _payments(book, sizes, welfare),
            (charge, None),
        )
