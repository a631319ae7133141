"""A user's pure core: post task bids each round, follow them to their settlement.

A user bids `tasks_per_round` tasks on every round it hears announced, with fees drawn
from its range and inputs drawn from its generator, then keeps score: which bids were
accepted and allocated, what it was charged or refunded, and whether the proof it paid
for really verifies (it checks each one itself rather than trusting the coordinator).

`UserFleet` runs many such users, each with its own key, inside one core: the shape of a
load generator acting for M identities from one process.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Final, Literal, TypeAlias

from protocol.envelope import bid_ref
from protocol.events import MessageReceived, Publish, Tick
from protocol.horizon import discard_below, drop_below
from protocol.messages import (
    TASK_BIDS_MAX,
    BidReceipt,
    BidReceipts,
    ClearingResult,
    Notices,
    Reject,
    Rejects,
    RoundAnnouncement,
    SettlementNotice,
    TaskBidEntry,
    TaskBidMessage,
    TaskBids,
    UserReceipt,
)
from protocol.rejects import RejectCode

UserEvent: TypeAlias = MessageReceived | Tick
UserEffect: TypeAlias = Publish
Verifier: TypeAlias = Callable[[bytes, bytes, int], bool]

TASK_INPUT_BYTES: Final = 32
# How many rounds back a user waits on a task it bid; a task still open that long after
# its round is given up. Settled and refused tasks leave at once: a later copy of their
# settlement or refusal names a task (or an envelope) the user no longer holds, and is
# ignored. So what a user holds is bounded by its tasks still open, not by this horizon.
RETAIN_ROUNDS: Final = 1024
# How many rounds behind the newest announcement a user still bids on one it had not
# seen; an older one is long closed for bids, so only this window is remembered.
ANNOUNCE_ROUNDS: Final = 64

TaskProgress: TypeAlias = Literal["bid", "allocated", "unallocated"]
"""How far an open task bid has got, as the user sees it (the coordinator keeps `TaskState`).

A settled or refused task is not held at all (`UserCore.task_state` is None)."""


def _workload_verify(task_input: bytes, proof: bytes, difficulty: int) -> bool:
    from protocol import workload

    return workload.verify(task_input, proof, difficulty=difficulty)


@dataclass(slots=True)
class UserSummary:
    """A user's running score; money in the market's smallest unit."""

    rounds_seen: int = 0
    tasks_bid: int = 0
    fees_bid: int = 0
    bids_accepted: int = 0
    allocated: int = 0
    unallocated: int = 0
    carried: int = 0
    charged: int = 0
    charged_total: int = 0
    refunded: int = 0
    refunded_total: int = 0
    released: int = 0
    released_total: int = 0
    rescued: int = 0  # failed tasks offered again, P_max credited for each (not closed)
    rescued_total: int = 0
    compensated: int = 0  # late tasks' shares of their provers' penalties
    compensated_total: int = 0
    proofs_verified: int = 0
    proofs_invalid: int = 0
    rejects: int = 0
    bids_rejected: int = 0  # task bids the coordinator refused: closed, nothing escrowed

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def add(self, other: UserSummary) -> None:
        """Fold `other` into this summary (for a fleet's total)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(slots=True)
class _Task:
    round: int
    fee: int
    task_input: bytes
    difficulty: int
    state: TaskProgress = "bid"
    refs: tuple[bytes, ...] = ()  # envelopes it went out in, until acknowledged
    receipted: bool = False  # its bid receipt was counted: a resent receipt counts nothing
    compensated_in: tuple[int, ...] = ()  # rounds whose compensation was counted


def _parse_fee_range(fee_range: tuple[int, int]) -> tuple[int, int]:
    low, high = fee_range
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"fee range bounds must be integers, got {fee_range!r}")
    if low < 0 or high < low:
        raise ValueError(f"fee range must satisfy 0 <= low <= high, got {fee_range!r}")
    return low, high


