"""What the coordinator tells parties: each outgoing message, built from state and plans.

Pure constructors: the core decides and changes its state, these only phrase the
decision, so a rule in coordinator/core.py reads as the change it makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeAlias

from coordinator.clearing import Admission
from coordinator.settlement import SettlementPlan, TaskSettlement
from coordinator.state import Batch, Round, TaskKey, TaskState
from protocol.events import Publish
from protocol.mechanism.clearing import IndexedOutcome
from protocol.messages import (
    AssignedTask,
    Assignment,
    ClearingResult,
    FaucetGrant,
    FundingNotice,
    MarketParams,
    Notices,
    ProverRecord,
    Reject,
    RejectEntry,
    Rejects,
    RoundAnnouncement,
    SettlementNotice,
    UserReceipt,
    Withdrawal,
    WithdrawalReceipt,
)


def announcement(params: MarketParams, r: Round) -> RoundAnnouncement:
    """Round `r` is open for bids, under the market's rules."""
    return RoundAnnouncement(
        market=params.market,
        round=r.number,
        epoch=r.epoch,
        bid_deadline=r.bid_deadline,
        prove_deadline=r.prove_deadline,
        params=params,
    )


def clearing_result(
    market: str,
    r: Round,
    admission: Admission,
    outcome: IndexedOutcome,
    *,
    subsidy: int,
    tie_proof: bytes | None,
    carried: int,
    refused: Mapping[str, int],
    track_record: list[ProverRecord] | None,
) -> ClearingResult:
    """Round `r`'s public outcome; `refused` counts the inputs refused while it took bids."""
    return ClearingResult(
        market=market,
        round=r.number,
        mechanism=outcome.mechanism,
        tasks_bid=len(admission.task_bids.ids),
        provers_bid=len(admission.prover_bids),
        allocated_provers=outcome.allocated_provers,
        allocated_tasks=outcome.allocated_tasks,
        user_price=outcome.user_price,
        prover_price=outcome.prover_price,
        winners=sorted(outcome.winners),
        surplus=outcome.surplus + subsidy,
        prove_deadline=r.prove_deadline,
        tie_proof=tie_proof,
        offers=len(r.cost_bids),
        carried=carried,
        refused=dict(sorted(refused.items())),
        track_record=track_record,
    )


def assignment(
    params: MarketParams, r: Round, batch: Batch, tasks: Mapping[TaskKey, TaskState]
) -> Assignment:
    """The batch a winner of round `r` must prove, with each task's input."""
    return Assignment(
        market=params.market,
        round=r.number,
        prove_deadline=r.prove_deadline,
        difficulty=params.difficulty,
        setup=params.setup,
        payment=batch.payment,
        tasks=[AssignedTask(tasks[t].wire_id, tasks[t].task_input) for t in batch.tasks],
    )


def user_receipt(
    market: str,
    number: int,
    task_id: str,
    *,
    prover: str | None = None,
    price: int | None = None,
    carried_to: int | None = None,
) -> UserReceipt:
    """What round `number` did with a task: allocated to `prover`, carried, or neither."""
    return UserReceipt(
        market=market,
        round=number,
        task_id=task_id,
        allocated=prover is not None,
        price=price,
        prover=prover,
        carried_to=carried_to,
    )


def assigned(market: str, number: int, task_id: str, prover: str, price: int) -> UserReceipt:
    """Round `number` allocated the task to `prover` at `price`: `user_receipt` without its
    keyword defaults, for a clearing makes one for every task it allocates."""
    return UserReceipt(
        market=market, round=number, task_id=task_id, allocated=True, price=price, prover=prover
    )


UserNotice: TypeAlias = UserReceipt | SettlementNotice


class Told:
    """What each user hears of one clearing or settlement, gathered in order, so that a
    round of 100,000 tasks hands the service one message per user, not one per task."""

    __slots__ = ("market", "users")

    def __init__(self, market: str) -> None:
        self.market = market
        self.users: dict[str, list[UserNotice]] = {}

    def tell(self, user: str, notice: UserNotice) -> None:
        told = self.users.get(user)
        if told is None:
            told = self.users[user] = []
        told.append(notice)

    def publishes(self) -> list[Publish]:
        """One message per user, users in the order first told: a lone notice as itself,
        several as one `notices`, which means exactly what they would alone, in order."""
        return [
            Publish(told[0] if len(told) == 1 else Notices(market=self.market, notices=told), user)
            for user, told in self.users.items()
        ]


def released(market: str, task: TaskState) -> SettlementNotice:
    """A task bid no round allocated: its whole fee comes back."""
    return SettlementNotice(
        market=market, round=task.round, outcome="released", amount=task.fee, task_id=task.task_id
    )


def task_notices(
    market: str, number: int, task_id: str, settled: TaskSettlement, carried_to: int | None
) -> list[SettlementNotice | UserReceipt]:
    """What a task's user hears when its batch of round `number` settles.

    A rescued task (`carried_to`: the round it is offered in again) hears of its P_max and
    of its new round; a late task of a proven batch hears of its share of the penalty
    before its charge.
    """
    notices: list[SettlementNotice | UserReceipt] = []
    rescued = settled.outcome == "rescued"
    if settled.compensation or rescued:
        notices.append(
            SettlementNotice(
                market=market,
                round=number,
                outcome="rescued" if rescued else "compensated",
                amount=settled.compensation or settled.amount,
                task_id=task_id,
            )
        )
    if rescued and carried_to is not None:
        return [*notices, user_receipt(market, number, task_id, carried_to=carried_to)]
    closing = SettlementNotice(
        market=market,
        round=number,
        outcome="charged" if settled.outcome == "charged" else "refunded",
        amount=settled.amount,
        task_id=task_id,
        proof=settled.proof,
    )
    return [*notices, closing]


def batch_notices(market: str, number: int, plan: SettlementPlan) -> list[SettlementNotice]:
    """What a prover hears when its batch of round `number` settles: any penalty, then pay."""
    notices: list[SettlementNotice] = []
    if plan.penalty:
        notices.append(
            SettlementNotice(market=market, round=number, outcome="penalty", amount=plan.penalty)
        )
    outcome: Literal["paid", "slashed"] = "paid" if plan.proven else "slashed"
    return [
        *notices,
        SettlementNotice(market=market, round=number, outcome=outcome, amount=plan.prover_amount),
    ]


def withdrawal_receipt(
    market: str, msg: Withdrawal, ref: bytes, remaining: int
) -> WithdrawalReceipt:
    """The withdrawal `msg` (envelope `ref`) was paid; `remaining` is left in its account."""
    return WithdrawalReceipt(
        market=market,
        round=msg.round,
        ref=ref,
        account=msg.account,
        amount=msg.amount,
        remaining=remaining,
    )


def funding_notice(market: str, msg: FaucetGrant) -> FundingNotice:
    """The faucet grant `msg` was credited (or, repeated, had been)."""
    return FundingNotice(
        market=market, to=msg.to, account=msg.account, amount=msg.amount, nonce=msg.nonce
    )


def entry_refusals(market: str, refused: list[RejectEntry]) -> list[Reject | Rejects]:
    """The answer to a bulk's entries refused on their own: a `reject` for one, else one
    `rejects` (none when every entry stood)."""
    if not refused:
        return []
    if len(refused) == 1:
        (only,) = refused
        return [
            Reject(
                market=market, code=only.code, reason=only.reason, ref=only.ref, round=only.round
            )
        ]
    return [Rejects(market=market, rejects=refused)]
