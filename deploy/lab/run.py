"""A lab run: honest markets under every mechanism, then every deviation, informed and
sealed, then capacity misreport over rounds with the capacity lock on and off.

Informed: the coalition sees the other bids and plays the best of its policies in each
market (honest when none pays), so it never loses. Sealed: it sees only the priors; it
commits to the policy with the best mean gain over `train` markets drawn from them (honest
if none has a positive mean) and plays it in every market, where it may lose.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from deploy.lab.agents import DEVIATIONS, Plan, Policy, gain
from deploy.lab.markets import Market, Shape, draw_market, draw_users, with_users
from protocol.mechanism import COMPARED, Mechanism, MechanismParams, Outcome, make_mechanism


@dataclass(frozen=True, slots=True)
class LabConfig:
    """How big a lab run is. `quick()` is the sub-minute version."""

    markets: int = 200
    train: int = 100
    shape: Shape = field(default_factory=Shape)
    seed: int = 0
    mechanisms: tuple[str, ...] = COMPARED
    call_a_bps: int = 5_000
    posted_price: int | None = None  # None: the priors' medians' midpoint
    reserve_cost: int | None = None
    rounds: int = 30
    epoch_markets: int = 20
    epoch_rounds: int = 10  # E
    capacity_factor: int = 2  # m

    @staticmethod
    def quick(seed: int = 0) -> LabConfig:
        return LabConfig(
            markets=40, train=30, seed=seed, rounds=10, epoch_markets=6, epoch_rounds=5
        )

    def params(self) -> MechanismParams:
        shape = self.shape
        posted = self.posted_price
        if posted is None:
            posted = (shape.fees.quantile(0.5) + shape.costs.quantile(0.5)) // 2
        return MechanismParams(posted, self.call_a_bps, self.reserve_cost)


@dataclass(frozen=True, slots=True)
class _Gains:
    gains: list[int]
    welfare: list[int]

    def summary(self) -> dict[str, float]:
        n = max(1, len(self.gains))
        return {
            "mean_gain": round(sum(self.gains) / n, 3),
            "max_gain": max(self.gains, default=0),
            "loss_rate": round(sum(g < 0 for g in self.gains) / n, 4),
            "profitable_rate": round(sum(g > 0 for g in self.gains) / n, 4),
            "mean_welfare_change": round(sum(self.welfare) / n, 3),
        }


def _honest(mech: Mechanism, markets: Sequence[Market]) -> list[Outcome]:
    return [mech.clear(m.tasks, m.provers, seed=m.seed) for m in markets]


def _table(
    mech: Mechanism,
    policies: dict[str, Policy],
    markets: Sequence[Market],
    bases: Sequence[Outcome],
    shape: Shape,
) -> dict[str, list[tuple[int, int]]]:
    """Every policy's (gain, welfare change) in every market; (0, 0) where it cannot apply."""
    out: dict[str, list[tuple[int, int]]] = {}
    for name, policy in policies.items():
        row = []
        for m, base in zip(markets, bases, strict=True):
            plan: Plan | None = policy(m, shape)
            row.append((0, 0) if plan is None else gain(mech, m, plan, base))
        out[name] = row
    return out


def sealed_choice(table: dict[str, list[tuple[int, int]]], *, forced: bool = False) -> str | None:
    """The policy with the best mean gain, or None (honest) if no mean is positive.

    `forced`: the best policy even if its mean is not positive (an attacker set on
    deviating), so the lab can show what a sealed deviation risks.
    """
    best, best_mean = None, 0.0
    for name, row in table.items():
        mean = sum(g for g, _ in row) / max(1, len(row))
        if mean > best_mean or (forced and best is None):
            best, best_mean = name, mean
    return best


def honest_figures(
    mech: Mechanism, outcomes: Sequence[Outcome], optimum: Sequence[Outcome]
) -> dict[str, float | None]:
    ratios = [o.welfare / b.welfare for o, b in zip(outcomes, optimum, strict=True) if b.welfare]
    n = max(1, len(outcomes))
    return {
        "efficiency": round(sum(ratios) / len(ratios), 4) if ratios else None,
        "efficiency_min": round(min(ratios), 4) if ratios else None,
        "welfare": round(sum(o.welfare for o in outcomes) / n, 2),
        "surplus": round(sum(o.surplus for o in outcomes) / n, 2),
        "volume": round(sum(o.allocated_tasks for o in outcomes) / n, 2),
        "no_trade_rate": round(sum(o.allocated_tasks == 0 for o in outcomes) / n, 4),
    }


