"""Scripted participants: the real prover and user cores, told round by round what to do.

A scripted prover is a `ProverCore` whose cost, capacity and fault are set from the
scenario just before it sees the event they apply to (a round's announcement, or a
batch's assignment and proving); a scripted user is a `UserCore` whose fee draws are the
scenario's fees. Both stay deaf to announcements while the scenario has them offline, send
the withdrawals and faucet grants the scenario gives them, and show every message from
the coordinator to an `Observer`. They are pure, so the in-memory market and the
networked one run exactly the same participants.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from deploy.scenario.observe import Observer
from deploy.scenario.spec import FAULT_KINDS, Event, ProverSpec, Scenario, UserSpec
from protocol.events import MessageReceived, Publish
from protocol.identity import Identity
from protocol.messages import (
    Assignment,
    FaucetGrant,
    Message,
    RoundAnnouncement,
    TaskBidMessage,
    TaskBids,
    Withdrawal,
)
from prover_node.core import ProverCore, ProverEffect, ProverEvent, ProvingDone
from user_client.core import UserCore, UserEffect, UserEvent


def scenario_identity(seed: int, name: str) -> Identity:
    """The key of participant `name`: the same in memory and over a broker, for equal ties."""
    return Identity.from_seed(
        hashlib.sha256(f"proofmarket-scenario/{seed}/{name}".encode()).digest()
    )


@dataclass(frozen=True, slots=True)
class Script:
    """What the scenario's events ask of one participant."""

    name: str
    keys: Mapping[str, str]  # every participant's name -> public key
    market: str
    events: Sequence[Event] = field(default=())

    def absent(self, round: int) -> bool:
        """Offline in `round`, or not joined yet."""
        for e in self.events:
            if e.kind == "offline" and e.round <= round < (e.until or e.round + 1):
                return True
            if e.kind == "join" and round < e.round:
                return True
        return False

    def fault(self, round: int) -> str:
        faults = [e.kind for e in self.events if e.kind in FAULT_KINDS and e.round == round]
        return faults[-1] if faults else "none"

    def messages(self, round: int, nonce_base: int) -> list[Message]:
        """The withdrawals and grants this participant sends when `round` is announced."""
        out: list[Message] = []
        for i, e in enumerate(self.events):
            if e.round != round:
                continue
            if e.kind == "withdrawal":
                out.append(
                    Withdrawal(
                        market=self.market,
                        round=round,
                        account=e.account,  # type: ignore[arg-type]
                        amount=e.amount,
                    )
                )
            elif e.kind == "faucet_grant" and e.to is not None:
                grant = FaucetGrant(
                    market=self.market,
                    to=self.keys[e.to],
                    account=e.account,  # type: ignore[arg-type]
                    amount=e.amount,
                    nonce=nonce_base + i,
                )
                out.append(grant)
        return out


def events_for(scenario: Scenario, name: str) -> list[Event]:
    """The events a participant acts on (the faucet acts on every grant)."""
    if name == "faucet":
        return [e for e in scenario.events if e.kind == "faucet_grant"]
    return [e for e in scenario.events if e.party == name]


class ScriptedProver(ProverCore):
    """A prover core following its part of the scenario."""

    def __init__(
        self,
        spec: ProverSpec,
        key: str,
        coordinator: str,
        script: Script,
        observer: Observer,
        seed: int,
    ) -> None:
        super().__init__(key, coordinator, script.market, spec.capacity(0), spec.cost(0))
        self.spec = spec
        self.script = script
        self.observer = observer
        self.name = spec.name
        self._costs = random.Random(seed)  # the "random" strategy's draws
        self._acted: set[int] = set()

    def handle(self, event: ProverEvent) -> list[ProverEffect]:
        if isinstance(event, ProvingDone):
            self.fault = self.script.fault(event.round)  # type: ignore[assignment]
            return super().handle(event)
        if not isinstance(event, MessageReceived) or event.sender != self.coordinator:
            return super().handle(event)
        msg = event.message
        self.observer.note(self.name, msg)
        if isinstance(msg, Assignment):
            self.fault = self.script.fault(msg.round)  # type: ignore[assignment]
        if not isinstance(msg, RoundAnnouncement):
            return super().handle(event)
        if self.script.absent(msg.round):
            return []
        extra: list[ProverEffect] = []
        if msg.round not in self._acted:
            self._acted.add(msg.round)
            self.observer.announced(self.name, msg.round)
            self.cost = self._cost(msg.round)
            self.capacity = self.spec.capacity(msg.round)  # read when an epoch starts
            extra = [Publish(m, to=self.coordinator) for m in self.script.messages(msg.round, 0)]
        return [*super().handle(event), *extra]

    def _cost(self, round: int) -> int:
        if self.spec.strategy == "random":
            return self._costs.randint(*self.spec.cost_range)
        return self.spec.cost(round)


