"""The array-level clearing path: int64 arrays in, indices out, no per-bid Python objects.

A round of 1,000,000 task bids and 10,000 prover bids is cleared here. The tie rule at this
level is positional: among equal fees the lower task index wins, among equal costs the lower
prover index wins. `protocol.mechanism.clearing` puts bids into a canonical order (by tie key,
never by arrival) before calling in, so input order cannot change an outcome; or, for task
bids in any order, passes a `TieOrder` that ranks equal fees by tie key instead of index.

Proo-phi needs only a few order statistics of the fees, never a full sort: f_(S_j + 1) for the
j the scan reaches, and f_(S_ell), f_(S_ell + 1) at the end. "f_(k) >= v" is the same as "at
least k fees are >= v", so every question becomes a count over the fee array, and a small
strided sample of the fees points the counts at the right place (Floyd-Rivest style). The
sample only steers speed; every decision is taken on exact counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from protocol.mechanism.base import BidError
from protocol.mechanism.tie_order import TieOrder

Int64Array = NDArray[np.int64]

_SAMPLE = 4096
# How many sample standard deviations a guessed bracket spans; wider is safer, narrower faster.
_SPREAD = 5.0


@dataclass(frozen=True, slots=True)
class ArrayClearing:
    """A clearing by index.

    `provers` lists the allocated provers' indices in allocation order; `batch_sizes[i]` is
    how many tasks prover `provers[i]` proves; `tasks` concatenates the batches in that order
    (each batch ascending by task index, or in tie order given a `TieOrder`); `charges` is
    aligned with `tasks` and `payments` with `provers`. Money that can outgrow int64
    (payments, welfare) is Python int.
    """

    provers: Int64Array
    batch_sizes: Int64Array
    tasks: Int64Array
    charges: Int64Array
    payments: tuple[int, ...]
    user_price: int | None
    prover_price: int | None
    welfare: int

    @property
    def surplus(self) -> int:
        return _exact_sum(self.charges) - sum(self.payments)


def no_trade() -> ArrayClearing:
    empty = np.zeros(0, dtype=np.int64)
    return ArrayClearing(empty, empty, empty, empty, (), None, None, 0)


def check_arrays(fees: Int64Array, capacities: Int64Array, costs: Int64Array) -> None:
    """Raise BidError naming the first bad bid (by index) if any array holds a bad value."""
    for name, arr in (("fees", fees), ("capacities", capacities), ("costs", costs)):
        if arr.dtype != np.int64 or arr.ndim != 1:
            raise BidError(f"{name}: need a one-dimensional int64 array, got {arr.dtype}")
    if capacities.shape != costs.shape:
        raise BidError(f"capacities and costs differ in length: {capacities.size} != {costs.size}")
    if fees.size and int(fees.min()) < 0:
        i = int(np.argmax(fees < 0))
        raise BidError(f"task bid #{i}: negative fee {int(fees[i])}")
    if costs.size and int(costs.min()) < 0:
        i = int(np.argmax(costs < 0))
        raise BidError(f"prover bid #{i}: negative cost {int(costs[i])}")
    if capacities.size and int(capacities.min()) < 1:
        i = int(np.argmax(capacities < 1))
        raise BidError(f"prover bid #{i}: capacity {int(capacities[i])} is below 1")


def _exact_sum(values: Int64Array) -> int:
    """Sum as a Python int; int64 arithmetic only where it provably cannot overflow."""
    if values.size == 0:
        return 0
    if int(values.max()) <= (2**63 - 1) // values.size:
        return int(values.sum())
    return sum(values.tolist())


def _supply_order(
    capacities: Int64Array, costs: Int64Array, n_tasks: int
) -> tuple[Int64Array, Int64Array, Int64Array, Int64Array]:
    """Provers by (cost, index); their costs, capacities and S_j (capacity before j).

    Capacities are clipped at n_tasks + 1 for the running sums: past n_tasks no prover can be
    feasible, and the clip keeps S_j inside int64 whatever capacity was bid.
    """
    order = np.argsort(costs, kind="stable").astype(np.int64)
    c = costs[order]
    s = capacities[order]
    clipped = np.minimum(s, n_tasks + 1)
    before = np.zeros(s.size, dtype=np.int64)
    np.cumsum(clipped[:-1], out=before[1:])
    return order, c, s, before


class _FeeCounts:
    """Exact counts "how many fees are >= v", steered by a sorted strided sample."""

    def __init__(self, fees: Int64Array) -> None:
        self.fees = fees
        self.n = fees.size
        step = max(1, self.n // _SAMPLE)
        self.sample = np.sort(fees[::step])
        self.scale = self.n / max(1, self.sample.size)

    def at_least(self, values: Int64Array) -> NDArray[np.float64]:
        """Estimated count of fees >= each value (from the sample), as floats."""
        k = self.sample.size - np.searchsorted(self.sample, values, side="left")
        return np.asarray(k * self.scale, dtype=np.float64)

    def margin(self) -> float:
        return _SPREAD * (self.n / (2.0 * math.sqrt(max(1, self.sample.size)))) + self.scale

    def kth_largest(self, ks: tuple[int, ...], floor: tuple[int, int] | None = None) -> list[int]:
        """The k-th largest fee (1-based) for each k, all k in 1..n.

        `floor` = (a, count of fees >= a), when known with count >= max(ks), spares a pass.
        """
        fees = self.fees
        lo_k, hi_k = min(ks), max(ks)
        desc = self.sample[::-1]
        m = self.margin() / self.scale
        # A value bracket [a, b] that should hold ranks lo_k..hi_k; checked exactly below.
        i_b = int(np.floor(lo_k / self.scale - m)) - 1
        b = int(desc[i_b]) if 0 <= i_b < desc.size else int(fees.max())
        if floor is not None and floor[0] <= b:
            a, from_a = floor
            inside = np.flatnonzero((fees >= a) & (fees <= b))
            above = from_a - inside.size
        else:
            i_a = int(np.ceil(hi_k / self.scale + m)) + 1
            a = int(desc[i_a]) if 0 <= i_a < desc.size else int(fees.min())
            above = int(np.count_nonzero(fees > b))
            inside = np.flatnonzero((fees >= a) & (fees <= b))
        if not (above < lo_k and above + inside.size >= hi_k):
            above, window = 0, fees
        else:
            window = fees[inside]
        # k-th largest of fees == (k - above)-th largest of the window.
        pos = sorted({window.size - (k - above) for k in ks})
        part = np.partition(window, pos)
        return [int(part[window.size - (k - above)]) for k in ks]


def _last_feasible(
    counts: _FeeCounts, c: Int64Array, before: Int64Array
) -> tuple[int, Int64Array, int]:
    """ell: the largest j with p_(j+1) <= f_(S_j + 1), or -1 if none (0-based j); with the
    fees in [p_(ell+1), p_(ell+2)) and the count of fees >= p_(ell+2) (+inf past the end).

    The condition reads "count(fees >= c[j]) > S_j" and holds on a prefix of j. Binary
    search over j keeps a window of fees in [c[lo], c[hi]) and the count of fees >= c[hi],
    so each probe only scans the window; the first two probes come from the sample.
    """
    n = counts.n
    jmax = int(np.searchsorted(before, n, side="left"))  # S_j < n exactly for j < jmax
    if jmax == 0:
        return -1, counts.fees, 0
    fees = counts.fees
    est = counts.at_least(c[:jmax])
    margin = counts.margin()
    lo, hi, above = -1, jmax, 0
    # Probe the sample's bracket with exact counts over all fees (counting, no copying) ...
    for guess in (
        int(np.count_nonzero(est - margin > before[:jmax])) - 1,  # last j surely feasible
        int(np.count_nonzero(est + margin > before[:jmax])),  # first j surely infeasible
    ):
        if lo < guess < hi:
            at_least = int(np.count_nonzero(fees >= c[guess]))
            if at_least > before[guess]:
                lo = guess
            else:
                hi, above = guess, at_least
    # ... then copy out only the fees inside it, and finish the search on that window.
    inside = fees >= c[lo] if lo >= 0 else np.ones(fees.size, dtype=bool)
    if hi < jmax:
        inside &= fees < c[hi]
    window = fees[np.flatnonzero(inside)]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        hits = window >= c[mid]
        at_least = above + int(np.count_nonzero(hits))
        if at_least > before[mid]:
            lo = mid
            window = window[np.flatnonzero(hits)]
        else:
            hi = mid
            above = at_least
            window = window[np.flatnonzero(~hits)]
    return lo, window, above


def _top_tasks(fees: Int64Array, k: int, threshold: int, tie: TieOrder | None) -> Int64Array:
    """Indices of the k highest fees; among fees equal to `threshold` (the k-th largest) the
    lowest indices win, ascending, or with a tie order the first in it, in its order."""
    higher = fees > threshold
    room = k - int(np.count_nonzero(higher))
    tied = np.flatnonzero(fees == threshold)
    higher[tied[:room] if tie is None else tie.sort(tied)[:room]] = True
    chosen = np.flatnonzero(higher).astype(np.int64)
    return chosen if tie is None else tie.sort(chosen)


def clear_prooph_arrays(
    fees: Int64Array, capacities: Int64Array, costs: Int64Array, tie: TieOrder | None = None
) -> ArrayClearing:
    """Proo-phi on arrays (DESIGN.md, "Market model and the mechanism").

    ell = the largest j in 0..N-1 with p_(j+1) <= f_(S_j + 1); provers 1..ell (by cost, then
    index) prove exactly their capacity, the S_ell highest fees (ties: lower index) are
    allocated, each charged f_(S_ell + 1); each allocated prover j is paid s_j * p_(ell+1).
    """
    check_arrays(fees, capacities, costs)
    n = fees.size
    if n == 0 or costs.size == 0:
        return no_trade()
    order, c, s, before = _supply_order(capacities, costs, n)
    counts = _FeeCounts(fees)
    ell, window, above = _last_feasible(counts, c, before)
    if ell <= 0:
        return no_trade()
    allocated = int(before[ell])
    if above < allocated and above + window.size > allocated:
        # Both order statistics fall inside the search's last window: no further full pass.
        pos = window.size - (allocated - above)
        part = np.partition(window, [pos - 1, pos])
        lowest_in, user_price = int(part[pos]), int(part[pos - 1])
    else:
        # Here f_(S_ell + 1) >= p_(ell+2): the `above` fees hold both order statistics.
        floor = (int(c[ell + 1]), above) if above > allocated else None
        lowest_in, user_price = counts.kth_largest((allocated, allocated + 1), floor)
    prover_price = int(c[ell])
    tasks = _top_tasks(fees, allocated, lowest_in, tie)
    sizes = s[:ell].copy()
    payments = tuple(size * prover_price for size in sizes.tolist())
    value = _exact_sum(fees[tasks])
    cost = sum(a * b for a, b in zip(sizes.tolist(), c[:ell].tolist(), strict=True))
    return ArrayClearing(
        provers=order[:ell].copy(),
        batch_sizes=sizes,
        tasks=tasks,
        charges=np.full(allocated, user_price, dtype=np.int64),
        payments=payments,
        user_price=user_price,
        prover_price=prover_price,
        welfare=value - cost,
    )


def clear_optimum_arrays(
    fees: Int64Array, capacities: Int64Array, costs: Int64Array, tie: TieOrder | None = None
) -> ArrayClearing:
    """The welfare optimum: the most valuable feasible allocation.

    Feasible: each task proven at most once, each prover proves at most its capacity (a
    prover may be partly used). Welfare = sum of allocated fees - sum over provers of
    tasks proven * unit cost. The optimum pairs the k-th highest fee with the k-th cheapest
    unit of capacity for as long as the fee exceeds the cost (pairs with zero gain are left
    out). Transfers are pay-as-bid (charge = fee, payment = tasks * cost), so the treasury's
    surplus equals the welfare; this is a benchmark, not an incentive-compatible rule.
    """
    check_arrays(fees, capacities, costs)
    n = fees.size
    if n == 0 or costs.size == 0:
        return no_trade()
    order, c, s, before = _supply_order(capacities, costs, n)
    after = before + np.minimum(s, n + 1)
    counts = _FeeCounts(fees)

    def unit_cost(k: int) -> int:  # cost of the k-th cheapest unit of capacity (1-based)
        return int(c[int(np.searchsorted(after, k, side="left"))])

    # Trade k units iff f_(k) > unit_cost(k), i.e. more than k-1 fees exceed it; monotone in k.
    lo, hi = 0, min(n, int(after[-1])) + 1
    while hi - lo > 1:
        k = (lo + hi) // 2
        if int(np.count_nonzero(counts.fees > unit_cost(k))) >= k:
            lo = k
        else:
            hi = k
    if lo == 0:
        return no_trade()
    (lowest_in,) = counts.kth_largest((lo,))
    tasks = _top_tasks(fees, lo, lowest_in, tie)
    used = int(np.searchsorted(after, lo, side="left")) + 1
    sizes = np.minimum(s[:used], n + 1)
    sizes[-1] = lo - int(before[used - 1])
    payments = tuple(a * b for a, b in zip(sizes.tolist(), c[:used].tolist(), strict=True))
    charges = fees[tasks]
    return ArrayClearing(
        provers=order[:used].copy(),
        batch_sizes=sizes,
        tasks=tasks,
        charges=charges,
        payments=payments,
        user_price=None,
        prover_price=None,
        welfare=_exact_sum(charges) - sum(payments),
    )
