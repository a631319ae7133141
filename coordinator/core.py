"""The coordinator's pure core: rounds, rules, clearing and settlement as a state machine.

`Coordinator.handle(event) -> list[effect]` is the whole interface. Events are
`MessageReceived` (an opened, signature-checked message) and `Tick(now)`; effects are
`Record` (write the event durably first), `Publish` and `WakeAt`. The core never reads a
clock or does IO, so the same inputs always give the same outputs and the same state:
that is what lets `coordinator.record_log.fold` rebuild a crashed coordinator from its
record log.

Round r of a market started at `start_ms`, with bid window B and prove window P:

    opens at          start + r*B                    (announced to everyone)
    bid deadline      start + (r+1)*B   -> CLEAR r, and round r+1 opens (pipelining)
    prove deadline    start + (r+1)*B + P -> SETTLE whatever of r is still open
                                               (after the grace, `late_grace_ms`, if any)

A batch settles as soon as every task in it has a proof, or at the prove deadline.
Lateness, rescue and the track record are plans too (coordinator/settlement.py,
coordinator/track_record.py); the core applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final, Literal

import msgspec

from coordinator.accounts import (
    TREASURY,
    Accounts,
    balance_of,
    deposit_of,
    escrow_of,
    locked_of,
)
from coordinator.capacity import plan_declaration
from coordinator.clearing import Admission, TaskFate, plan_admission, plan_task_fates, subsidy_draw
from coordinator.funds import check_withdrawal, plan_grant
from coordinator.records import CoordinatorEffect, CoordinatorEvent
from coordinator.settlement import SettlementPlan, TaskSettlement, plan_settlement
from coordinator.state import (
    Batch,
    CostBid,
    OpeningBalances,
    Phase,
    ProverState,
    Refusal,
    Round,
    TaskKey,
    TaskState,
    TaskStatus,
    wire_task_id,
)
from coordinator.status import QueryRation, account_status
from coordinator.track_record import note_failed, note_proved, note_won, published, suspended
from coordinator.views import comparable_state
from protocol.envelope import bid_ref
from protocol.events import MessageReceived, Publish, Record, Resumed, Tick, WakeAt
from protocol.mechanism import Outcome, market_mechanism
from protocol.messages import (
    AssignedTask,
    Assignment,
    BidReceipt,
    CapacityDeclaration,
    ClearingResult,
    FaucetGrant,
    FundingNotice,
    MarketParams,
    ProofSubmission,
    ProverCostBid,
    Reject,
    RejectEntry,
    Rejects,
    RoundAnnouncement,
    SettlementNotice,
    StatusQuery,
    TaskBidMessage,
    TaskBids,
    UserReceipt,
    Withdrawal,
    WithdrawalReceipt,
)
from protocol.rejects import RejectCode
from protocol.tie_proof import plain_seed, seed_from_proof, tie_message
from protocol.workload import verify_batch

__all__ = [
    "SEEN_ROUNDS",
    "Coordinator",
    "CoordinatorEffect",
    "CoordinatorEvent",
    "OpeningBalances",
    "wire_task_id",
]

# How many rounds back envelope references are remembered to drop redeliveries silently;
# settled rounds older than this are forgotten altogether (their tasks included).
SEEN_ROUNDS: Final = 64

_NO_REFS: Final[frozenset[bytes]] = frozenset()


class Coordinator:
    """One market's coordinator as a pure state machine.

    `params` are the market's rules, `genesis` its starting money, `key` the coordinator's
    public key (hex), `start_ms` when round 0 opens; `rounds`, when given, stops the
    market after that many rounds (round numbers 0..rounds-1).
    """

    def __init__(
        self,
        params: MarketParams,
        genesis: OpeningBalances,
        key: str,
        start_ms: int,
        *,
        rounds: int | None = None,
        seen_rounds: int = SEEN_ROUNDS,
        tie_signer: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.params = params
        self.genesis = genesis
        self.key = key
        self.start_ms = start_ms
        self.rounds_limit = rounds
        if seen_rounds < 1:
            raise ValueError(f"seen_rounds must be >= 1, got {seen_rounds}")
        self.seen_rounds = seen_rounds
        if params.mechanism == "vcg" and params.subsidy_account is None:
            raise ValueError("a vcg market runs a deficit: its rules must name a subsidy_account")
        self.mechanism = market_mechanism(params)
        if params.signed_ties and tie_signer is None:
            raise ValueError("a market with signed_ties needs the coordinator's tie signer")
        # Signing is deterministic: replaying a record log with the same key re-derives
        # every seed, so the core stays a pure function of its inputs and its key.
        self.tie_signer = tie_signer if params.signed_ties else None
        self.accounts = Accounts()
        for owner, amount in sorted(genesis.balances.items()):
            if amount:
                self.accounts.fund(balance_of(owner), amount)
        for owner, amount in sorted(genesis.deposits.items()):
            if amount:
                self.accounts.fund(deposit_of(owner), amount)
        self._started = False
        self._bidding: int = 0  # the round open for bids (or the next to open)
        self._rounds: dict[int, Round] = {}
        self._tasks: dict[TaskKey, TaskState] = {}
        self._wire: dict[str, TaskKey] = {}  # wire task id -> task
        self._provers: dict[str, ProverState] = {}
        self._declaration_refs: dict[int, set[bytes]] = {}  # epoch -> accepted refs
        self._proving: set[int] = set()  # rounds cleared and not yet settled
        self._refs: dict[int, set[bytes]] = {}  # round -> envelope refs accepted in it
        self._floor = 0  # rounds below this are settled and forgotten
        self._epochs_kept = 0  # declarations of epochs below this are forgotten
        # Faucet grants taken, by nonce: (to, account, amount). Kept for good, so no grant
        # is ever credited twice; they grow with grants made, not with rounds.
        self._grants: dict[int, tuple[str, str, int]] = {}
        self._grant_refs: set[bytes] = set()
        # Batches each prover was slashed for: a counter per prover, kept for reports.
        self.slashes: dict[str, int] = {}
        # Inputs refused while each round took bids, by code, until it clears and publishes
        # them. Refusals are not recorded, so a restarted core counts from its restart on.
        self._refusals: dict[int, dict[str, int]] = {}
        self._shift = 0  # how far outages have moved the round schedule, in ms
        # Task proofs checked, by verdict, for operators' metrics (not part of the state:
        # a restored core counts from where it was rebuilt).
        self.proofs_checked: dict[str, int] = {"valid": 0, "invalid": 0}
        # Status answers given this round: soft state, not recorded (coordinator.status).
        self.queries = QueryRation()

    # -- the interface ----------------------------------------------------------------

    def handle(self, event: CoordinatorEvent) -> list[CoordinatorEffect]:
        """Advance on one event; returns the effects to carry out, in order."""
        if isinstance(event, MessageReceived):
            # A message never brings a deadline forward, so it never needs a new wake-up.
            return self._on_message(event)
        if isinstance(event, Resumed):
            return self._on_resumed(event)
        effects = self._on_tick(event.now)
        if effects:
            wake = self.next_wake()
            if wake is not None:
                effects.append(WakeAt(wake))
        return effects

    def next_wake(self) -> int | None:
        """When the next deadline falls, so an adapter (re)arms its timer after a restore."""
        if not self._started:
            return self.start_ms
        times = [self._settle_at(self._rounds[n]) for n in self._proving]
        bidding = self._rounds.get(self._bidding)
        if bidding is not None and bidding.phase is Phase.BID:
            times.append(bidding.bid_deadline)
        return min(times) if times else None

    @property
    def finished(self) -> bool:
        """True once a market with a round limit has settled every round."""
        return (
            self._started
            and self.rounds_limit is not None
            and self._bidding >= self.rounds_limit
            and not self._proving
        )

    # -- state the tests and the operator read ------------------------------------------

    @property
    def bidding_round(self) -> int | None:
        """The round currently open for bids, if any."""
        r = self._rounds.get(self._bidding)
        return r.number if r is not None and r.phase is Phase.BID else None

    @property
    def current_round(self) -> int:
        """The round open for bids, or the next to open (what a snapshot records)."""
        return self._bidding

    @property
    def floor(self) -> int:
        """The lowest round still held; older settled rounds are forgotten."""
        return self._floor

    def _settle_at(self, r: Round) -> int:
        """When round `r`'s open batches settle: its prove deadline, plus the grace."""
        return r.prove_deadline + self.params.late_grace_ms

    def round_deadlines(self, number: int) -> tuple[int, int]:
        """(bid deadline, prove deadline) of round `number`."""
        bid = self.start_ms + self._shift + (number + 1) * self.params.bid_window_ms
        return bid, bid + self.params.prove_window_ms

    def task(self, user: str, task_id: str) -> TaskState | None:
        """The task `user` bid under its own `task_id`, if still held."""
        return self._tasks.get((user, task_id))

    def tasks(self) -> Iterator[TaskState]:
        return iter(self._tasks.values())

    def open_bids(self) -> dict[TaskKey, int]:
        """Escrowed task bids (open or assigned, not yet settled): (user, task id) -> fee."""
        return {k: t.fee for k, t in self._tasks.items() if t.status in ("open", "assigned")}

    def capacity(self, prover: str, epoch: int) -> int | None:
        p = self._provers.get(prover)
        return None if p is None else p.capacities.get(epoch)

    def open_assignments(self) -> dict[str, int]:
        """Provers with an unsettled batch -> the capacity that batch was cleared under."""
        held: dict[str, int] = {}
        for key, p in self._provers.items():
            for number in p.open_rounds:
                cap = p.capacities.get(self._rounds[number].epoch, 0)
                held[key] = max(held.get(key, 0), cap)
        return held

    def balance(self, owner: str) -> int:
        return self.accounts.balance(balance_of(owner))

    def escrow(self, owner: str) -> int:
        return self.accounts.balance(escrow_of(owner))

    def deposit(self, owner: str) -> int:
        return self.accounts.balance(deposit_of(owner))

    def locked(self, owner: str) -> int:
        return self.accounts.balance(locked_of(owner))

    def is_prover(self, key: str) -> bool:
        """Whether `key` has declared capacity or holds a deposit: a prover of this market."""
        return key in self._provers or self.deposit(key) + self.locked(key) > 0

    def state(self) -> dict[str, object]:
        """Everything that defines the market's state, in a comparable, ordered form."""
        return comparable_state(self)

    # -- messages -----------------------------------------------------------------------

    def _on_message(self, event: MessageReceived) -> list[CoordinatorEffect]:
        msg = event.message
        try:
            if getattr(msg, "market", None) != self.params.market:
                raise Refusal(
                    RejectCode.WRONG_MARKET, f"this coordinator runs {self.params.market!r}"
                )
            if isinstance(msg, TaskBidMessage):
                return self._on_task_bid(event, msg)
            if isinstance(msg, TaskBids):
                return self._on_task_bids(event, msg)
            if isinstance(msg, ProverCostBid):
                return self._on_cost_bid(event, msg)
            if isinstance(msg, CapacityDeclaration):
                return self._on_declaration(event, msg)
            if isinstance(msg, ProofSubmission):
                return self._on_proofs(event, msg)
            if isinstance(msg, Withdrawal):
                return self._on_withdrawal(event, msg)
            if isinstance(msg, FaucetGrant):
                return self._on_faucet_grant(event, msg)
            if isinstance(msg, StatusQuery):
                return self._on_status_query(event, msg)
            raise Refusal(
                RejectCode.UNEXPECTED_MESSAGE, f"a coordinator does not take {type(msg).__name__}"
            )
        except Refusal as refused:
            self._count_refusal(refused)
            reject = self._reject(
                refused.code, refused.reason, event.ref, getattr(msg, "round", None)
            )
            return [Publish(reject, to=event.sender)]

    def _count_refusal(self, refused: Refusal) -> None:
        counts = self._refusals.setdefault(self._bidding, {})
        counts[refused.code.value] = counts.get(refused.code.value, 0) + 1

    @staticmethod
    def _replay() -> Refusal:
        """A copy of an envelope already accepted: refused as `replay`, changing nothing."""
        return Refusal(RejectCode.REPLAY, "this envelope was already accepted")

    def _reject(self, code: RejectCode, reason: str, ref: bytes, number: int | None) -> Reject:
        return Reject(market=self.params.market, code=code, reason=reason, ref=ref, round=number)

    def _open_round_for_bid(self, number: int, now: int) -> Round:
        """The round a bid names, if it is open for bids at `now`; else a specific refusal."""
        r = self._rounds.get(number)
        if r is None:
            if number < self._bidding:
                raise Refusal(RejectCode.LATE_BID, f"round {number} has closed{self._open_now()}")
            raise Refusal(RejectCode.WRONG_ROUND, f"round {number} is not open for bids")
        if r.phase is not Phase.BID or now > r.bid_deadline:
            raise Refusal(
                RejectCode.LATE_BID,
                f"round {number} closed for bids at {r.bid_deadline}{self._open_now()}",
            )
        return r

    def _open_now(self) -> str:
        """For a late bid's reason: the round a bid could still stand in."""
        r = self._rounds.get(self._bidding)
        if r is None or r.phase is not Phase.BID:
            return ""
        return f"; round {r.number} is open until {r.bid_deadline}"

    def _round_for_task_bid(self, msg: TaskBidMessage, now: int) -> Round:
        """The round a task bid stands in: the one it names, or, late, the one open now."""
        try:
            return self._open_round_for_bid(msg.round, now)
        except Refusal as refusal:
            open_now = self._rounds.get(self._bidding)
            if (
                refusal.code is not RejectCode.LATE_BID
                or not msg.late_to_next
                or open_now is None
                or open_now.phase is not Phase.BID
                or now > open_now.bid_deadline
            ):
                raise
            return open_now

    def _on_task_bid(self, event: MessageReceived, msg: TaskBidMessage) -> list[CoordinatorEffect]:
        if event.ref in self._seen(msg.round) or event.ref in self._seen(self._bidding):
            raise self._replay()
        r = self._round_for_task_bid(msg, event.now)
        if msg.fee > self.params.p_max:
            raise Refusal(
                RejectCode.FEE_ABOVE_P_MAX, f"fee {msg.fee} exceeds P_max {self.params.p_max}"
            )
        key = (event.sender, msg.task_id)
        wire_id = wire_task_id(event.sender, msg.task_id)
        if key in self._tasks or wire_id in self._wire:
            raise Refusal(RejectCode.DUPLICATE_TASK, f"you already bid task {msg.task_id!r}")
        available = self.accounts.balance(balance_of(event.sender))
        if available < msg.fee:
            raise Refusal(
                RejectCode.INSUFFICIENT_BALANCE, f"fee {msg.fee} exceeds balance {available}"
            )
        if msg.fee:
            self.accounts.move(balance_of(event.sender), escrow_of(event.sender), msg.fee)
        self._tasks[key] = TaskState(
            task_id=msg.task_id,
            user=event.sender,
            wire_id=wire_id,
            fee=msg.fee,
            task_input=msg.task_input,
            carry_over=msg.carry_over,
            round=r.number,
        )
        self._wire[wire_id] = key
        r.tasks.append(key)
        self._remember(r.number, event.ref)
        receipt = BidReceipt(
            market=self.params.market, round=r.number, ref=event.ref, escrowed=msg.fee
        )
        return [Record(event), Publish(receipt, to=event.sender)]

    def _on_task_bids(self, event: MessageReceived, msg: TaskBids) -> list[CoordinatorEffect]:
        """Each entry judged as the task bid it stands for, in order; one record for them all.

        What the entries share (market, round, lateness) is judged once, and a refusal of
        it names the envelope; an entry's own refusal names its bid reference.
        """
        if event.ref in self._seen(msg.round) or event.ref in self._seen(self._bidding):
            raise self._replay()
        r = self._round_for_task_bid(msg.entry(0), event.now)
        effects: list[CoordinatorEffect] = []
        refused: list[RejectEntry] = []
        for index in range(len(msg.bids)):
            bid = msg.entry(index)
            single = MessageReceived(event.sender, bid, bid_ref(event.ref, index), event.now)
            try:
                taken = self._on_task_bid(single, bid)
            except Refusal as refusal:
                self._count_refusal(refusal)
                refused.append(RejectEntry(refusal.code, refusal.reason, single.ref, msg.round))
                continue
            effects.extend(e for e in taken if not isinstance(e, Record))
        if len(refused) < len(msg.bids):
            self._remember(r.number, event.ref)
            effects.insert(0, Record(event))
        if len(refused) == 1:
            (only,) = refused
            reject = Reject(market=self.params.market, **msgspec.structs.asdict(only))
            effects.append(Publish(reject, to=event.sender))
        elif refused:
            rejects = Rejects(market=self.params.market, rejects=refused)
            effects.append(Publish(rejects, to=event.sender))
        return effects

    def _on_cost_bid(self, event: MessageReceived, msg: ProverCostBid) -> list[CoordinatorEffect]:
        if event.ref in self._seen(msg.round):
            raise self._replay()
        r = self._open_round_for_bid(msg.round, event.now)
        if msg.cost > self.params.p_max:
            raise Refusal(
                RejectCode.COST_ABOVE_P_MAX, f"cost {msg.cost} exceeds P_max {self.params.p_max}"
            )
        prover = self._provers.get(event.sender)
        capacity = None if prover is None else prover.capacities.get(r.epoch)
        if prover is None or capacity is None:
            raise Refusal(
                RejectCode.CAPACITY_NOT_DECLARED, f"no capacity declared for epoch {r.epoch}"
            )
        if event.sender in r.cost_bids:
            raise Refusal(RejectCode.DUPLICATE_BID, f"already bid in round {r.number}")
        if suspended(prover.record, r.number, self.params):
            raise Refusal(RejectCode.PROVER_SUSPENDED, "suspended for failed batches")
        self._top_up_lock(event.sender, self.params.p_max * capacity)
        r.cost_bids[event.sender] = CostBid(cost=msg.cost, ref=event.ref)
        self._remember(r.number, event.ref)
        receipt = BidReceipt(market=self.params.market, round=r.number, ref=event.ref)
        return [Record(event), Publish(receipt, to=event.sender)]

    def _on_declaration(
        self, event: MessageReceived, msg: CapacityDeclaration
    ) -> list[CoordinatorEffect]:
        if event.ref in self._declaration_refs.get(msg.epoch, ()):
            raise self._replay()
        prover = self._provers.get(event.sender)
        first = self._rounds.get(msg.epoch * self.params.epoch_rounds)
        need = plan_declaration(
            msg,
            prover,
            self.params,
            bidding=self._bidding,
            first_round_cleared=first is not None and first.phase is not Phase.BID,
        )
        if need is None:
            return []
        self._top_up_lock(event.sender, need)
        if prover is None:
            prover = self._provers[event.sender] = ProverState()
        prover.capacities[msg.epoch] = msg.capacity
        self._declaration_refs.setdefault(msg.epoch, set()).add(event.ref)
        receipt = BidReceipt(
            market=self.params.market,
            round=msg.epoch * self.params.epoch_rounds,
            ref=event.ref,
            escrowed=need,
        )
        return [Record(event), Publish(receipt, to=event.sender)]

    def _top_up_lock(self, prover: str, need: int) -> None:
        """Lock free deposit until `need` is locked, or refuse without changing anything."""
        extra = need - self.accounts.balance(locked_of(prover))
        if extra <= 0:
            return
        free = self.accounts.balance(deposit_of(prover))
        if free < extra:
            raise Refusal(
                RejectCode.INSUFFICIENT_DEPOSIT, f"needs {need} locked deposit; {free} free to add"
            )
        self.accounts.move(deposit_of(prover), locked_of(prover), extra)

    def _on_proofs(self, event: MessageReceived, msg: ProofSubmission) -> list[CoordinatorEffect]:
        r = self._rounds.get(msg.round)
        batch = None if r is None else r.batches.get(event.sender)
        if r is None and msg.round < self._floor:
            raise Refusal(RejectCode.LATE_PROOF, f"round {msg.round} settled long ago")
        if r is None or batch is None:
            raise Refusal(RejectCode.NOT_ASSIGNED, f"no batch assigned to you in round {msg.round}")
        if event.ref in self._seen(r.number):
            raise self._replay()  # proofs already taken, even if the batch has settled
        if batch.settled or event.now > self._settle_at(r):
            raise Refusal(
                RejectCode.LATE_PROOF, f"round {msg.round} proofs were due by {r.prove_deadline}"
            )
        assigned = {self._tasks[k].wire_id: k for k in batch.tasks}
        stray = [p.task_id for p in msg.proofs if p.task_id not in assigned]
        if stray:
            raise Refusal(RejectCode.NOT_ASSIGNED, f"task {stray[0]!r} is not in your batch")
        # The first proof given for a task is final, so a prover cannot grind for a valid one.
        fresh: dict[TaskKey, bytes] = {}
        for p in msg.proofs:
            key = assigned[p.task_id]
            if key not in batch.proofs and key not in fresh:
                fresh[key] = p.proof
        if not fresh:
            return []
        ids = list(fresh)
        valid = verify_batch(
            [self._tasks[t].task_input for t in ids],
            [fresh[t] for t in ids],
            difficulty=self.params.difficulty,
        )
        for key, ok in zip(ids, valid, strict=True):
            batch.proofs[key] = fresh[key] if ok else None
            self.proofs_checked["valid" if ok else "invalid"] += 1
        if event.now > r.prove_deadline:  # within the grace: taken, and graded
            batch.late.extend(ids)
        self._remember(r.number, event.ref)
        effects: list[CoordinatorEffect] = [Record(event)]
        if len(batch.proofs) == len(batch.tasks):
            batch.finished_ms = event.now
            effects.extend(self._settle_batch(r, batch))
        return effects

    def _seen(self, number: int) -> frozenset[bytes] | set[bytes]:
        return self._refs.get(number, _NO_REFS)

    def _remember(self, number: int, ref: bytes) -> None:
        self._refs.setdefault(number, set()).add(ref)

    def _on_withdrawal(self, event: MessageReceived, msg: Withdrawal) -> list[CoordinatorEffect]:
        if event.ref in self._seen(msg.round):
            raise self._replay()
        owner = event.sender
        account = balance_of(owner) if msg.account == "balance" else deposit_of(owner)
        free = self.accounts.balance(account)
        check_withdrawal(
            msg,
            bidding=self._bidding,
            seen_rounds=self.seen_rounds,
            free=free,
            locked=self.accounts.balance(locked_of(owner)),
        )
        self.accounts.pay_out(account, msg.amount)
        self._remember(msg.round, event.ref)
        receipt = WithdrawalReceipt(
            market=self.params.market,
            round=msg.round,
            ref=event.ref,
            account=msg.account,
            amount=msg.amount,
            remaining=free - msg.amount,
        )
        return [Record(event), Publish(receipt, to=owner)]

    def _on_faucet_grant(self, event: MessageReceived, msg: FaucetGrant) -> list[CoordinatorEffect]:
        faucet = self.genesis.faucet
        decision = plan_grant(msg, event.sender, faucet, self._grants.get(msg.nonce))
        notice = FundingNotice(
            market=self.params.market,
            to=msg.to,
            account=msg.account,
            amount=msg.amount,
            nonce=msg.nonce,
        )
        assert faucet is not None  # plan_grant refused any other sender
        if decision == "repeat":
            # Credit nothing; a re-signed copy tells a retrying faucet that it was taken.
            if event.ref in self._grant_refs:
                raise self._replay()
            return [Publish(notice, to=faucet)]
        account = balance_of(msg.to) if msg.account == "balance" else deposit_of(msg.to)
        self.accounts.fund(account, msg.amount)
        self._grants[msg.nonce] = (msg.to, msg.account, msg.amount)
        self._grant_refs.add(event.ref)
        effects: list[CoordinatorEffect] = [Record(event), Publish(notice, to=msg.to)]
        if msg.to != faucet:
            effects.append(Publish(notice, to=faucet))
        return effects

    def _on_status_query(self, event: MessageReceived, msg: StatusQuery) -> list[CoordinatorEffect]:
        """Answered from state and not recorded: a query changes nothing (coordinator.status)."""
        if msg.round > self._bidding or msg.round <= self._bidding - self.seen_rounds:
            raise Refusal(
                RejectCode.WRONG_ROUND, f"status queries name the current round, {self._bidding}"
            )
        refusal = self.queries.take(event.sender, self._bidding)
        if refusal is not None:
            raise Refusal(RejectCode.TOO_MANY_QUERIES, refusal)
        return [Publish(account_status(self, event.sender, event.ref), to=event.sender)]

    # -- time -----------------------------------------------------------------------------

    def _on_tick(self, now: int) -> list[CoordinatorEffect]:
        effects: list[CoordinatorEffect] = []
        while True:
            step = self._next_due(now)
            if step is None:
                break
            kind, number = step
            if kind == "start":
                self._started = True
                effects.extend(self._open_round(0))
            elif kind == "settle":
                effects.extend(self._settle_round(self._rounds[number]))
            else:
                effects.extend(self._clear_round(self._rounds[number], now))
        if effects:
            effects.insert(0, Record(Tick(now)))
        return effects

    def _on_resumed(self, event: Resumed) -> list[CoordinatorEffect]:
        """Stop the market's clock for an outage: deadlines after `since` move by its length.

        Parties whose messages waited at the broker while the coordinator was down are
        judged as if it had been up; no one is punished for the coordinator's downtime.
        """
        outage = event.now - event.since
        if outage <= 0 or not self._started or self.finished:
            return []
        self._shift += outage
        for r in self._rounds.values():
            if r.phase is Phase.BID and r.bid_deadline > event.since:
                r.bid_deadline += outage
            # A round still in its grace (`late_grace_ms`) is still open to proofs.
            if r.phase is not Phase.SETTLED and self._settle_at(r) > event.since:
                r.prove_deadline += outage
                for batch in r.batches.values():
                    batch.assigned_ms += outage  # proving times leave the outage out
        effects: list[CoordinatorEffect] = [Record(event)]
        bidding = self._rounds.get(self._bidding)
        if bidding is not None and bidding.phase is Phase.BID:
            # Everyone learns the open round's new deadline; a user that hears its round
            # announced again sends once more the bids the outage may have lost.
            effects.append(Publish(self._announcement(bidding)))
        wake = self.next_wake()
        return [*effects, *([WakeAt(wake)] if wake is not None else [])]

    def _next_due(self, now: int) -> tuple[str, int] | None:
        if not self._started:
            return ("start", 0) if now >= self.start_ms else None
        # Settling before clearing at the same instant frees provers for the next batch.
        due: list[tuple[int, int, str, int]] = [
            (self._settle_at(self._rounds[n]), 0, "settle", n)
            for n in self._proving
            if self._settle_at(self._rounds[n]) <= now
        ]
        bidding = self._rounds.get(self._bidding)
        if bidding is not None and bidding.phase is Phase.BID and bidding.bid_deadline <= now:
            due.append((bidding.bid_deadline, 1, "clear", bidding.number))
        if not due:
            return None
        _, _, kind, number = min(due)
        return kind, number

    def _open_round(self, number: int) -> list[CoordinatorEffect]:
        self._bidding = number
        self._forget(number)
        if self.rounds_limit is not None and number >= self.rounds_limit:
            return []
        bid_deadline, prove_deadline = self.round_deadlines(number)
        epoch = number // self.params.epoch_rounds
        self._rounds[number] = Round(
            number=number, epoch=epoch, bid_deadline=bid_deadline, prove_deadline=prove_deadline
        )
        return [Publish(self._announcement(self._rounds[number]))]

    def _announcement(self, r: Round) -> RoundAnnouncement:
        return RoundAnnouncement(
            market=self.params.market,
            round=r.number,
            epoch=r.epoch,
            bid_deadline=r.bid_deadline,
            prove_deadline=r.prove_deadline,
            params=self.params,
        )

    def _forget(self, bidding: int) -> None:
        """Forget settled rounds older than `seen_rounds`: their refs, tasks and batches.

        Redeliveries that old are refused (late, wrong round) instead of silently dropped,
        so nothing idempotency needs is lost, and a long-running market stays bounded.
        """
        while self._floor <= bidding - self.seen_rounds:
            r = self._rounds.get(self._floor)
            if r is not None and r.phase is not Phase.SETTLED:
                break
            self._refs.pop(self._floor, None)
            if r is not None:
                del self._rounds[self._floor]
                for key in r.tasks:
                    task = self._tasks.get(key)
                    # A carried task lives on in the next round.
                    if task is not None and task.round == r.number:
                        del self._tasks[key]
                        del self._wire[task.wire_id]
            self._floor += 1
        kept = self._floor // self.params.epoch_rounds
        if kept > self._epochs_kept:
            self._forget_epochs(kept)
            self._epochs_kept = kept

    def _forget_epochs(self, kept: int) -> None:
        """Forget declarations of epochs before `kept`, all of whose rounds are forgotten.

        Each prover keeps its latest older capacity, which the factor-m rule compares with.
        """
        for epoch in [e for e in self._declaration_refs if e < kept]:
            del self._declaration_refs[epoch]
        for prover in self._provers.values():
            for epoch in sorted(e for e in prover.capacities if e < kept)[:-1]:
                del prover.capacities[epoch]

    def size(self) -> dict[str, int]:
        """How many entries the state holds, by kind: what must stay bounded over time."""
        return {
            "rounds": len(self._rounds),
            "tasks": len(self._tasks),
            "wire_ids": len(self._wire),
            "refs": sum(len(refs) for refs in self._refs.values()),
            "declaration_refs": sum(len(refs) for refs in self._declaration_refs.values()),
            "capacities": sum(len(p.capacities) for p in self._provers.values()),
            "provers": len(self._provers),
            "accounts": len(self.accounts.snapshot()),
            "grants": len(self._grants),
        }

    # -- clearing -------------------------------------------------------------------------

    def _clear_round(self, r: Round, now: int) -> list[CoordinatorEffect]:
        # A round cleared late (a busy or restarted coordinator) still gives its provers
        # the whole prove window from the moment their batches are decided.
        r.prove_deadline = max(r.prove_deadline, now + self.params.prove_window_ms)
        r.phase = Phase.PROVE
        self._proving.add(r.number)
        announce_next = self._open_round(r.number + 1)
        next_round = self._rounds.get(r.number + 1)
        admission = plan_admission(r, self._tasks, self._provers, self.locked, self.params.p_max)
        effects: list[CoordinatorEffect] = [
            Publish(self._reject(x.code, x.reason, x.ref, r.number), to=x.prover)
            for x in admission.refused
        ]
        seed, proof = plain_seed(self.params.market, r.number), None
        if self.tie_signer is not None:
            proof = self.tie_signer(tie_message(self.params.market, r.number))
            seed = seed_from_proof(proof)
        outcome = self.mechanism.clear(admission.task_bids, admission.prover_bids, seed=seed)
        outcome, subsidy = self._subsidise(outcome)
        fates = plan_task_fates(
            r, self._tasks, self._wire, outcome, can_carry=next_round is not None
        )
        carried = sum(f.fate == "carried" for f in fates)
        batches = self._assign_batches(r, outcome, now)  # first: the record counts the wins
        result = self._clearing_result(r, admission, outcome, subsidy, proof, carried)
        effects.append(Publish(result))
        effects.extend(batches)
        for fate in fates:
            effects.extend(self._apply_fate(fate, r.number, next_round))
        if not r.batches:
            self._settled(r)
        if (r.number + 1) % self.params.epoch_rounds == 0:
            # The epoch's last round has cleared: idle provers get back what no later
            # declaration needs.
            for key in sorted(self._provers):
                self._release_lock(key)
        effects.extend(announce_next)
        return effects

    def _clearing_result(
        self,
        r: Round,
        admission: Admission,
        outcome: Outcome,
        subsidy: int,
        tie_proof: bytes | None,
        carried: int,
    ) -> ClearingResult:
        return ClearingResult(
            market=self.params.market,
            round=r.number,
            mechanism=outcome.mechanism,
            tasks_bid=len(admission.task_bids),
            provers_bid=len(admission.prover_bids),
            allocated_provers=outcome.allocated_provers,
            allocated_tasks=outcome.allocated_tasks,
            user_price=outcome.user_price,
            prover_price=outcome.prover_price,
            winners=sorted(outcome.assignments),
            surplus=outcome.surplus + subsidy,
            prove_deadline=r.prove_deadline,
            tie_proof=tie_proof,
            offers=len(r.cost_bids),
            carried=carried,
            refused=dict(sorted(self._refusals.pop(r.number, {}).items())),
            track_record=published(self._provers, list(r.cost_bids)),
        )

    def _assign_batches(self, r: Round, outcome: Outcome, now: int) -> list[CoordinatorEffect]:
        """Open each winner's batch and hand it its assignment."""
        effects: list[CoordinatorEffect] = []
        for key in sorted(outcome.assignments):
            task_keys = tuple(self._wire[w] for w in outcome.assignments[key])
            batch = Batch(
                prover=key,
                round=r.number,
                tasks=task_keys,
                payment=outcome.payments[key],
                assigned_ms=now,
            )
            r.batches[key] = batch
            self._provers[key].open_rounds.add(r.number)
            note_won(self._provers[key].record)
            assignment = Assignment(
                market=self.params.market,
                round=r.number,
                prove_deadline=r.prove_deadline,
                difficulty=self.params.difficulty,
                setup=self.params.setup,
                payment=batch.payment,
                tasks=[
                    AssignedTask(self._tasks[t].wire_id, self._tasks[t].task_input)
                    for t in task_keys
                ],
            )
            effects.append(Publish(assignment, to=key))
        return effects

    def _apply_fate(
        self, fate: TaskFate, number: int, next_round: Round | None
    ) -> list[CoordinatorEffect]:
        """Carry out one task's fate and tell its user."""
        task = self._tasks[fate.key]
        market = self.params.market
        if fate.fate == "assigned":
            task.status, task.prover, task.price = "assigned", fate.prover, fate.price
            receipt = UserReceipt(
                market=market,
                round=number,
                task_id=task.task_id,
                allocated=True,
                price=task.price,
                prover=task.prover,
            )
            return [Publish(receipt, to=task.user)]
        if fate.fate == "carried" and next_round is not None:
            task.carried_from = task.round
            task.round = next_round.number
            next_round.tasks.append(fate.key)
            receipt = UserReceipt(
                market=market,
                round=number,
                task_id=task.task_id,
                allocated=False,
                carried_to=next_round.number,
            )
            return [Publish(receipt, to=task.user)]
        receipt = UserReceipt(market=market, round=number, task_id=task.task_id, allocated=False)
        return [Publish(receipt, to=task.user), self._release(task)]

    # -- settlement -----------------------------------------------------------------------

    def _release(self, task: TaskState) -> Publish:
        if task.fee:
            self.accounts.move(escrow_of(task.user), balance_of(task.user), task.fee)
        self._mark(task, "released")
        notice = SettlementNotice(
            market=self.params.market,
            round=task.round,
            outcome="released",
            amount=task.fee,
            task_id=task.task_id,
        )
        return Publish(notice, to=task.user)

    def _mark(self, task: TaskState, status: TaskStatus) -> None:
        task.status = status
        task.settlements += 1

    def _subsidise(self, outcome: Outcome) -> tuple[Outcome, int]:
        """A deficit outcome (VCG) and the subsidy moved to the treasury to pay it.

        A subsidy account too poor for the draw clears nothing.
        """
        draw = subsidy_draw(outcome)
        if draw == 0:
            return outcome, 0
        account = balance_of(self.params.subsidy_account or "")
        if self.accounts.balance(account) < draw:
            return Outcome(mechanism=outcome.mechanism), 0
        self.accounts.move(account, TREASURY, draw)
        return outcome, draw

    def _settle_round(self, r: Round) -> list[CoordinatorEffect]:
        effects: list[CoordinatorEffect] = []
        for key in sorted(r.batches):
            batch = r.batches[key]
            if not batch.settled:
                effects.extend(self._settle_batch(r, batch))
        self._settled(r)
        return effects

    def _settle_batch(self, r: Round, batch: Batch) -> list[CoordinatorEffect]:
        batch.settled = True
        target = self._rounds.get(self._bidding)
        into = target if target is not None and target.phase is Phase.BID else None
        plan = plan_settlement(
            batch,
            self._tasks,
            p_max=self.params.p_max,
            locked=self.locked(batch.prover),
            prove_deadline=r.prove_deadline,
            grace_ms=self.params.late_grace_ms,
            rescuable=lambda t: self.params.rescue and into is not None and t.rescued_from is None,
        )
        self.accounts.transfer(plan.postings)
        effects: list[CoordinatorEffect] = []
        for settled in plan.tasks:
            effects.extend(self._settle_task(r, batch, settled, into))
        effects.extend(self._prover_notices(r, batch, plan))
        self._provers[batch.prover].open_rounds.discard(r.number)
        self._release_lock(batch.prover)
        if all(b.settled for b in r.batches.values()):
            self._settled(r)
        return effects

    def _settle_task(
        self, r: Round, batch: Batch, settled: TaskSettlement, into: Round | None
    ) -> list[Publish]:
        """Close (or, rescued, reopen) one task of a settled batch, and tell its user."""
        task = self._tasks[settled.key]
        market = self.params.market
        effects: list[Publish] = []
        if settled.compensation or settled.outcome == "rescued":
            notice = SettlementNotice(
                market=market,
                round=r.number,
                outcome="rescued" if settled.outcome == "rescued" else "compensated",
                amount=settled.compensation or settled.amount,
                task_id=task.task_id,
            )
            effects.append(Publish(notice, to=task.user))
        if settled.outcome == "rescued" and into is not None:
            task.status, task.prover, task.price = "open", None, None
            task.rescued_from, task.failed_by = r.number, batch.prover
            task.round = into.number
            into.tasks.append(settled.key)
            receipt = UserReceipt(
                market=market,
                round=r.number,
                task_id=task.task_id,
                allocated=False,
                carried_to=into.number,
            )
            return [*effects, Publish(receipt, to=task.user)]
        self._mark(task, "charged" if settled.outcome == "charged" else "refunded")
        notice = SettlementNotice(
            market=market,
            round=r.number,
            outcome="charged" if settled.outcome == "charged" else "refunded",
            amount=settled.amount,
            task_id=task.task_id,
            proof=settled.proof,
        )
        return [*effects, Publish(notice, to=task.user)]

    def _prover_notices(self, r: Round, batch: Batch, plan: SettlementPlan) -> list[Publish]:
        """The prover's notices of a settled batch; its track record notes the outcome."""
        market, record = self.params.market, self._provers[batch.prover].record
        window = self.params.suspend_window
        effects: list[Publish] = []
        if not plan.proven:
            self.slashes[batch.prover] = self.slashes.get(batch.prover, 0) + 1
            note_failed(record, r.number, window=window)
        else:
            took = (batch.finished_ms or batch.assigned_ms) - batch.assigned_ms
            note_proved(record, r.number, took, late=bool(batch.late), window=window)
        if plan.penalty:
            notice = SettlementNotice(
                market=market, round=r.number, outcome="penalty", amount=plan.penalty
            )
            effects.append(Publish(notice, to=batch.prover))
        outcome: Literal["paid", "slashed"] = "paid" if plan.proven else "slashed"
        notice = SettlementNotice(
            market=market, round=r.number, outcome=outcome, amount=plan.prover_amount
        )
        return [*effects, Publish(notice, to=batch.prover)]

    def _settled(self, r: Round) -> None:
        r.phase = Phase.SETTLED
        self._proving.discard(r.number)

    def _release_lock(self, key: str) -> None:
        """Unlock deposit no longer backing any open batch or current/future epoch."""
        prover = self._provers[key]
        if prover.open_rounds:
            return
        current = self._bidding // self.params.epoch_rounds
        caps = [c for e, c in prover.capacities.items() if e >= current]
        target = self.params.p_max * max(caps, default=0)
        excess = self.accounts.balance(locked_of(key)) - target
        if excess > 0:
            self.accounts.move(locked_of(key), deposit_of(key), excess)
