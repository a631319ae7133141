"""The mechanisms real prover markets use (and McAfee's), on the unit view of a book.

Each is a frozen dataclass implementing base.Mechanism; its parameters are fields. Money
stays integer; where a rule's price is not a whole number, the rounding is the one that
keeps the treasury from paying out more than it takes in (stated per rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.mechanism.base import Outcome, ProverBid, TaskBid
from protocol.mechanism.ties import tie_keyer
from protocol.mechanism.units import batches_in_order, outcome, rank, uniform

BPS = 10_000  # call-market `a` is given in basis points: a = call_a_bps / 10_000


@dataclass(frozen=True)
class McAfee:
    """McAfee's trade reduction (1992), one unit of capacity standing for one seller.

    k = the largest i with f_i >= u_i. With p0 = (f_(k+1) + u_(k+1)) / 2: if
    u_k <= p0 <= f_k, all k trade at p0; otherwise (or if f_(k+1) or u_(k+1) does not
    exist) k - 1 trade, users paying f_k and provers u_k per unit. A half-unit p0 is
    rounded up for users and down for provers, so the treasury keeps the half unit per
    trade and budget balance holds; u_k <= p0 <= f_k is the same test on the rounded
    prices, because u_k and f_k are integers.
    """

    name: str = "mcafee"

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        book = rank(tasks, provers, seed)
        k = book.efficient(strict=False)
        if k == 0:
            return Outcome(mechanism=self.name)
        if k < len(book.fees) and k < book.units:
            twice = book.fee(k + 1) + book.unit_cost(k + 1)
            down, up = twice // 2, (twice + 1) // 2
            if book.unit_cost(k) <= down and up <= book.fee(k):
                return uniform(self.name, book, k, up, down)
        return uniform(self.name, book, k - 1, book.fee(k), book.unit_cost(k))


@dataclass(frozen=True)
class PostedPrice:
    """A posted price P (Gevulot): task bids with fee >= P and prover bids with cost <= P
    trade at P. The long side is rationed by the tie rule, not by bid: tasks in tie-key
    order, provers in tie-key order, each prover filled to its capacity before the next.
    With no price posted nothing trades. P is integer, so there is nothing to round."""

    price: int | None = None
    name: str = "posted"

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        book = rank(tasks, provers, seed)
        p = self.price
        if p is None:
            return Outcome(mechanism=self.name)
        key = tie_keyer(seed)
        buyers = sorted((t for t in book.fees if t.fee >= p), key=lambda t: key(t.id))
        sellers = sorted((b for b in book.bids if b.cost <= p), key=lambda b: key(b.id))
        room = len(buyers)
        sizes: list[tuple[ProverBid, int]] = []
        for bid in sellers:
            if room == 0:
                break
            used = min(bid.capacity, room)
            sizes.append((bid, used))
            room -= used
        chosen = buyers[: sum(used for _, used in sizes)]
        return outcome(
            self.name,
            chosen,
            sizes,
            batches_in_order(chosen, sizes),
            {t.id: p for t in chosen},
            {bid.id: used * p for bid, used in sizes},
            (p, p),
        )


@dataclass(frozen=True)
class PayAsBid:
    """A pay-as-bid reverse auction (what Succinct's network and Boundless's lock-first
    market amount to): the cheapest units go first, the k-th highest fee to the k-th
    cheapest unit while f_k >= u_k, and each task pays its prover's ask, which the prover
    receives. Surplus is exactly 0; nothing to round."""

    name: str = "pay-as-bid"

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        book = rank(tasks, provers, seed)
        k = book.efficient(strict=False)
        chosen = book.fees[:k]
        sizes = book.first_units(k)
        charges: dict[str, int] = {}
        i = 0
        for bid, used in sizes:
            for t in chosen[i : i + used]:
                charges[t.id] = bid.cost
            i += used
        return outcome(
            self.name,
            chosen,
            sizes,
            batches_in_order(chosen, sizes),
            charges,
            {bid.id: used * bid.cost for bid, used in sizes},
        )


@dataclass(frozen=True)
class CallMarket:
    """A uniform-price call market (an order book cleared at one price, =nil;-style): the
    k efficient trades (largest k with f_k >= u_k) at p = a*f_k + (1-a)*u_k, a given as
    call_a_bps / 10_000. p is rounded down (toward u_k): one price for both sides, so the
    surplus is exactly 0, and u_k <= p <= f_k keeps everyone's utility >= 0."""

    call_a_bps: int = BPS // 2
    name: str = "call-market"

    def __post_init__(self) -> None:
        if not 0 <= self.call_a_bps <= BPS:
            raise ValueError(f"call_a_bps must be in 0..{BPS}, got {self.call_a_bps}")

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        book = rank(tasks, provers, seed)
        k = book.efficient(strict=False)
        if k == 0:
            return Outcome(mechanism=self.name)
        low, high = book.unit_cost(k), book.fee(k)
        price = low + self.call_a_bps * (high - low) // BPS
        return uniform(self.name, book, k, price, price)


__all__ = ["BPS", "CallMarket", "McAfee", "PayAsBid", "PostedPrice"]