def run_lab(config: LabConfig) -> dict[str, object]:
    """Every figure of a lab run as one JSON-able document."""
    rng = random.Random(config.seed)
    shape, params = config.shape, config.params()
    test = [draw_market(shape, rng) for _ in range(config.markets)]
    train = [draw_market(shape, rng) for _ in range(config.train)]
    optimum = _honest(make_mechanism("optimum"), test)
    honest: dict[str, object] = {}
    deviations: dict[str, dict[str, object]] = {name: {} for name in DEVIATIONS}
    sealed_capacity: dict[str, str | None] = {}
    for name in config.mechanisms:
        mech = make_mechanism(name, params)
        bases, train_bases = _honest(mech, test), _honest(mech, train)
        honest[name] = honest_figures(mech, bases, optimum)
        for dev, policies in DEVIATIONS.items():
            learned = _table(mech, policies, train, train_bases, shape)
            choice = sealed_choice(learned)
            must = sealed_choice(learned, forced=True)
            if dev == "capacity misreport":
                sealed_capacity[name] = choice
                sealed_capacity[f"{name}/forced"] = must
            table = _table(mech, policies, test, bases, shape)
            informed = _Gains([], [])
            for i in range(len(test)):
                g, w = max((row[i] for row in table.values()), default=(0, 0))
                informed.gains.append(max(0, g))
                informed.welfare.append(w if g > 0 else 0)
            chosen = table[choice] if choice else [(0, 0)] * len(test)
            sealed = _Gains([g for g, _ in chosen], [w for _, w in chosen])
            paying = [w for row in table.values() for g, w in row if g > 0]
            harmful = round(sum(w < 0 for w in paying) / len(paying), 4) if paying else None
            lie = table[must] if must else [(0, 0)] * len(test)
            deviations[dev][name] = {
                # Of all (market, policy) pairs that pay, the share that lowered welfare.
                "informed": informed.summary() | {"harmful_share": harmful},
                "sealed": sealed.summary() | {"policy": choice or "honest"},
                "sealed_forced": _Gains([g for g, _ in lie], [w for _, w in lie]).summary()
                | {"policy": must or "honest"},
            }
    return {
        "config": _config_json(config, params),
        "mechanisms": honest,
        "deviations": deviations,
        "epochs": _epochs(config, params, sealed_capacity, rng),
    }


def _config_json(config: LabConfig, params: MechanismParams) -> dict[str, object]:
    s = config.shape
    return {
        "seed": config.seed,
        "markets": config.markets,
        "train": config.train,
        "tasks": s.tasks,
        "provers": s.provers,
        "fees": [s.fees.name, s.fees.low, s.fees.high],
        "costs": [s.costs.name, s.costs.low, s.costs.high],
        "capacity": list(s.capacity),
        "posted_price": params.posted_price,
        "call_a_bps": params.call_a_bps,
        "reserve_cost": params.reserve_cost,
        "rounds": config.rounds,
        "epoch_markets": config.epoch_markets,
        "epoch_rounds": config.epoch_rounds,
        "capacity_factor": config.capacity_factor,
    }


def _epochs(
    config: LabConfig,
    params: MechanismParams,
    sealed: dict[str, str | None],
    rng: random.Random,
) -> dict[str, dict[str, float]]:
    """Capacity misreport over `rounds` rounds, users redrawn every round.

    Off: the prover picks its capacity bid each round after seeing the round's bids.
    On: it declares once per epoch of E rounds, before the bids, what its sealed policy
    says, and may move at most a factor m from the last epoch's declaration (from its
    true capacity at the start).
    """
    from deploy.lab.agents import capacity_misreport

    policies = DEVIATIONS["capacity misreport"]
    shape = config.shape
    worlds = []
    for w in range(config.epoch_markets):
        world = draw_market(shape, rng)
        rounds = [
            with_users(world.provers, draw_users(shape, rng), random.Random(f"{w}/{r}"))
            for r in range(config.rounds)
        ]
        worlds.append((world.attacker, rounds))
    out: dict[str, dict[str, float]] = {}
    for name in config.mechanisms:
        mech = make_mechanism(name, params)
        off: list[int] = []
        on: dict[str, list[int]] = {"": [], "/forced": []}
        for attacker, rounds in worlds:
            true_cap = rounds[0].provers[attacker].capacity
            declared = dict.fromkeys(on, true_cap)
            for r, m in enumerate(rounds):
                m = Market(m.tasks, m.provers, attacker, m.partner, m.user, m.seed)
                base = mech.clear(m.tasks, m.provers, seed=m.seed)
                plans = [p(m, shape) for p in policies.values()]
                off.append(max([0] + [gain(mech, m, p, base)[0] for p in plans if p]))
                for kind, gains in on.items():
                    if r % config.epoch_rounds == 0:
                        policy = sealed.get(name + kind)
                        declared[kind] = _declare(true_cap, declared[kind], policy, config)
                    plan = capacity_misreport(declared[kind] / true_cap)(m, shape)
                    lied = declared[kind] != true_cap and plan is not None
                    gains.append(gain(mech, m, plan, base)[0] if lied and plan else 0)
        n = max(1, len(off))
        out[name] = {
            "off_mean_gain": round(sum(off) / n, 3),
            "off_profitable_rate": round(sum(g > 0 for g in off) / n, 4),
            "on_mean_gain": round(sum(on[""]) / n, 3),
            "on_loss_rate": round(sum(g < 0 for g in on[""]) / n, 4),
            "on_forced_mean_gain": round(sum(on["/forced"]) / n, 3),
            "on_forced_loss_rate": round(sum(g < 0 for g in on["/forced"]) / n, 4),
        }
    return out


def _declare(true_cap: int, last: int, policy: str | None, config: LabConfig) -> int:
    """The epoch's capacity: the sealed policy's target, within a factor m of `last`."""
    if policy is None:
        target = true_cap
    else:
        ratio = float(policy.split("x")[1])
        target = max(1, min(true_cap - 1, round(true_cap * ratio)))
    m = config.capacity_factor
    return max(-(-last // m), min(last * m, target, true_cap))
