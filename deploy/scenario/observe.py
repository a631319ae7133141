"""What the participants heard from the coordinator, folded into outcomes by round.

Each participant shows the observer every message the coordinator sent it. Public
messages (a clearing result) reach everyone and count once; a restarted coordinator may
send a settlement or a reject again, so each is counted once by what it names. A
`replay` reject answers a copy a participant sent again of something already taken (a
user re-sends a bid it heard nothing about): it changes nothing, so it is not counted. Names,
not keys, appear in the outcome, and task ids are written `user/round.index`, so the
outcome of a run in memory and of the same run over a broker compare equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from coordinator.core import wire_task_id
from protocol.messages import (
    Assignment,
    ClearingResult,
    Message,
    Notices,
    Reject,
    Rejects,
    SettlementNotice,
    WithdrawalReceipt,
)

FIGURES = (
    "tasks_bid",
    "provers_bid",
    "allocated_provers",
    "allocated_tasks",
    "user_price",
    "prover_price",
    "surplus",
)
# Settlement outcome -> the per-party sum it adds to.
_SUMS = {
    "paid": "paid",
    "slashed": "slashed",
    "charged": "charged",
    "refunded": "refunded",
    "released": "released",
}


@dataclass
class RoundOutcome:
    """One round as its participants saw it."""

    round: int
    figures: dict[str, int | None] = field(default_factory=dict)
    assigned: dict[str, list[str]] = field(default_factory=dict)
    sums: dict[str, dict[str, int]] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)
    user_settlements: int = 0
    prover_settlements: int = 0

    def settled(self) -> bool:
        """Cleared, and every allocated task and batch has its settlement."""
        if not self.figures:
            return False
        return self.user_settlements >= (self.figures["allocated_tasks"] or 0) and (
            self.prover_settlements >= (self.figures["allocated_provers"] or 0)
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "round": self.round,
            **self.figures,
            "assigned": {p: sorted(t) for p, t in sorted(self.assigned.items())},
            **{k: dict(sorted(v.items())) for k, v in sorted(self.sums.items())},
            "refused": {p: sorted(c) for p, c in sorted(self.refused.items())},
        }


class Observer:
    """Folds (participant, message) pairs into RoundOutcomes."""

    def __init__(self, names: Mapping[str, str], on_change: Callable[[], None] | None = None):
        self.names = dict(names)  # key -> participant name
        self._labels: dict[str, str] = {}  # wire task id -> label
        self.rounds: dict[int, RoundOutcome] = {}
        self.on_change = on_change
        self._seen: set[tuple[object, ...]] = set()
        self._latest: dict[str, int] = {}  # participant -> latest round it was announced
        self.proofs: dict[str, dict[str, bytes]] = {}  # user -> task label -> verified proof

    def announced(self, party: str, round: int) -> None:
        self._latest[party] = max(self._latest.get(party, 0), round)

    def latest_round(self) -> int:
        """The newest round any participant has been announced (-1 before round 0)."""
        return max(self._latest.values(), default=-1)

    def bid(self, party: str, key: str, task_id: str) -> None:
        """Note a task bid, so its assignment can name it `u1/2.0` (u1's first in round 2)."""
        _, number, index = task_id.rsplit("-", 2)
        self._labels[wire_task_id(key, task_id)] = f"{party}/{number}.{index}"

    def task_label(self, wire_id: str) -> str:
        return self._labels.get(wire_id, wire_id)

    def _round(self, number: int) -> RoundOutcome:
        return self.rounds.setdefault(number, RoundOutcome(number))

    def _once(self, *key: object) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def note(self, party: str, message: Message) -> None:
        if isinstance(message, Notices):
            for notice in message.notices:
                self.note(party, notice)
            return
        if isinstance(message, Rejects):
            for entry in message.rejects:
                reject = Reject(
                    market=message.market,
                    code=entry.code,
                    reason=entry.reason,
                    ref=entry.ref,
                    round=entry.round,
                )
                self.note(party, reject)
            return
        if isinstance(message, ClearingResult) and self._once("clearing", message.round):
            self._round(message.round).figures = {f: getattr(message, f) for f in FIGURES}
        elif isinstance(message, Assignment) and self._once(
            "assignment", party, message.round, message.part
        ):
            labels = [self.task_label(t.task_id) for t in message.tasks]
            self._round(message.round).assigned.setdefault(party, []).extend(labels)
        elif isinstance(message, SettlementNotice):
            self._settlement(party, message)
        elif (
            isinstance(message, Reject)
            and message.code != "replay"  # a copy of a bid already taken: the first stands
            and self._once("reject", party, message.ref)
        ):
            number = message.round if message.round is not None else self._latest.get(party, 0)
            self._round(number).refused.setdefault(party, []).append(str(message.code))
        elif isinstance(message, WithdrawalReceipt) and self._once("withdrawal", message.ref):
            self._add(message.round, "withdrawn", party, message.amount)
        else:
            return
        if self.on_change is not None:
            self.on_change()

    def _settlement(self, party: str, message: SettlementNotice) -> None:
        if not self._once("settled", party, message.round, message.task_id, message.outcome):
            return
        row = self._round(message.round)
        if message.proof is not None and message.task_id is not None:
            _, number, index = message.task_id.rsplit("-", 2)
            self.proofs.setdefault(party, {})[f"{party}/{number}.{index}"] = message.proof
        if message.task_id is None:
            row.prover_settlements += 1
        elif message.outcome in ("charged", "refunded"):
            row.user_settlements += 1
        self._add(message.round, _SUMS.get(message.outcome, message.outcome), party, message.amount)

    def _add(self, number: int, kind: str, party: str, amount: int) -> None:
        sums = self._round(number).sums.setdefault(kind, {})
        sums[party] = sums.get(party, 0) + amount

    def round_settled(self, number: int) -> bool:
        return self._round(number).settled()

    def outcome(self, number: int) -> dict[str, object]:
        return self._round(number).as_dict()

    def settled(self, rounds: int) -> bool:
        return all(self._round(n).settled() for n in range(rounds))

    def outcomes(self, rounds: int) -> list[dict[str, object]]:
        return [self._round(n).as_dict() for n in range(rounds)]
