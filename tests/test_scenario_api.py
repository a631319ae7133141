"""The Python API in memory: setting up a market, bidding, waiting on rounds, reading them."""

from __future__ import annotations

import pytest

from proofmarket.api import Market, MarketNotStarted


async def test_in_memory_market_reads_outcome_balance_and_proofs() -> None:
    """Example 1 from code: prices, payments, the user's live balance and its four proofs."""
    async with Market(rounds=1) as market:
        for name, capacity, cost in (("p1", 4, 0), ("p2", 2, 1), ("p3", 2, 10)):
            market.add_prover(name, capacity=capacity, cost=cost)
        market.add_user("me", balance=100)
        market.bid("me", 0, [10, 10, 10, 10, 9, 9, 1, 1])
        outcome = await market.round(0)
        assert (9, 1, {"p1": 4}) == (
            outcome["user_price"],
            outcome["prover_price"],
            outcome["paid"],
        )
        assert 100 - 36 == market.balance("me")
        assert 4 == len(market.proofs("me"))
    assert market.result is not None and market.result.ok


async def test_declarations_close_at_the_start_and_bids_at_their_round() -> None:
    """After the start no participant can be added, and no bid go into an open round."""
    async with Market(rounds=2) as market:
        market.add_prover("p1", capacity=1, cost=1)
        market.add_prover("p2", capacity=1, cost=2)
        market.add_user("me", balance=100)
        market.bid("me", 0, [10, 10])
        await market.round(0)
        with pytest.raises(MarketNotStarted):
            market.add_user("late")
        with pytest.raises(ValueError, match="already open"):
            market.bid("me", 1, [10])


def test_balance_before_the_start_is_refused() -> None:
    """Reading a balance of a market that never started says so."""
    with pytest.raises(MarketNotStarted):
        Market(rounds=1).balance("me")
