"""A prover's pure core: bid truthfully, prove what it is assigned, submit the proofs.

The core never proves anything itself: it asks its adapter to (`StartProving`) and hears
back when the batch is done (`ProvingDone`), so the same core drives a process pool in
the service and an instant fake prover in the simulation. Fault modes let a market be
tested against provers that never answer, answer wrongly, or answer after the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias, cast, get_args

from protocol.events import MessageReceived, Publish, Tick, WakeAt
from protocol.horizon import discard_below, drop_below
from protocol.messages import (
    AssignedTask,
    Assignment,
    CapacityDeclaration,
    Notices,
    ProofSubmission,
    ProverCostBid,
    Reject,
    RoundAnnouncement,
    SettlementNotice,
    TaskProof,
)

Fault: TypeAlias = Literal["none", "drop", "corrupt", "late"]
FAULTS: Final[tuple[str, ...]] = get_args(Fault)

# How many rounds back the core remembers what it bid and proved. Anything older is long
# settled, so a redelivery of it is ignored rather than acted on again.
RETAIN_ROUNDS: Final = 1024


@dataclass(frozen=True, slots=True)
class ProvingDone:
    """Event: the batch of `round` has been proven (in the order it was assigned)."""

    round: int
    proofs: list[TaskProof]
    now: int


@dataclass(frozen=True, slots=True)
class StartProving:
    """Effect: prove `tasks` with the market's workload and report back `ProvingDone`."""

    round: int
    tasks: list[AssignedTask]
    difficulty: int
    setup: int
    deadline: int


ProverEvent: TypeAlias = MessageReceived | Tick | ProvingDone
ProverEffect: TypeAlias = Publish | WakeAt | StartProving


@dataclass(slots=True)
class ProverStats:
    """What a prover has done and earned; money in the market's smallest unit."""

    epochs_declared: int = 0
    rounds_bid: int = 0
    batches_assigned: int = 0
    tasks_assigned: int = 0
    batches_submitted: int = 0
    proofs_sent: int = 0
    payments: int = 0
    paid_total: int = 0
    slashes: int = 0
    slashed_total: int = 0
    penalties: int = 0  # late batches paid less a penalty from the locked deposit
    penalty_total: int = 0
    rejects: int = 0
    reject_codes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """The counters as a flat mapping (reject codes are left out)."""
        return {
            "epochs_declared": self.epochs_declared,
            "rounds_bid": self.rounds_bid,
            "batches_assigned": self.batches_assigned,
            "tasks_assigned": self.tasks_assigned,
            "batches_submitted": self.batches_submitted,
            "proofs_sent": self.proofs_sent,
            "payments": self.payments,
            "paid_total": self.paid_total,
            "slashes": self.slashes,
            "slashed_total": self.slashed_total,
            "penalties": self.penalties,
            "penalty_total": self.penalty_total,
            "rejects": self.rejects,
        }


def corrupt_proof(proof: bytes) -> bytes:
    """A proof that cannot verify: every bit flipped (an empty proof gains a byte)."""
    if not proof:
        return b"\xff"
    return bytes(b ^ 0xFF for b in proof)


@dataclass(slots=True)
class _Batch:
    deadline: int
    parts: int = 1  # a large batch arrives as several assignment parts
    parts_in: set[int] = field(default_factory=set)
    tasks: list[AssignedTask] = field(default_factory=list)  # until every part is in
    submitted: bool = False
    settled: bool = False  # paid or slashed: a second notice (a resend) counts nothing


