"""Script a market from Python: the paper's Example 1, then a round of your own.

Run it with `python examples/scripted_market.py` (in memory, instant) or
`python examples/scripted_market.py --broker embedded` (the real coordinator process and
every participant over a real MQTT broker, a few seconds). It exits non-zero if the
market did not do what the paper says.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from proofmarket.api import Market, quiet_logs


async def main(broker: str | None) -> int:
    quiet_logs()
    async with Market(rounds=2, rules={"mechanism": "prooph"}, broker=broker) as market:
        # Example 1's provers: (capacity, cost) = (4, 0), (2, 1), (2, 10).
        market.add_prover("p1", capacity=4, cost=0)
        market.add_prover("p2", capacity=2, cost=1)
        market.add_prover("p3", capacity=2, cost=10)
        # One user bids all eight of Example 1's tasks in round 0; it is funded for more.
        market.add_user("me", balance=500)
        market.bid("me", 0, [10, 10, 10, 10, 9, 9, 1, 1])
        # A bid goes in before its round opens, and round 1 opens as round 0 clears:
        # bid for round 1 now, then wait for the outcomes.
        market.bid("me", 1, [30, 30, 20, 5, 5])

        first = await market.round(0)
        print("round 0:", first["allocated_tasks"], "tasks at", first["user_price"])
        print("  prover payments:", first.get("paid"), " my charges:", first.get("charged"))
        print("  proofs I hold:", sorted(market.proofs("me")))

        # The earliest round still open to new bids (round 2 would be, were there one).
        print("  next round to bid in:", market.next_round())
        second = await market.round(1)
        print("round 1:", second["allocated_tasks"], "tasks at", second["user_price"])
    result = market.result
    assert result is not None
    print("my balance at the end:", result.balances["me"], "| verdict ok:", result.ok)
    expected = (4, 9, {"p1": 4}, 36)
    charged = first.get("charged", {})
    assert isinstance(charged, dict)
    actual = (first["allocated_tasks"], first["user_price"], first.get("paid"), charged.get("me"))
    if expected != actual:
        print(f"expected {expected}, got {actual}", file=sys.stderr)
        return 1
    return 0 if result.ok else 1


if __name__ == "__main__":  # the guard matters: provers prove in spawned worker processes
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=None, help="'embedded' or an mqtt:// URL")
    sys.exit(asyncio.run(main(parser.parse_args().broker)))
