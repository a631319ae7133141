"""Random seeded markets: true values drawn from named distributions, attackers picked.

A market's bids are its agents' true values (honest bidding); the deviations in
deploy.lab.agents start from them. Everything is drawn from a random.Random the caller
seeds, so a lab run is the same for the same seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from protocol.mechanism import ProverBid, TaskBid

# name -> how a value in [low, high] is drawn from u, uniform in [0, 1)
DISTRIBUTIONS: Final = ("uniform", "skewed", "bimodal")


@dataclass(frozen=True, slots=True)
class Prior:
    """A distribution of integer values in [low, high]."""

    name: str
    low: int
    high: int

    def draw(self, rng: random.Random) -> int:
        u = rng.random()
        if self.name == "skewed":  # most values low, a long tail up to `high`
            u = u**3
        elif self.name == "bimodal":  # two clusters, around 20% and 80% of the range
            u = min(0.999, max(0.0, rng.gauss(0.2 if u < 0.5 else 0.8, 0.07)))
        elif self.name != "uniform":
            raise ValueError(f"unknown distribution {self.name!r}; known: {DISTRIBUTIONS}")
        return self.low + math.floor(u * (self.high - self.low + 1))

    def quantile(self, q: float) -> int:
        """An approximate q-quantile, from a fixed private sample (the prior is public)."""
        rng = random.Random(f"{self.name}/{self.low}/{self.high}")
        sample = sorted(self.draw(rng) for _ in range(999))
        return sample[min(len(sample) - 1, int(q * len(sample)))]


@dataclass(frozen=True, slots=True)
class Shape:
    """What the lab's markets look like: sizes and the priors bids are drawn from."""

    tasks: int = 40
    provers: int = 8
    fees: Prior = Prior("uniform", 1, 100)
    costs: Prior = Prior("uniform", 1, 60)
    capacity: tuple[int, int] = (2, 8)


@dataclass(frozen=True, slots=True)
class Market:
    """One round's true values, and who attacks: a prover among the cheaper half, a
    partner prover with another cost, and a user."""

    tasks: tuple[TaskBid, ...]
    provers: tuple[ProverBid, ...]
    attacker: int  # index into provers
    partner: int | None  # index into provers, cost != the attacker's
    user: int | None  # index into tasks
    seed: bytes


def draw_users(shape: Shape, rng: random.Random, prefix: str = "t") -> tuple[TaskBid, ...]:
    return tuple(TaskBid(f"{prefix}{i}", shape.fees.draw(rng)) for i in range(shape.tasks))


def draw_market(shape: Shape, rng: random.Random) -> Market:
    """A market of `shape`, values drawn from its priors."""
    provers = tuple(
        ProverBid(f"p{j}", rng.randint(*shape.capacity), shape.costs.draw(rng))
        for j in range(shape.provers)
    )
    return with_users(provers, draw_users(shape, rng), rng)


def with_users(
    provers: tuple[ProverBid, ...], tasks: tuple[TaskBid, ...], rng: random.Random
) -> Market:
    """A market of these bids, with attackers picked by `rng`."""
    by_cost = sorted(range(len(provers)), key=lambda j: (provers[j].cost, j))
    attacker = by_cost[rng.randrange(max(1, (len(provers) + 1) // 2))] if provers else 0
    others = [j for j in by_cost if provers[j].cost != provers[attacker].cost] if provers else []
    partner = others[0] if others else None
    user = rng.randrange(len(tasks)) if tasks else None
    return Market(tasks, provers, attacker, partner, user, rng.randbytes(4))