class UserCore:
    """The state machine of one user in one market.

    Only messages signed by `coordinator` for `market` count; the rest are ignored.
    """

    def __init__(
        self,
        key: str,
        coordinator: str,
        market: str,
        rng: random.Random,
        tasks_per_round: int,
        fee_range: tuple[int, int],
        carry_over: bool = False,
        *,
        verify: Verifier | None = None,
        rounds: int | None = None,
    ) -> None:
        if rounds is not None and (isinstance(rounds, bool) or rounds < 0):
            raise ValueError(f"rounds must be >= 0, got {rounds!r}")
        if not key or not coordinator or not market:
            raise ValueError("key, coordinator and market must be non-empty")
        if isinstance(tasks_per_round, bool) or tasks_per_round < 0:
            raise ValueError(f"tasks_per_round must be >= 0, got {tasks_per_round!r}")
        self.key = key
        self.coordinator = coordinator
        self.market = market
        self.rng = rng
        self.tasks_per_round = tasks_per_round
        self.fee_range = _parse_fee_range(fee_range)
        self.carry_over = carry_over
        self.rounds = rounds
        self.last_prove_deadline: int | None = None
        self.summary = UserSummary()
        self._verify: Verifier = verify or _workload_verify
        self._rounds: set[int] = set()  # rounds of the announcement window already bid in
        self._announce_floor = 0  # announcements below this are ignored
        self._tasks: dict[str, _Task] = {}  # held tasks: the open ones
        self._by_round: dict[int, dict[str, None]] = {}  # round -> its held task ids, in bid order
        # Bid refs of task bids sent and not yet acknowledged: a Reject names the bid it
        # refuses (a single bid's envelope, or an entry of a bulk one), not the task, and
        # a receipt names the bid it takes.
        self._unacknowledged: dict[bytes, str] = {}
        # Bulk envelopes with entries still unacknowledged: a refusal of the whole
        # envelope names it, and refuses each entry it still holds.
        self._entries: dict[bytes, tuple[bytes, ...]] = {}  # envelope ref -> its bid refs
        self._outstanding: dict[bytes, int] = {}  # envelope ref -> entries unacknowledged
        self._envelope_of: dict[bytes, bytes] = {}  # bid ref -> its bulk envelope's ref
        self._floor = 0
        self._first_round: int | None = None
        self._latest_round = -1

    def handle(self, event: UserEvent) -> list[UserEffect]:
        """Advance on one event and return the messages to publish."""
        if not isinstance(event, MessageReceived):
            return []  # a user has no deadlines of its own
        msg = event.message
        if event.sender != self.coordinator or getattr(msg, "market", None) != self.market:
            return []
        if isinstance(msg, RoundAnnouncement):
            return self._on_announcement(msg)
        if isinstance(msg, ClearingResult):
            # Round r cleared means round r+1 opened: the market moved on even if its
            # announcement never reached us.
            self._latest_round = max(self._latest_round, msg.round + 1)
        elif isinstance(msg, BidReceipt):
            self._on_bid_receipt(msg.round, msg.ref)
        elif isinstance(msg, BidReceipts):
            for entry in msg.receipts:
                self._on_bid_receipt(entry.round, entry.ref)
        elif isinstance(msg, UserReceipt):
            self._on_receipt(msg)
        elif isinstance(msg, SettlementNotice):
            self._on_settlement(msg)
        elif isinstance(msg, Notices):
            for notice in msg.notices:
                self._on_notice(notice)
        elif isinstance(msg, Reject):
            self.summary.rejects += 1
            self._on_reject(msg.code, msg.ref)
        elif isinstance(msg, Rejects):
            self.summary.rejects += len(msg.rejects)
            for refused in msg.rejects:
                self._on_reject(refused.code, refused.ref)
        return []

    def _on_notice(self, notice: UserReceipt | SettlementNotice) -> None:
        if isinstance(notice, UserReceipt):
            self._on_receipt(notice)
        else:
            self._on_settlement(notice)

    def _on_bid_receipt(self, round: int, ref: bytes) -> None:
        """Count each bid accepted once: a restarted coordinator may send a receipt again.

        The receipt is matched to the held task through the envelope it names, and the
        mark stays on the task: nothing is remembered per receipt, so a copy arriving
        after the task settled finds no task and counts nothing.
        """
        task_id = self._acknowledge(ref)
        task = None if task_id is None else self._tasks.get(task_id)
        if task is None or task.receipted:
            return
        task.receipted = True
        self.summary.bids_accepted += 1

    def awaiting(self, ref: bytes) -> bool:
        """Whether the envelope sent as `ref` holds a bid with neither receipt nor reject."""
        return ref in self._unacknowledged or ref in self._outstanding

    def _acknowledge(self, ref: bytes) -> str | None:
        """Bid `ref` is answered (or given up on): the task it was, if still awaited."""
        task_id = self._unacknowledged.pop(ref, None)
        envelope = self._envelope_of.pop(ref, None)
        if envelope is not None:
            left = self._outstanding[envelope] - 1
            if left:
                self._outstanding[envelope] = left
            else:
                del self._outstanding[envelope], self._entries[envelope]
        return task_id

    def sent(self, message: TaskBidMessage | TaskBids, ref: bytes) -> None:
        """Note the envelope reference `ref` under which a task bid (or bulk) went out.

        The adapter seals, so only it knows the reference; with it a Reject of the bid
        closes the task at once instead of leaving it open until the user gives up.
        """
        if isinstance(message, TaskBidMessage):
            self._note_sent(message.task_id, ref)
            return
        refs = tuple(bid_ref(ref, index) for index in range(len(message.bids)))
        awaited = [
            r
            for entry, r in zip(message.bids, refs, strict=True)
            if self._note_sent(entry.task_id, r)
        ]
        if awaited:
            self._entries[ref] = refs
            self._outstanding[ref] = len(awaited)
            self._envelope_of.update((r, ref) for r in awaited)

    def _note_sent(self, task_id: str, ref: bytes) -> bool:
        task = self._tasks.get(task_id)
        if task is None or ref in self._unacknowledged:
            return False
        self._unacknowledged[ref] = task_id
        task.refs += (ref,)
        return True

    def _on_reject(self, code: str, ref: bytes) -> None:
        if code == RejectCode.REPLAY:
            return  # a second copy of a bid already taken: the first one stands
        entries = self._entries.get(ref)
        for bid in entries if entries is not None else (ref,):
            task_id = self._acknowledge(bid)
            task = None if task_id is None else self._tasks.get(task_id)
            if task_id is None or task is None or task.state != "bid" or task.receipted:
                continue
            # Refused for good (a copy of it gets the same refusal): nothing more will
            # come for this task, so it leaves at once, as a settled one does.
            self._drop(task_id, task)
            self.summary.bids_rejected += 1

    @property
    def open_tasks(self) -> int:
        """Tasks bid and not yet settled or refused: the held ones."""
        return len(self._tasks)

    @property
    def bidding_done(self) -> bool:
        """True once the market is past the rounds the user was told to bid in.

        Counted by round number from the first announcement seen, not by announcements
        received, so one lost announcement cannot keep a bounded user waiting for ever.
        Never true when unbounded.
        """
        if self.rounds is None:
            return False
        if self.rounds == 0:
            return True
        if self._first_round is None:
            return False
        # Done once the last round of the window was bid in, or the market has gone past
        # it (its announcement lost). A clearing of round r only says r + 1 opened, not
        # that we saw its announcement and bid there.
        last = self._first_round + self.rounds - 1
        return last in self._rounds or self._latest_round > last

    def _in_window(self, number: int) -> bool:
        if self.rounds is None:
            return True
        first = number if self._first_round is None else self._first_round
        return number < first + self.rounds

    @property
    def finished(self) -> bool:
        """Bidding is done and every task it bid has settled."""
        return self.bidding_done and self.open_tasks == 0

    def task_ids(self, round: int) -> list[str]:
        """The ids of this user's tasks bid in `round` and still held, in bid order."""
        return list(self._by_round.get(round, ()))

    def task_state(self, task_id: str) -> TaskProgress | None:
        """A held task's state; None once it has settled or was refused (or was never bid)."""
        task = self._tasks.get(task_id)
        return None if task is None else task.state

    def _on_announcement(self, msg: RoundAnnouncement) -> list[UserEffect]:
        if msg.round in self._rounds and msg.round == self._latest_round:
            # Announced again (a restarted coordinator moved its deadlines): wait longer.
            self.last_prove_deadline = max(self.last_prove_deadline or 0, msg.prove_deadline)
            return []
        if (
            msg.round < max(self._floor, self._announce_floor)
            or msg.round in self._rounds
            or not self._in_window(msg.round)
        ):
            return []
        if self._first_round is None:
            self._first_round = msg.round
        self._latest_round = max(self._latest_round, msg.round)
        self._rounds.add(msg.round)
        announce_floor = msg.round - ANNOUNCE_ROUNDS
        if announce_floor > self._announce_floor:
            discard_below(self._rounds, self._announce_floor, announce_floor)
            self._announce_floor = announce_floor
        self._forget_before(msg.round - RETAIN_ROUNDS)
        self.summary.rounds_seen += 1
        self.last_prove_deadline = msg.prove_deadline
        low, high = self.fee_range
        entries: list[TaskBidEntry] = []
        for i in range(self.tasks_per_round):
            fee = min(self.rng.randint(low, high), msg.params.p_max)
            task_input = self.rng.randbytes(TASK_INPUT_BYTES)
            task_id = f"{self.key[:8]}-{msg.round}-{i}"
            self._tasks[task_id] = _Task(msg.round, fee, task_input, msg.params.difficulty)
            self._by_round.setdefault(msg.round, {})[task_id] = None
            self.summary.tasks_bid += 1
            self.summary.fees_bid += fee
            entries.append(TaskBidEntry(task_id, fee, task_input, self.carry_over))
        return [Publish(bid, to=self.coordinator) for bid in self._bids(msg.round, entries)]

    def _bids(self, number: int, entries: list[TaskBidEntry]) -> list[TaskBidMessage | TaskBids]:
        """One task bid alone; several in bulk envelopes (one signature per envelope).

        A bid that misses its deadline asks to stand for the next round, not be refused.
        """
        bulks = [
            TaskBids(
                market=self.market,
                round=number,
                bids=entries[start : start + TASK_BIDS_MAX],
                late_to_next=True,
            )
            for start in range(0, len(entries), TASK_BIDS_MAX)
        ]
        return [bulks[0].entry(0)] if len(entries) == 1 else list(bulks)

    def _on_receipt(self, msg: UserReceipt) -> None:
        task = self._tasks.get(msg.task_id)
        if task is None or task.state not in ("bid", "unallocated"):
            return  # not ours, a duplicate, or already past this point
        if msg.allocated:
            task.state = "allocated"
            self.summary.allocated += 1
        elif msg.carried_to is not None:
            self.summary.carried += 1
        elif task.state == "bid":
            task.state = "unallocated"
            self.summary.unallocated += 1

    def _on_settlement(self, msg: SettlementNotice) -> None:
        if msg.task_id is None:
            return
        task = self._tasks.get(msg.task_id)
        if task is None:
            return  # each task settles once; a redelivered notice finds it gone
        if msg.outcome in ("rescued", "compensated"):
            # Credited, not closed: the task is rescued or its charge follows. One credit
            # per round a task failed or was late in; a resent copy counts nothing.
            if msg.round in task.compensated_in:
                return
            task.compensated_in += (msg.round,)
            if msg.outcome == "rescued":
                self.summary.rescued += 1
                self.summary.rescued_total += msg.amount
            else:
                self.summary.compensated += 1
                self.summary.compensated_total += msg.amount
            return
        self._drop(msg.task_id, task)
        if msg.outcome == "charged":
            self.summary.charged += 1
            self.summary.charged_total += msg.amount
            if msg.proof is not None and self._verify(task.task_input, msg.proof, task.difficulty):
                self.summary.proofs_verified += 1
            else:
                self.summary.proofs_invalid += 1
        elif msg.outcome == "refunded":
            self.summary.refunded += 1
            self.summary.refunded_total += msg.amount
        elif msg.outcome == "released":
            self.summary.released += 1
            self.summary.released_total += msg.amount

    def _drop(self, task_id: str, task: _Task) -> None:
        """Let go of a task: settled, refused, or given up on with its round."""
        del self._tasks[task_id]
        for ref in task.refs:
            self._acknowledge(ref)
        bucket = self._by_round.get(task.round)
        if bucket is not None:
            bucket.pop(task_id, None)
            if not bucket:
                del self._by_round[task.round]

    def _forget_before(self, floor: int) -> None:
        """Forget rounds below `floor`: costs what is forgotten, not what is kept."""
        if floor <= self._floor:
            return
        for _, bucket in drop_below(self._by_round, self._floor, floor):
            for task_id in bucket:
                task = self._tasks.pop(task_id)
                for ref in task.refs:
                    self._acknowledge(ref)
        self._floor = floor

    def size(self) -> dict[str, int]:
        """How many entries the working state holds, by kind: what must stay bounded."""
        return {
            "rounds": len(self._rounds),
            "tasks": len(self._tasks),
            "round_buckets": len(self._by_round),
            "unacknowledged": len(self._unacknowledged),
            "bulk_envelopes": len(self._entries),
        }