class ProverCore:
    """The state machine of one prover in one market.

    It trusts only messages signed by `coordinator` for `market`; anything else is
    dropped without a trace in its state. Capacity is declared once per epoch, at the
    first round of that epoch it sees; the cost bid is its true unit cost every round.
    """

    def __init__(
        self,
        key: str,
        coordinator: str,
        market: str,
        capacity: int,
        cost: int,
        fault: str = "none",
    ) -> None:
        if not key or not coordinator or not market:
            raise ValueError("key, coordinator and market must be non-empty")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            raise ValueError(f"cost must be a non-negative integer, got {cost!r}")
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        self.key = key
        self.coordinator = coordinator
        self.market = market
        self.capacity = capacity
        self.cost = cost
        self.fault: Fault = cast(Fault, fault)
        self.stats = ProverStats()
        # Epochs declared, with the last round seen in each: forgotten with that round.
        self._epochs: dict[int, int] = {}
        self._rounds_bid: set[int] = set()
        # Batches still open: assigned and not yet both submitted and settled.
        self._batches: dict[int, _Batch] = {}
        # Rounds whose batch was paid or slashed: all that is left of a closed batch, so a
        # resent assignment or notice of it is ignored until the round is forgotten.
        self._settled: set[int] = set()
        # Late-mode submissions waiting for their deadline to pass: round -> submission.
        self._held: dict[int, ProofSubmission] = {}
        self._floor = 0  # rounds below this are forgotten and ignored

    def handle(self, event: ProverEvent) -> list[ProverEffect]:
        """Advance on one event and return the effects the adapter must carry out."""
        if isinstance(event, MessageReceived):
            return self._on_message(event)
        if isinstance(event, ProvingDone):
            return self._on_proving_done(event)
        return self._on_tick(event.now)

    @property
    def pending_rounds(self) -> list[int]:
        """Rounds assigned to this prover whose proofs have not been submitted yet."""
        return sorted(r for r, b in self._batches.items() if not b.submitted)

    def _on_message(self, event: MessageReceived) -> list[ProverEffect]:
        msg = event.message
        if event.sender != self.coordinator or getattr(msg, "market", None) != self.market:
            return []
        if isinstance(msg, RoundAnnouncement):
            return self._on_announcement(msg)
        if isinstance(msg, Assignment):
            return self._on_assignment(msg)
        if isinstance(msg, SettlementNotice):
            self._on_settlement(msg)
        elif isinstance(msg, Notices):  # a prover that also bids as a user gets these
            for notice in msg.notices:
                if isinstance(notice, SettlementNotice):
                    self._on_settlement(notice)
        elif isinstance(msg, Reject):
            self.stats.rejects += 1
            self.stats.reject_codes[msg.code] = self.stats.reject_codes.get(msg.code, 0) + 1
        return []

    def _on_announcement(self, msg: RoundAnnouncement) -> list[ProverEffect]:
        if msg.round < self._floor or msg.round in self._rounds_bid:
            return []
        self._rounds_bid.add(msg.round)
        self._forget_before(msg.round - RETAIN_ROUNDS)
        effects: list[ProverEffect] = []
        declared = msg.epoch in self._epochs
        self._epochs[msg.epoch] = max(self._epochs.get(msg.epoch, msg.round), msg.round)
        if not declared:
            self.stats.epochs_declared += 1
            declaration = CapacityDeclaration(
                market=self.market, epoch=msg.epoch, capacity=self.capacity
            )
            effects.append(Publish(declaration, to=self.coordinator))
        self.stats.rounds_bid += 1
        bid = ProverCostBid(market=self.market, round=msg.round, cost=self.cost)
        effects.append(Publish(bid, to=self.coordinator))
        return effects

    def _on_assignment(self, msg: Assignment) -> list[ProverEffect]:
        if msg.round < self._floor or msg.round in self._settled:
            return []
        batch = self._batches.get(msg.round)
        if batch is None:
            batch = self._batches[msg.round] = _Batch(msg.prove_deadline, parts=msg.parts)
            self.stats.batches_assigned += 1
        elif msg.part in batch.parts_in or msg.parts != batch.parts:
            return []  # a redelivered part: already in hand
        batch.parts_in.add(msg.part)
        batch.tasks.extend(msg.tasks)
        self.stats.tasks_assigned += len(msg.tasks)
        if len(batch.parts_in) < batch.parts or self.fault == "drop":
            return []
        tasks, batch.tasks = batch.tasks, []
        start = StartProving(
            round=msg.round,
            tasks=tasks,
            difficulty=msg.difficulty,
            setup=msg.setup,
            deadline=msg.prove_deadline,
        )
        return [start]

    def _on_settlement(self, msg: SettlementNotice) -> None:
        batch = self._batches.get(msg.round)
        if batch is None or batch.settled:
            return  # a restarted coordinator's resend, or a batch long forgotten
        if msg.outcome == "penalty":  # comes first; the batch's paid notice follows
            self.stats.penalties += 1
            self.stats.penalty_total += msg.amount
            return
        batch.settled = True
        self._settled.add(msg.round)
        if batch.submitted and msg.round not in self._held:
            del self._batches[msg.round]
        if msg.outcome == "paid":
            self.stats.payments += 1
            self.stats.paid_total += msg.amount
        elif msg.outcome == "slashed":
            self.stats.slashes += 1
            self.stats.slashed_total += msg.amount

    def _on_proving_done(self, event: ProvingDone) -> list[ProverEffect]:
        batch = self._batches.get(event.round)
        if batch is None or batch.submitted or event.round in self._held:
            return []
        proofs = event.proofs
        if self.fault == "corrupt":
            proofs = [TaskProof(p.task_id, corrupt_proof(p.proof)) for p in proofs]
        submission = ProofSubmission(market=self.market, round=event.round, proofs=proofs)
        if self.fault == "late" and event.now <= batch.deadline:
            self._held[event.round] = submission
            return [WakeAt(batch.deadline + 1)]
        return [self._submit(submission)]

    def _on_tick(self, now: int) -> list[ProverEffect]:
        due = sorted(r for r in self._held if now > self._batches[r].deadline)
        return [self._submit(self._held.pop(r)) for r in due]

    def _forget_before(self, floor: int) -> None:
        """Forget rounds below `floor`: costs what is forgotten, not what is kept."""
        if floor <= self._floor:
            return
        discard_below(self._rounds_bid, self._floor, floor)
        discard_below(self._settled, self._floor, floor)
        for r, batch in drop_below(self._batches, self._floor, floor):
            if r in self._held:
                self._batches[r] = batch  # a late submission still waits on its deadline
        # Epochs come in round order, so the oldest sit at the front.
        while self._epochs:
            epoch, last_round = next(iter(self._epochs.items()))
            if last_round >= floor:
                break
            del self._epochs[epoch]
        self._floor = floor

    def size(self) -> dict[str, int]:
        """How many entries the working state holds, by kind: what must stay bounded."""
        return {
            "rounds_bid": len(self._rounds_bid),
            "batches": len(self._batches),
            "settled": len(self._settled),
            "held": len(self._held),
            "epochs": len(self._epochs),
        }

    def _submit(self, submission: ProofSubmission) -> Publish:
        batch = self._batches[submission.round]
        batch.submitted = True
        if batch.settled or submission.round < self._floor:
            del self._batches[submission.round]  # kept settled or past the floor only while held
        self.stats.batches_submitted += 1
        self.stats.proofs_sent += len(submission.proofs)
        return Publish(submission, to=self.coordinator)
