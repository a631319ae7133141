"""Deviating agents: what each attack bids, and what the coalition gains by it.

A deviation is a named family of policies. A policy turns a market's true values into the
bids the coalition sends (a Plan); its gain is the coalition's utility at true values
under the plan's outcome less its utility when everyone bids honestly. Policies are given
relative to the attacker's own type and the public priors, so one policy means the same
thing in every market: that is what a sealed attacker, who cannot see the other bids,
commits to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from deploy.lab.markets import Market, Shape
from protocol.mechanism import Mechanism, Outcome, ProverBid, TaskBid


@dataclass(frozen=True, slots=True)
class Plan:
    """The bids a coalition sends and the true values its members hold."""

    tasks: tuple[TaskBid, ...]
    provers: tuple[ProverBid, ...]
    users: Mapping[str, int] = field(default_factory=dict)  # coalition task id -> true value
    costs: Mapping[str, int] = field(default_factory=dict)  # coalition prover id -> true cost
    fakes: frozenset[str] = frozenset()  # tasks nobody values; the coalition pays their charges


def utility(plan: Plan, out: Outcome) -> int:
    """The coalition's joint utility under `out`, at true values."""
    total = 0
    for task, value in plan.users.items():
        if task in out.charges:
            total += value - out.charges[task]
    for prover, cost in plan.costs.items():
        if prover in out.payments:
            total += out.payments[prover] - len(out.assignments[prover]) * cost
    return total - sum(out.charges.get(t, 0) for t in plan.fakes)


def true_welfare(plan: Plan, out: Outcome, market: Market) -> int:
    """Welfare at true values: fake tasks are worth nothing, Sybils cost their owner's cost."""
    value = {t.id: t.fee for t in market.tasks}
    cost = {p.id: p.cost for p in market.provers} | dict(plan.costs)
    worth = sum(value.get(t, 0) for batch in out.assignments.values() for t in batch)
    return worth - sum(len(batch) * cost[p] for p, batch in out.assignments.items())


Policy = Callable[[Market, Shape], Plan | None]  # None: the policy does not apply here


def honest_plan(market: Market, members: Plan) -> Plan:
    """The honest bids, with the coalition's real members (no Sybils, no fakes)."""
    real = {p.id for p in market.provers}
    return Plan(
        market.tasks,
        market.provers,
        members.users,
        {p: c for p, c in members.costs.items() if p in real},
    )


def gain(mech: Mechanism, market: Market, plan: Plan, base: Outcome) -> tuple[int, int]:
    """(the coalition's gain, the change in true welfare) from playing `plan`, against
    `base`, the mechanism's outcome on the honest bids."""
    honest = honest_plan(market, plan)
    out = mech.clear(plan.tasks, plan.provers, seed=market.seed)
    return (
        utility(plan, out) - utility(honest, base),
        true_welfare(plan, out, market) - true_welfare(honest, base, market),
    )


def _replace(provers: tuple[ProverBid, ...], j: int, *bids: ProverBid) -> tuple[ProverBid, ...]:
    return (*provers[:j], *bids, *provers[j + 1 :])


def _span(shape: Shape) -> int:
    return max(1, shape.costs.high - shape.costs.low)


def capacity_misreport(ratio: float) -> Policy:
    """Example 2 / Prop. 4: bid capacity ratio * s (at least 1, below s) at the true cost."""

    def plan(m: Market, shape: Shape) -> Plan | None:
        me = m.provers[m.attacker]
        lie = max(1, min(me.capacity - 1, round(me.capacity * ratio)))
        if me.capacity < 2:
            return None
        bid = ProverBid(me.id, lie, me.cost)
        return Plan(m.tasks, _replace(m.provers, m.attacker, bid), costs={me.id: me.cost})

    return plan


