"""Shared drivers for the coordinator tests: a small market and a message-sending harness."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from coordinator.core import Coordinator
from coordinator.records import CoordinatorEffect, CoordinatorEvent
from coordinator.state import OpeningBalances
from protocol.events import MessageReceived, Publish, Record, Tick
from protocol.messages import (
    AssignedTask,
    Assignment,
    CapacityDeclaration,
    FaucetGrant,
    MarketParams,
    Message,
    Notices,
    ProofSubmission,
    ProverCostBid,
    Reject,
    TaskBidMessage,
    TaskProof,
    Withdrawal,
)
from protocol.workload import prove_batch


def replayed(core: Coordinator, events: Iterable[CoordinatorEvent]) -> Coordinator:
    """`core` after handling recorded `events`, their effects dropped (carried out before)."""
    for event in events:
        core.handle(event)
    return core


MARKET = "test"
P_MAX = 10
START = 100
BID_MS = 100
PROVE_MS = 100


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


COORD = key("coordinator")
USERS = [key(f"user{i}") for i in range(4)]
PROVERS = [key(f"prover{i}") for i in range(3)]
FAUCET = key("faucet")


def params(**changes: object) -> MarketParams:
    base: dict[str, object] = {
        "market": MARKET,
        "p_max": P_MAX,
        "epoch_rounds": 2,
        "capacity_factor": 2,
        "mechanism": "prooph",
        "difficulty": 1,
        "setup": 0,
        "bid_window_ms": BID_MS,
        "prove_window_ms": PROVE_MS,
    }
    base.update(changes)
    return MarketParams(**base)  # type: ignore[arg-type]


def genesis(balance: int = 100, deposit: int = 100, faucet: str | None = None) -> OpeningBalances:
    return OpeningBalances(
        balances=dict.fromkeys(USERS, balance),
        deposits=dict.fromkeys(PROVERS, deposit),
        faucet=faucet,
    )


class Market:
    """A coordinator plus a log of every event it accepted, driven by hand."""

    def __init__(self, coordinator: Coordinator | None = None, **param_changes: object) -> None:
        self.params = params(**param_changes)
        self.coordinator = coordinator or Coordinator(self.params, genesis(), COORD, START)
        self.recorded: list[CoordinatorEvent] = []
        self.last_event: CoordinatorEvent | None = None
        self._seq = 0

    def feed(self, event: CoordinatorEvent) -> list[CoordinatorEffect]:
        self.last_event = event
        effects = self.coordinator.handle(event)
        self.recorded.extend(e.event for e in effects if isinstance(e, Record))
        return effects

    def send(
        self, sender: str, message: Message, now: int, ref: bytes | None = None
    ) -> list[CoordinatorEffect]:
        if ref is None:
            self._seq += 1
            ref = self._seq.to_bytes(16, "big")
        return self.feed(MessageReceived(sender, message, ref, now))

    def tick(self, now: int) -> list[CoordinatorEffect]:
        return self.feed(Tick(now))

    def declare(self, prover: str, capacity: int, epoch: int = 0, now: int = START):
        return self.send(
            prover, CapacityDeclaration(market=MARKET, epoch=epoch, capacity=capacity), now
        )

    def cost_bid(self, prover: str, cost: int, round: int = 0, now: int = START):
        return self.send(prover, ProverCostBid(market=MARKET, round=round, cost=cost), now)

    def task_bid(
        self,
        user: str,
        task_id: str,
        fee: int,
        round: int = 0,
        now: int = START,
        carry_over: bool = False,
    ) -> list[CoordinatorEffect]:
        bid = TaskBidMessage(
            market=MARKET,
            round=round,
            task_id=task_id,
            fee=fee,
            task_input=task_id.encode(),
            carry_over=carry_over,
        )
        return self.send(user, bid, now)

    def withdraw(
        self,
        owner: str,
        amount: int,
        account: str = "deposit",
        round: int = 0,
        now: int = START,
    ) -> list[CoordinatorEffect]:
        msg = Withdrawal(market=MARKET, round=round, account=account, amount=amount)  # type: ignore[arg-type]
        return self.send(owner, msg, now)

    def grant(
        self,
        to: str,
        amount: int,
        nonce: int,
        account: str = "balance",
        sender: str = FAUCET,
        now: int = START,
    ) -> list[CoordinatorEffect]:
        msg = FaucetGrant(market=MARKET, to=to, account=account, amount=amount, nonce=nonce)  # type: ignore[arg-type]
        return self.send(sender, msg, now)

    def prove(
        self, prover: str, assignment: Assignment, now: int, corrupt: Sequence[str] = ()
    ) -> list[CoordinatorEffect]:
        return self.send(prover, proofs_for(assignment, corrupt), now)


def proofs_for(assignment: Assignment, corrupt: Sequence[str] = ()) -> ProofSubmission:
    tasks: list[AssignedTask] = list(assignment.tasks)
    proofs = prove_batch([t.task_input for t in tasks], difficulty=assignment.difficulty, setup=0)
    return ProofSubmission(
        market=assignment.market,
        round=assignment.round,
        proofs=[
            TaskProof(t.task_id, bytes(32) if t.task_id in corrupt else p)
            for t, p in zip(tasks, proofs, strict=True)
        ],
    )


def published(effects: Sequence[CoordinatorEffect], kind: type[Message]) -> list[Publish]:
    """The messages of `kind` in `effects`, each notice of a `notices` as its own Publish."""
    return [
        each
        for e in effects
        if isinstance(e, Publish)
        for each in (
            [Publish(n, e.to) for n in e.message.notices]
            if isinstance(e.message, Notices) and kind is not Notices
            else [e]
        )
        if isinstance(each.message, kind)
    ]


def reject_codes(effects: Sequence[CoordinatorEffect]) -> list[str]:
    return [e.message.code for e in published(effects, Reject)]  # type: ignore[attr-defined]