class _Draws(random.Random):
    """The user core's generator, with the next fees set by the scenario.

    UserCore draws each task's fee with `randint` and its input with `randbytes`; queued
    fees answer the first, the seeded generator the second, so inputs stay random and
    fees are exactly the scenario's.
    """

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.fees: list[int] = []

    def randint(self, a: int, b: int) -> int:
        return self.fees.pop(0) if self.fees else super().randint(a, b)


class ScriptedUser(UserCore):
    """A user core bidding the scenario's fees (the faucet is one with no bids)."""

    def __init__(
        self,
        spec: UserSpec,
        key: str,
        coordinator: str,
        script: Script,
        observer: Observer,
        seed: int,
    ) -> None:
        self.draws = _Draws(seed)
        super().__init__(
            key, coordinator, script.market, self.draws, 0, (0, 2**62), spec.carry_over
        )
        self.spec = spec
        self.script = script
        self.observer = observer
        self.name = spec.name
        self._generated = random.Random(seed + 1)
        self._acted: set[int] = set()

    def handle(self, event: UserEvent) -> list[UserEffect]:
        if not isinstance(event, MessageReceived) or event.sender != self.coordinator:
            return super().handle(event)
        msg = event.message
        self.observer.note(self.name, msg)
        if not isinstance(msg, RoundAnnouncement) or msg.round in self._acted:
            return super().handle(event)
        if self.script.absent(msg.round):
            return []
        self._acted.add(msg.round)
        self.observer.announced(self.name, msg.round)
        fees = list(self.spec.bids.get(msg.round, ()))
        if not fees and self.spec.generator_tasks:
            low, high = self.spec.fee_range
            fees = [self._generated.randint(low, high) for _ in range(self.spec.generator_tasks)]
        self.tasks_per_round = len(fees)
        self.draws.fees = fees
        effects = super().handle(event)
        self.draws.fees = []
        for effect in effects:
            if isinstance(effect.message, TaskBidMessage):
                self.observer.bid(self.name, self.key, effect.message.task_id)
            elif isinstance(effect.message, TaskBids):
                for entry in effect.message.bids:
                    self.observer.bid(self.name, self.key, entry.task_id)
        extra = [Publish(m, to=self.coordinator) for m in self.script.messages(msg.round, 1)]
        return [*effects, *extra]


def make_parties(
    scenario: Scenario, keys: Mapping[str, str], coordinator: str, observer: Observer
) -> dict[str, ScriptedProver | ScriptedUser]:
    """Every participant of `scenario` (and its faucet or subsidy account), by name."""
    market = scenario.params.market
    parties: dict[str, ScriptedProver | ScriptedUser] = {}
    for i, p in enumerate(scenario.provers):
        script = Script(p.name, keys, market, events_for(scenario, p.name))
        seed = scenario.seed * 1000 + i
        parties[p.name] = ScriptedProver(p, keys[p.name], coordinator, script, observer, seed)
    for i, u in enumerate(scenario.users):
        script = Script(u.name, keys, market, events_for(scenario, u.name))
        seed = scenario.seed * 1000 + 500 + i
        parties[u.name] = ScriptedUser(u, keys[u.name], coordinator, script, observer, seed)
    for name in scenario.extra_parties:
        spec = UserSpec(name=name, bids={}, balance=0)
        script = Script(name, keys, market, events_for(scenario, name))
        parties[name] = ScriptedUser(spec, keys[name], coordinator, script, observer, 0)
    return parties
