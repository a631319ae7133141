"""The array path on large books (where the sampled brackets matter) and bid checking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.mechanism import (
    BidError,
    ProverBid,
    TaskBid,
    check_bids,
    clear_optimum_arrays,
    clear_prooph_arrays,
    get_mechanism,
    parse_bids,
)


def sorted_prooph(fees: np.ndarray, caps: np.ndarray, costs: np.ndarray) -> object:
    """Proo-phi by full sorts and a Python scan: slow, obviously right, positional ties."""
    n = fees.size
    order = np.argsort(costs, kind="stable")
    c, s = costs[order], caps[order]
    ranked = np.lexsort((np.arange(n), -fees))
    f = fees[ranked]
    ell, total = -1, 0
    for j in range(c.size):
        if total < n and c[j] <= f[total]:
            ell, total = j, total + int(s[j])
        else:
            break
    if ell <= 0:
        return None
    allocated = int(s[:ell].sum())
    return (
        order[:ell].tolist(),
        sorted(ranked[:allocated].tolist()),
        int(f[allocated]),
        int(c[ell]),
    )


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(5_000, 60_000),
    m=st.integers(1, 400),
    top=st.sampled_from([1, 3, 100, 10**6, 10**15]),
    shape=st.sampled_from(["uniform", "sorted", "skewed"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_large_books_match_a_full_sort(n: int, m: int, top: int, shape: str, seed: int) -> None:
    """On books past the sample size, with heavy ties and skew, the array path equals a sort."""
    rng = np.random.default_rng(seed)
    fees = rng.integers(0, top + 1, n, dtype=np.int64)
    if shape == "sorted":
        fees.sort()
    elif shape == "skewed":
        fees = (rng.exponential(1.0, n) ** 3 * top / 10).astype(np.int64)
    costs = rng.integers(0, top + 1, m, dtype=np.int64)
    caps = rng.integers(1, max(2, 3 * n // m), m, dtype=np.int64)
    out = clear_prooph_arrays(fees, caps, costs)
    got = (
        None
        if out.user_price is None
        else (out.provers.tolist(), out.tasks.tolist(), out.user_price, out.prover_price)
    )
    assert sorted_prooph(fees, caps, costs) == got
    if out.user_price is not None:
        assert out.batch_sizes.tolist() == caps[out.provers].tolist()
        assert out.surplus >= 0


def test_large_book_object_path_matches_reference() -> None:
    """The registered fast mechanism equals the reference on a 20,000-task book with ties."""
    rng = np.random.default_rng(7)
    tasks = [TaskBid(f"t{i}", int(f)) for i, f in enumerate(rng.integers(0, 50, 20_000))]
    provers = [
        ProverBid(f"p{j}", int(s), int(c))
        for j, (s, c) in enumerate(
            zip(rng.integers(1, 200, 300), rng.integers(0, 50, 300), strict=True)
        )
    ]
    fast = get_mechanism("prooph").clear(tasks, provers, seed=b"round-9")
    assert get_mechanism("prooph-reference").clear(tasks, provers, seed=b"round-9") == fast
    assert fast.allocated_tasks > 0


def test_huge_amounts_keep_exact_integer_money() -> None:
    """Fees near 2**62 sum past int64 without wrapping: welfare and surplus stay exact."""
    big = 2**62
    tasks = [TaskBid(f"t{i}", big) for i in range(6)]
    provers = [ProverBid("a", 3, 0), ProverBid("b", 3, 1)]
    out = get_mechanism("prooph").clear(tasks, provers)
    assert 3 * big == out.welfare
    assert 3 * big - 3 == out.surplus


@pytest.mark.parametrize(
    ("tasks", "provers", "message"),
    [
        ([TaskBid("t1", -1)], [], "task bid 't1': negative fee -1"),
        ([TaskBid("t1", 1), TaskBid("t1", 2)], [], "task bid 't1': duplicate id"),
        ([TaskBid("t1", True)], [], "task bid 't1': fee must be an integer, got True"),
        ([TaskBid("t1", 1.0)], [], "task bid 't1': fee must be an integer, got 1.0"),  # type: ignore[arg-type]
        ([TaskBid("t1", 2**63)], [], "task bid 't1': fee 9223372036854775808 exceeds"),
        ([], [ProverBid("p", 0, 1)], "prover bid 'p': capacity 0 is below 1"),
        ([], [ProverBid("p", 1, -5)], "prover bid 'p': negative cost -5"),
        ([], [ProverBid("p", 1, 1), ProverBid("p", 2, 2)], "prover bid 'p': duplicate id"),
        ([], [ProverBid("p", "2", 1)], "prover bid 'p': capacity must be an integer"),  # type: ignore[arg-type]
        ([TaskBid("", 1)], [], "task bid '': id must be a non-empty string"),
    ],
)
def test_bad_bids_name_the_bid_and_the_problem(
    tasks: list[TaskBid], provers: list[ProverBid], message: str
) -> None:
    """check_bids and every mechanism reject a bad bid with one error naming it."""
    with pytest.raises(BidError) as caught:
        check_bids(tasks, provers)
    assert str(caught.value).startswith(message)
    for name in ("prooph", "optimum", "prooph-reference"):
        with pytest.raises(BidError):
            get_mechanism(name).clear(tasks, provers)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tasks": [{"fee": 1}]}, "task bid #0: missing field id"),
        (
            {"tasks": [{"id": "t", "fee": 1}], "provers": [{"id": "p", "cost": 1}]},
            "prover bid 'p': missing field capacity",
        ),
        ({"tasks": [{"id": "t", "fee": 1, "tip": 2}]}, "task bid 't': unknown field tip"),
        ({"tasks": {}}, "input: tasks must be a list"),
        ([], "input must be an object"),
        ({"tasks": ["t1"]}, "task bid #0: must be an object"),
    ],
)
def test_parse_bids_rejects_malformed_documents(doc: object, message: str) -> None:
    """Missing fields, stray fields and wrong shapes in decoded JSON raise a naming BidError."""
    with pytest.raises(BidError) as caught:
        parse_bids(doc)
    assert str(caught.value).startswith(message)


def test_array_checks_name_the_index() -> None:
    """The array entry point rejects bad values by bid index, before clearing anything."""
    ok = np.array([1, 2], dtype=np.int64)
    with pytest.raises(BidError, match="task bid #1: negative fee -3"):
        clear_prooph_arrays(np.array([4, -3], dtype=np.int64), ok, ok)
    with pytest.raises(BidError, match="prover bid #0: capacity 0 is below 1"):
        clear_prooph_arrays(ok, np.array([0, 1], dtype=np.int64), ok)
    with pytest.raises(BidError, match="int64"):
        clear_prooph_arrays(ok.astype(np.float64), ok, ok)  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(5_000, 40_000),
    m=st.integers(1, 300),
    top=st.sampled_from([3, 1000, 10**12]),
    seed=st.integers(0, 2**32 - 1),
)
def test_large_optimum_matches_unit_pairing(n: int, m: int, top: int, seed: int) -> None:
    """On large books the optimum's welfare equals pairing sorted fees with sorted unit costs."""
    rng = np.random.default_rng(seed)
    fees = rng.integers(0, top + 1, n, dtype=np.int64)
    costs = rng.integers(0, top + 1, m, dtype=np.int64)
    caps = rng.integers(1, max(2, 2 * n // m), m, dtype=np.int64)
    units = np.repeat(np.sort(costs), caps[np.argsort(costs, kind="stable")])[:n]
    desc = np.sort(fees)[::-1][: units.size]
    gains = desc - units
    expected = int(gains[gains > 0].sum())
    out = clear_optimum_arrays(fees, caps, costs)
    assert expected == out.welfare
    assert int(np.count_nonzero(gains > 0)) == out.tasks.size
    assert out.batch_sizes.sum() == out.tasks.size
