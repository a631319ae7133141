"""Per-round market figures, folded from what the coordinator publishes.

One fold serves the live view of a running coordinator (it logs each row as it changes)
and the report of a finished market (`proofmarket sim`, `proofmarket testnet`). It reads
only the public round announcement and clearing result and the settlement notices, so an
observer with a copy of those messages computes the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from protocol.horizon import drop_below
from protocol.messages import (
    ClearingResult,
    Message,
    Notices,
    RoundAnnouncement,
    SettlementNotice,
)
from protocol.rejects import RejectCode

if TYPE_CHECKING:
    from coordinator.core import Coordinator

REPORT_FIELDS = (
    "round",
    "tasks_bid",
    "provers_bid",
    "allocated_provers",
    "allocated_tasks",
    "user_price",
    "prover_price",
    "proofs_valid",
    "slashed_provers",
    "refunded_tasks",
    "surplus",
    "offers",
    "carried",
    "late",
    "refused",
)

_COUNTERS = {
    "charged": "proofs_valid",
    "slashed": "slashed_provers",
    "refunded": "refunded_tasks",
    "rescued": "rescued_tasks",
}
# Reported only when a round has some, so a market without rescue reports as before.
_WHEN_ANY = ("rescued_tasks",)


class RoundTally:
    """Rows by round: the clearing's figures, settlement counts, and the round's phase.

    With `keep_rounds`, rows more than that many rounds behind the newest announced one
    are dropped (a live view's window); without, every row is kept for a report.
    """

    def __init__(self, keep_rounds: int | None = None) -> None:
        if keep_rounds is not None and keep_rounds < 1:
            raise ValueError(f"keep_rounds must be >= 1, got {keep_rounds}")
        self.rows: dict[int, dict[str, object]] = {}
        self.keep_rounds = keep_rounds
        self._floor = 0

    def note(self, message: Message) -> int | None:
        """Fold one outgoing message in; the round it changed, if any (of a `notices`,
        the last one it changed)."""
        if isinstance(message, Notices):
            changed = None
            for notice in message.notices:
                noted = self.note(notice)
                changed = changed if noted is None else noted
            return changed
        if isinstance(message, RoundAnnouncement):
            self.rows.setdefault(
                message.round,
                {"round": message.round, "phase": "bid", "bid_deadline": message.bid_deadline},
            )
            if self.keep_rounds is not None:
                floor = message.round - self.keep_rounds + 1
                drop_below(self.rows, self._floor, floor)
                self._floor = max(self._floor, floor)
            return message.round
        if isinstance(message, ClearingResult | SettlementNotice) and message.round < self._floor:
            return None  # a round already out of the window
        if isinstance(message, ClearingResult):
            row = self._row(message.round)
            row.update(
                phase="prove" if message.allocated_tasks else "settled",
                tasks_bid=message.tasks_bid,
                provers_bid=message.provers_bid,
                allocated_provers=message.allocated_provers,
                allocated_tasks=message.allocated_tasks,
                user_price=message.user_price,
                prover_price=message.prover_price,
                surplus=message.surplus,
                offers=message.offers,
                carried=message.carried,
                late=message.refused.get(RejectCode.LATE_BID, 0),
                refused=dict(message.refused),
            )
            return message.round
        if isinstance(message, SettlementNotice):
            row = self._row(message.round)
            counter = _COUNTERS.get(message.outcome)
            if counter is not None:
                row[counter] = _int(row[counter]) + 1
            if message.outcome in ("charged", "refunded", "rescued"):
                row["settled_tasks"] = _int(row["settled_tasks"]) + 1
                if row["settled_tasks"] == row.get("allocated_tasks"):
                    row["phase"] = "settled"
            return message.round
        return None

    def _row(self, number: int) -> dict[str, object]:
        row = self.rows.setdefault(number, {"round": number})
        for counter in (*_COUNTERS.values(), "settled_tasks"):
            row.setdefault(counter, 0)
        return row

    def summaries(self) -> list[dict[str, object]]:
        """The cleared rounds in order, each with REPORT_FIELDS (and `rescued_tasks`, if any)."""
        return [
            {key: self.rows[n].get(key) for key in REPORT_FIELDS}
            | {key: self.rows[n][key] for key in _WHEN_ANY if self.rows[n].get(key)}
            for n in sorted(self.rows)
            if "tasks_bid" in self.rows[n]
        ]


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def round_summaries(outputs: Iterable[Message]) -> list[dict[str, object]]:
    """Per-round figures of every cleared round, in round order."""
    tally = RoundTally()
    for message in outputs:
        tally.note(message)
    return tally.summaries()


def market_report(
    coordinator: Coordinator, outputs: Iterable[Message] | RoundTally
) -> dict[str, object]:
    """The `proofmarket sim --json` document: rounds, ledger totals, invariants.

    `outputs` is what the coordinator published, or a tally already folded from it.
    """
    from coordinator.invariants import check_invariants

    ledger = coordinator.accounts
    rounds = outputs.summaries() if isinstance(outputs, RoundTally) else round_summaries(outputs)
    return {
        "rounds": rounds,
        "ledger": {
            "funded": ledger.funded(),
            "withdrawn": ledger.withdrawn(),
            "total": ledger.total(),
            "conserved": ledger.conserved(),
        },
        "invariants_ok": not check_invariants(coordinator),
        "slashed": sorted(coordinator.slashes),
        "open_tasks": sum(t.status in ("open", "assigned") for t in coordinator.tasks()),
    }


def honest_losses(
    report: dict[str, object], honest_provers: Iterable[str], *, users_bid: bool = True
) -> list[str]:
    """Why a run in which every user and the `honest_provers` behaved failed them, if it did.

    A run fails when a round did not settle, an honest prover was slashed, a task bid that
    was accepted is still open at the end, or a round took no task bid at all although
    live honest users bid in every round (every one of their bids refused); `users_bid`
    says whether they did.
    """
    problems = []
    rounds = [r for r in report.get("rounds", []) if isinstance(r, dict)]  # type: ignore[attr-defined]
    if not report.get("finished", True) or not report.get("invariants_ok", False):
        problems.append("the market did not finish its rounds with its invariants intact")
    slashed = set(report.get("slashed", []))  # type: ignore[call-overload]
    for prover in sorted(slashed & set(honest_provers)):
        problems.append(f"honest prover {prover[:12]} was slashed")
    if _int(report.get("open_tasks", 0)):
        problems.append(f"{report['open_tasks']} accepted task bids were left open")
    for row in rounds if users_bid else []:
        if _int(row.get("tasks_bid", 0)) == 0:
            problems.append(f"round {row.get('round')} took no task bid from its honest users")
    return problems
