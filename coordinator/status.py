"""Status queries: a party asks what the market holds for it; the core answers from state.

A `status_query` changes nothing, so the coordinator does not record it: the record log
(and every snapshot and replay) holds only inputs that change state, and a party that
asks a thousand times adds nothing to it. What a query does cost is an answer (a scan of
the asker's tasks, a signature, a publish), so answers are rationed per round open for
bids: QUERIES_PER_PARTY to each asker and ANSWERS_PER_ROUND in all. The ration is soft
state, outside `Coordinator.state()`: a restarted coordinator starts it afresh, which
costs at most one more ration, never money.

Pure: no IO, no clock; the round comes from the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from coordinator.state import Refusal
from protocol.messages import STATUS_TASKS, AccountStatus, EpochCapacity, OpenTask
from protocol.rejects import RejectCode

if TYPE_CHECKING:
    from coordinator.core import Coordinator

QUERIES_PER_PARTY: Final = 4
"""Answers one party gets per round open for bids; a wallet needs one or two."""
ANSWERS_PER_ROUND: Final = 4096
"""Answers the coordinator gives per round in all, so queries cannot crowd out bids."""


class QueryRation:
    """How many status answers each party was given in the round open for bids."""

    def __init__(
        self, per_party: int = QUERIES_PER_PARTY, per_round: int = ANSWERS_PER_ROUND
    ) -> None:
        if per_party < 1 or per_round < 1:
            raise ValueError("status query rations must be >= 1")
        self.per_party = per_party
        self.per_round = per_round
        self._round = -1
        self._given: dict[str, int] = {}
        self._total = 0

    def take(self, party: str, bidding: int) -> str | None:
        """Count one answer to `party` in round `bidding`; the reason it is refused, if so."""
        if bidding != self._round:
            # A new round: last round's counts are forgotten, so memory is one round's askers.
            self._round, self._given, self._total = bidding, {}, 0
        given = self._given.get(party, 0)
        if given >= self.per_party:
            return f"{given} status answers already in round {bidding}; ask in the next"
        if self._total >= self.per_round:
            return f"the coordinator gave its {self.per_round} status answers of round {bidding}"
        self._given[party] = given + 1
        self._total += 1
        return None


def admit_query(
    ration: QueryRation, party: str, number: int, *, bidding: int, seen_rounds: int
) -> None:
    """Count an answer to `party`'s query naming round `number`, or refuse the query."""
    if number > bidding or number <= bidding - seen_rounds:
        raise Refusal(RejectCode.WRONG_ROUND, f"status queries name the current round, {bidding}")
    refusal = ration.take(party, bidding)
    if refusal is not None:
        raise Refusal(RejectCode.TOO_MANY_QUERIES, refusal)


def account_status(core: Coordinator, owner: str, ref: bytes) -> AccountStatus:
    """What `core` holds for `owner`, answering the query whose envelope is `ref`."""
    bidding = core.current_round
    epoch = bidding // core.params.epoch_rounds
    capacities = [
        EpochCapacity(epoch=e, capacity=c)
        for e in (epoch, epoch + 1)
        if (c := core.capacity(owner, e)) is not None
    ]
    mine = sorted(
        (t.round, t.task_id, t.fee, t.status)
        for t in core.tasks()
        if t.user == owner and t.status in ("open", "assigned")
    )
    batches = sorted(
        {t.round for t in core.tasks() if t.prover == owner and t.status == "assigned"}
    )
    return AccountStatus(
        market=core.params.market,
        round=bidding,
        epoch=epoch,
        ref=ref,
        balance=core.balance(owner),
        escrow=core.escrow(owner),
        deposit=core.deposit(owner),
        locked=core.locked(owner),
        capacities=capacities,
        open_batches=batches,
        open_tasks=[
            OpenTask(task_id=task_id, round=number, fee=fee, status=status)
            for number, task_id, fee, status in mine[:STATUS_TASKS]
        ],
        open_task_count=len(mine),
        faucet=core.genesis.faucet,
    )