def fake_tasks(per_unit: float, quantile: float) -> Policy:
    """Example 3 / Prop. 5: per_unit * s fake task bids at the fee prior's quantile."""

    def plan(m: Market, shape: Shape) -> Plan | None:
        me = m.provers[m.attacker]
        fee = shape.fees.quantile(quantile)
        fakes = tuple(
            TaskBid(f"fake{i}", fee) for i in range(max(1, round(per_unit * me.capacity)))
        )
        return Plan(
            m.tasks + fakes,
            m.provers,
            costs={me.id: me.cost},
            fakes=frozenset(t.id for t in fakes),
        )

    return plan


def sybil_split(ratio: float, markup: float) -> Policy:
    """Example 4 / Prop. 6: split (s, c) into (ratio*s, c) and the rest at c + markup*span."""

    def plan(m: Market, shape: Shape) -> Plan | None:
        me = m.provers[m.attacker]
        if me.capacity < 2:
            return None
        first = max(1, min(me.capacity - 1, round(me.capacity * ratio)))
        a = ProverBid(me.id, first, me.cost)
        b = ProverBid(
            f"{me.id}~sybil", me.capacity - first, me.cost + math.ceil(markup * _span(shape))
        )
        return Plan(
            m.tasks,
            _replace(m.provers, m.attacker, a, b),
            costs={a.id: me.cost, b.id: me.cost},
        )

    return plan


def prover_collusion(markup: float, both: bool) -> Policy:
    """Prop. 8: two provers of different costs raise their cost bids (or the dearer one
    alone) by markup * span, to lift the price they are paid."""

    def plan(m: Market, shape: Shape) -> Plan | None:
        if m.partner is None:
            return None
        a, b = sorted((m.attacker, m.partner), key=lambda j: m.provers[j].cost)
        up = math.ceil(markup * _span(shape))
        provers = list(m.provers)
        for j in (a, b) if both else (b,):
            p = provers[j]
            provers[j] = ProverBid(p.id, p.capacity, p.cost + up)
        costs = {m.provers[j].id: m.provers[j].cost for j in (a, b)}
        return Plan(m.tasks, tuple(provers), costs=costs)

    return plan


def user_prover_collusion(quantile: float, markup: float) -> Policy:
    """Prop. 7: a user bids the fee prior's quantile instead of its value while the
    prover raises its cost by markup * span; they share what they make."""

    def plan(m: Market, shape: Shape) -> Plan | None:
        if m.user is None:
            return None
        me, user = m.provers[m.attacker], m.tasks[m.user]
        bid = ProverBid(me.id, me.capacity, me.cost + math.ceil(markup * _span(shape)))
        fee = TaskBid(user.id, shape.fees.quantile(quantile))
        tasks = (*m.tasks[: m.user], fee, *m.tasks[m.user + 1 :])
        return Plan(
            tasks,
            _replace(m.provers, m.attacker, bid),
            users={user.id: user.fee},
            costs={me.id: me.cost},
        )

    return plan


# Each deviation's policies, by name; the first column of every lab table.
DEVIATIONS: Final[dict[str, dict[str, Policy]]] = {
    "capacity misreport": {f"capacity x{r / 10}": capacity_misreport(r / 10) for r in range(1, 10)},
    "fake user tasks": {
        f"{k}s fakes at q{q}": fake_tasks(k, q)
        for k in (0.25, 0.5, 1.0, 2.0)
        for q in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    },
    "sybil split": {
        f"split {r}, +{d}": sybil_split(r, d) for r in (0.25, 0.5) for d in (0.02, 0.05, 0.2)
    },
    "prover collusion": {
        f"{'both' if both else 'dearer'} +{d}": prover_collusion(d, both)
        for both in (True, False)
        for d in (0.05, 0.15, 0.3)
    },
    "user-prover collusion": {
        f"fee q{q}, cost +{d}": user_prover_collusion(q, d)
        for q in (0.25, 0.9)
        for d in (0.0, 0.05, 0.15)
    },
}