class UserFleet:
    """Many users, one core: each identity bids and keeps score under its own key.

    A broadcast (a round announcement) reaches every identity; a message addressed to
    one identity goes to that identity alone. Effects come back paired with the key of
    the identity that must sign them. Identities draw from the one shared generator in
    key order, so a fleet is as deterministic as a single user.
    """

    def __init__(
        self,
        keys: Iterable[str],
        coordinator: str,
        market: str,
        rng: random.Random,
        tasks_per_round: int,
        fee_range: tuple[int, int],
        carry_over: bool = False,
        *,
        verify: Verifier | None = None,
        rounds: int | None = None,
    ) -> None:
        self.users: dict[str, UserCore] = {}
        for key in keys:
            if key in self.users:
                raise ValueError(f"duplicate identity {key!r}")
            self.users[key] = UserCore(
                key,
                coordinator,
                market,
                rng,
                tasks_per_round,
                fee_range,
                carry_over,
                verify=verify,
                rounds=rounds,
            )
        if not self.users:
            raise ValueError("a fleet needs at least one identity")

    @property
    def keys(self) -> list[str]:
        return list(self.users)

    def handle(
        self, event: UserEvent, recipient: str | None = None
    ) -> list[tuple[str, UserEffect]]:
        """Deliver `event` to `recipient`, or to every identity when it is None."""
        if recipient is not None:
            user = self.users.get(recipient)
            return [] if user is None else [(recipient, e) for e in user.handle(event)]
        return [(key, e) for key, user in self.users.items() for e in user.handle(event)]

    def sent(self, key: str, message: TaskBidMessage | TaskBids, ref: bytes) -> None:
        """Tell identity `key` the envelope reference of a task bid it sent."""
        user = self.users.get(key)
        if user is not None:
            user.sent(message, ref)

    def awaiting(self, key: str, ref: bytes) -> bool:
        """Whether identity `key`'s bid `ref` still awaits its receipt or reject."""
        user = self.users.get(key)
        return user is not None and user.awaiting(ref)

    @property
    def finished(self) -> bool:
        """Every identity has finished (see `UserCore.finished`)."""
        return all(user.finished for user in self.users.values())

    @property
    def bidding_done(self) -> bool:
        return all(user.bidding_done for user in self.users.values())

    @property
    def last_prove_deadline(self) -> int | None:
        deadlines = [u.last_prove_deadline for u in self.users.values()]
        known = [d for d in deadlines if d is not None]
        return max(known) if known else None

    def summary(self) -> UserSummary:
        """The identities' summaries added together (rounds seen: the most any saw)."""
        total = UserSummary()
        for user in self.users.values():
            total.add(user.summary)
        # every identity sees the same announcements: rounds are not additive
        total.rounds_seen = max(user.summary.rounds_seen for user in self.users.values())
        return total
