"""The coordinator's state, as plain values: tasks, rounds, batches, provers.

Only `coordinator.core` changes these (`coordinator.market_state` holds them), a task
through its transitions (`assign`, `carry`, `rescue`, `close`); the plan functions
(`bids`, `proofs`, `clearing`, `settlement`, ...) read them and return what should change.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, TypeAlias

import msgspec

from protocol.rejects import RejectCode

TaskStatus: TypeAlias = Literal["open", "assigned", "charged", "refunded", "released"]
TaskKey: TypeAlias = tuple[str, str]
"""A task belongs to the user who bid it: (user key, the user's own task id)."""


def wire_task_id(user: str, task_id: str) -> str:
    """The id provers see for a user's task: 32 hex digits, stable, distinct across users.

    Users choose their own task ids, so two users may pick the same one; provers see a
    batch from many users, so the wire carries a hash of owner and id instead.
    """
    digest = hashlib.blake2b(
        f"{user}/{task_id}".encode(), digest_size=16, person=b"proofmarket-task"
    )
    return digest.hexdigest()


class OpeningBalances(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The money a market starts with: users' balances and provers' free deposits.

    `faucet`, when set, is the one key whose signed `FaucetGrant`s bring new money in
    later; without it the genesis is all the money there will ever be.
    """

    balances: dict[str, int] = {}
    deposits: dict[str, int] = {}
    faucet: str | None = None


class Phase(Enum):
    """Where a round is: taking bids, waiting for proofs, or settled."""

    BID = "bid"
    PROVE = "prove"
    SETTLED = "settled"


@dataclass(slots=True)
class TaskState:
    """One task bid, from acceptance to settlement."""

    task_id: str
    user: str
    wire_id: str
    fee: int
    task_input: bytes
    carry_over: bool
    round: int
    status: TaskStatus = "open"
    prover: str | None = None
    price: int | None = None
    settlements: int = 0
    carried_from: int | None = None
    rescued_from: int | None = None  # the round whose failed batch handed it on
    failed_by: str | None = None  # the prover that failed it: never offered it again

    def assign(self, prover: str | None, price: int | None) -> None:
        self.status, self.prover, self.price = "assigned", prover, price

    def carry(self, into: int) -> None:
        """Unallocated, it stands once more, in round `into`."""
        self.carried_from, self.round = self.round, into

    def rescue(self, into: int, *, failed_in: int, failed_by: str) -> None:
        """Its batch of round `failed_in` failed: open again in round `into`, fee escrowed."""
        self.status, self.prover, self.price = "open", None, None
        self.rescued_from, self.failed_by, self.round = failed_in, failed_by, into

    def close(self, status: TaskStatus) -> None:
        """Settled for good: charged, refunded or released (the invariants count these).

        Its input goes: no proof of it will be checked again, and a closed task stays in
        the working state for the duplicate horizon, 64 rounds of a market's tasks.
        """
        self.status = status
        self.settlements += 1
        self.task_input = b""


@dataclass(slots=True)
class CostBid:
    """A prover's cost bid in a round, with the envelope that carried it and the prover's
    tie-key prefix under the round's seed (taken as the bid comes in, like a task bid's)."""

    cost: int
    ref: bytes
    tie: int = 0


@dataclass(slots=True)
class Batch:
    """The tasks one winning prover must prove in a round, and what it will be paid."""

    prover: str
    round: int
    tasks: tuple[TaskKey, ...]
    payment: int
    proofs: dict[TaskKey, bytes | None] = field(default_factory=dict)  # None: invalid proof
    settled: bool = False
    assigned_ms: int = 0  # when the clearing assigned it (core event time)
    finished_ms: int | None = None  # when its last proof arrived
    late: list[TaskKey] = field(default_factory=list)  # tasks whose proof came after the deadline


@dataclass(slots=True)
class Round:
    """One round: its deadlines, phase, task bids, cost bids and batches.

    The task bids are kept as a book of columns, aligned and in the order they came in:
    `tasks` (keys), `fees`, and `ties` (each bid's tie-key prefix under the round's seed),
    so the clearing reads arrays and never walks the tasks; `excluded` holds the provers
    that failed a task the round rescues. Only `enter` adds to them, and `fees`, `ties` and
    `excluded` are dropped once the round has cleared.
    """

    number: int
    epoch: int
    bid_deadline: int
    prove_deadline: int
    phase: Phase = Phase.BID
    tasks: list[TaskKey] = field(default_factory=list)
    cost_bids: dict[str, CostBid] = field(default_factory=dict)
    batches: dict[str, Batch] = field(default_factory=dict)
    fees: array[int] = field(default_factory=lambda: array("q"))
    ties: array[int] = field(default_factory=lambda: array("Q"))
    excluded: set[str] = field(default_factory=set)

    def enter(self, key: TaskKey, task: TaskState, tie: int) -> None:
        """Task `key` stands in this round, with its tie-key prefix `tie`."""
        self.tasks.append(key)
        self.fees.append(task.fee)
        self.ties.append(tie)
        if task.failed_by is not None:
            self.excluded.add(task.failed_by)

    def close_book(self) -> None:
        """The round has cleared: its columns are no longer read."""
        self.fees, self.ties, self.excluded = array("q"), array("Q"), set()


@dataclass(slots=True)
class TrackRecord:
    """A prover's record: batches won, proven (late among them), failed, and recent history.

    `times` are the proving times of its last proven batches and `recent` the (round,
    failed) of its last settled ones, each kept to a bound (coordinator.track_record).
    """

    won: int = 0
    proved: int = 0
    late: int = 0
    failed: int = 0
    times: list[int] = field(default_factory=list)
    recent: list[tuple[int, bool]] = field(default_factory=list)


@dataclass(slots=True)
class ProverState:
    """What the market remembers of a prover between rounds."""

    capacities: dict[int, int] = field(default_factory=dict)  # epoch -> declared capacity
    open_rounds: set[int] = field(default_factory=set)  # rounds with an unsettled batch
    record: TrackRecord = field(default_factory=TrackRecord)
    # Its last will came after its last input: offline, so its cost bid is left out of
    # the clearing (it would win a batch it cannot see); any input of its own clears it.
    offline: bool = False
    # The connection stamps of the newest will and `prover_online` taken (-1: none), which
    # order the two (coordinator.presence).
    will_at: int = -1
    online_at: int = -1


class Refusal(Exception):
    """A message the market rules refuse; the core answers it with a signed reject."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
