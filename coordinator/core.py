"""The coordinator's pure core: rounds, rules, clearing and settlement as a state machine.

`Coordinator.handle(event) -> list[effect]` is the whole interface. Events are
`MessageReceived` (an opened, signature-checked message) and `Tick(now)`; effects are
`Record` (write the event durably first), `Publish` and `WakeAt`. The core never reads a
clock or does IO, so the same inputs always give the same outputs and the same state:
that is what lets `coordinator.record_log.fold` rebuild a crashed coordinator from its
record log.

The core is the rules; the state they change, and its readers, are
`coordinator.market_state.MarketState`. Each rule reads a plan and applies it: the round
schedule (coordinator/schedule.py), which round a bid stands in (bids.py), capacity and
its lock (capacity.py), proofs (proofs.py), clearing (clearing.py), settlement with
lateness and rescue (settlement.py), the track record (track_record.py), money in and
out (funds.py) and status queries (status.py); what the core says is built in
notices.py.
"""

from __future__ import annotations

from collections.abc import Callable

from coordinator import (
    bids,
    capacity,
    clearing,
    funds,
    notices,
    presence,
    proofs,
    schedule,
    settlement,
)
from coordinator.accounts import TREASURY, balance_of, deposit_of, escrow_of, locked_of
from coordinator.market_state import SEEN_ROUNDS, MarketState
from coordinator.records import CoordinatorEffect, CoordinatorEvent
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
    wire_task_id,
)
from coordinator.status import QueryRation, account_status, admit_query
from coordinator.track_record import note_settled, note_won, published
from protocol.envelope import bid_ref
from protocol.events import MessageReceived, Publish, Record, Resumed, Tick, WakeAt
from protocol.mechanism import market_mechanism
from protocol.mechanism.clearing import clear_indexed
from protocol.messages import (
    BidReceipt,
    BidReceipts,
    CapacityDeclaration,
    FaucetGrant,
    MarketParams,
    ProofSubmission,
    ProverCostBid,
    ProverOnline,
    ProverWill,
    ReceiptEntry,
    Reject,
    RejectEntry,
    StatusQuery,
    TaskBidMessage,
    TaskBids,
    Withdrawal,
)
from protocol.rejects import RejectCode

__all__ = [
    "SEEN_ROUNDS",
    "Coordinator",
    "CoordinatorEffect",
    "CoordinatorEvent",
    "OpeningBalances",
    "wire_task_id",
]


class Coordinator(MarketState):
    """One market's coordinator as a pure state machine: the rules that change its state.

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
        super().__init__(params, genesis, start_ms, rounds=rounds, seen_rounds=seen_rounds)
        self.key = key
        if params.mechanism == "vcg" and params.subsidy_account is None:
            raise ValueError("a vcg market runs a deficit: its rules must name a subsidy_account")
        self.mechanism = market_mechanism(params)
        if params.signed_ties and tie_signer is None:
            raise ValueError("a market with signed_ties needs the coordinator's tie signer")
        # Signing is deterministic: replaying a record log with the same key re-derives
        # every seed, so the core stays a pure function of its inputs and its key.
        self.tie_signer = tie_signer if params.signed_ties else None
        # Task proofs checked, by verdict, for operators' metrics (not part of the state:
        # a restored core counts from where it was rebuilt).
        self.proofs_checked: dict[str, int] = {"valid": 0, "invalid": 0}
        # Status answers given this round: soft state, not recorded (coordinator.status).
        self.queries = QueryRation()
        # Each round's tie seed, drawn when first needed: a task bid's tie-key prefix is
        # taken as it comes in, so clearing sorts integers. The draw is deterministic, so
        # this is a cache, not state.
        self._seeds: dict[int, clearing.RoundSeed] = {}

    # -- the interface ----------------------------------------------------------------

    def handle(self, event: CoordinatorEvent) -> list[CoordinatorEffect]:
        """Advance on one event; returns the effects to carry out, in order."""
        if isinstance(event, MessageReceived):
            # What fell due before the message arrived comes first: a bid that missed its
            # round's deadline stands for the next round even when the clearing tick has
            # not come yet (a busy coordinator), and a deadline is judged by arrival.
            due = self._on_tick(event.now - 1) if self._started else []
            return due + self._on_message(event)
        if isinstance(event, Resumed):
            return self._on_resumed(event)
        effects = self._on_tick(event.now)
        if effects:
            wake = self.next_wake()
            if wake is not None:
                effects.append(WakeAt(wake))
        return effects

    # -- messages -----------------------------------------------------------------------

    def _on_message(self, event: MessageReceived) -> list[CoordinatorEffect]:
        effects = self._judge(event)
        prover = self._provers.get(event.sender)
        if prover is not None and any(isinstance(e, Record) for e in effects):
            # An input taken from a prover says it is online, and the rescue its will
            # started is called off; its will says it is not.
            prover.offline = isinstance(event.message, ProverWill)
            if not prover.offline:
                self._rescues.pop(event.sender, None)
        return effects

    def _judge(self, event: MessageReceived) -> list[CoordinatorEffect]:
        msg = event.message
        try:
            if getattr(msg, "market", None) != self.params.market:
                raise Refusal(
                    RejectCode.WRONG_MARKET, f"this coordinator runs {self.params.market!r}"
                )
            if isinstance(msg, TaskBidMessage):
                return self._take_task_bid(event, msg)
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
            if isinstance(msg, ProverWill):
                return self._on_will(event, msg)
            if isinstance(msg, ProverOnline):
                return self._on_online(event, msg)
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

    def _take_task_bid(
        self, event: MessageReceived, msg: TaskBidMessage
    ) -> list[CoordinatorEffect]:
        """One task bid: its fee escrowed in the round it stands in (coordinator.bids)."""
        if event.ref in self._seen(msg.round) or event.ref in self._seen(self._bidding):
            raise self._replay()
        r = bids.round_for_task_bid(self._rounds, self._bidding, msg, event.now)
        available = self.balance(event.sender)
        task = bids.plan_task_bid(
            msg, event.sender, r, self._tasks, self._wire, available, self.params.p_max
        )
        if task.fee:
            self.accounts.move(balance_of(task.user), escrow_of(task.user), task.fee)
        self._add_task(r, task)
        self._remember(r.number, event.ref)
        receipt = BidReceipt(
            market=self.params.market, round=r.number, ref=event.ref, escrowed=task.fee
        )
        return [Record(event), Publish(receipt, to=event.sender)]

    def _on_task_bids(self, event: MessageReceived, msg: TaskBids) -> list[CoordinatorEffect]:
        """Each entry judged as the task bid it stands for, in order; one record for them all.

        What the entries share (market, round, lateness) is judged once, and a refusal of
        it names the envelope; an entry's own refusal names its bid reference. The
        envelope's reference stands for its entries' against a copy; their fees are
        escrowed as one move and their receipts go out as one `bid_receipts`.
        """
        if event.ref in self._seen(msg.round) or event.ref in self._seen(self._bidding):
            raise self._replay()
        r = bids.round_for_task_bid(self._rounds, self._bidding, msg.entry(0), event.now)
        available = self.balance(event.sender)
        taken: list[ReceiptEntry] = []
        refused: list[RejectEntry] = []
        for index, entry in enumerate(msg.bids):
            ref = bid_ref(event.ref, index)
            try:
                task = bids.plan_task_bid(
                    entry, event.sender, r, self._tasks, self._wire, available, self.params.p_max
                )
            except Refusal as refusal:
                self._count_refusal(refusal)
                refused.append(RejectEntry(refusal.code, refusal.reason, ref, msg.round))
                continue
            available -= task.fee
            self._add_task(r, task)
            taken.append(ReceiptEntry(r.number, ref, task.fee))
        effects: list[CoordinatorEffect] = []
        if taken:
            escrowed = sum(t.escrowed for t in taken)
            if escrowed:
                self.accounts.move(balance_of(event.sender), escrow_of(event.sender), escrowed)
            self._remember(r.number, event.ref)
            receipts = BidReceipts(market=self.params.market, receipts=taken)
            effects += [Record(event), Publish(receipts, to=event.sender)]
        answers = notices.entry_refusals(self.params.market, refused)
        return effects + [Publish(answer, to=event.sender) for answer in answers]

    def _add_task(self, r: Round, task: TaskState) -> None:
        key = (task.user, task.task_id)
        self._tasks[key] = task
        self._wire[task.wire_id] = key
        self._enter(r, key)

    def _enter(self, r: Round, key: TaskKey) -> None:
        """Task `key` stands in round `r`'s book, with its tie-key prefix under r's seed."""
        task = self._tasks[key]
        r.enter(key, task, self._seed(r.number).tie(task.wire_id))

    def _seed(self, number: int) -> clearing.RoundSeed:
        seed = self._seeds.get(number)
        if seed is None:
            seed = self._seeds[number] = clearing.RoundSeed.draw(
                self.params.market, number, self.tie_signer
            )
        return seed

    def _on_cost_bid(self, event: MessageReceived, msg: ProverCostBid) -> list[CoordinatorEffect]:
        if event.ref in self._seen(msg.round):
            raise self._replay()
        r = bids.round_open_for_bid(self._rounds, self._bidding, msg.round, event.now)
        need = bids.plan_cost_bid(
            msg, event.sender, r, self._provers.get(event.sender), self.params
        )
        self._top_up_lock(event.sender, need)
        tie = self._seed(r.number).tie(event.sender)
        r.cost_bids[event.sender] = CostBid(cost=msg.cost, ref=event.ref, tie=tie)
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
        need = capacity.plan_declaration(
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
        extra = capacity.lock_top_up(need, self.locked(prover), self.deposit(prover))
        if extra:
            self.accounts.move(deposit_of(prover), locked_of(prover), extra)

    def _on_proofs(self, event: MessageReceived, msg: ProofSubmission) -> list[CoordinatorEffect]:
        r, batch = proofs.batch_for_proofs(msg, event.sender, self._rounds, self._floor)
        if event.ref in self._seen(r.number):
            raise self._replay()  # proofs already taken, even if the batch has settled
        checked = proofs.check_proofs(
            msg,
            r,
            batch,
            self._tasks,
            now=event.now,
            settle_at=self._settle_at(r),
            difficulty=self.params.difficulty,
        )
        if not checked:
            return []
        for key, proof in checked.items():
            batch.proofs[key] = proof
            self.proofs_checked["invalid" if proof is None else "valid"] += 1
        if event.now > r.prove_deadline:  # within the grace: taken, and graded
            batch.late.extend(checked)
        self._remember(r.number, event.ref)
        effects: list[CoordinatorEffect] = [Record(event)]
        if len(batch.proofs) == len(batch.tasks):
            batch.finished_ms = event.now
            effects.extend(self._settle_batch(r, batch))
        return effects

    def _on_withdrawal(self, event: MessageReceived, msg: Withdrawal) -> list[CoordinatorEffect]:
        if event.ref in self._seen(msg.round):
            raise self._replay()
        owner = event.sender
        account = funds.funds_account(owner, msg.account)
        free = self.accounts.balance(account)
        funds.check_withdrawal(
            msg,
            bidding=self._bidding,
            seen_rounds=self.seen_rounds,
            free=free,
            locked=self.locked(owner),
        )
        self.accounts.pay_out(account, msg.amount)
        self._remember(msg.round, event.ref)
        receipt = notices.withdrawal_receipt(self.params.market, msg, event.ref, free - msg.amount)
        return [Record(event), Publish(receipt, to=owner)]

    def _on_faucet_grant(self, event: MessageReceived, msg: FaucetGrant) -> list[CoordinatorEffect]:
        faucet = self.genesis.faucet
        decision = funds.plan_grant(msg, event.sender, faucet, self._grants.get(msg.nonce))
        notice = notices.funding_notice(self.params.market, msg)
        assert faucet is not None  # plan_grant refused any other sender
        if decision == "repeat":
            # Credit nothing; a re-signed copy tells a retrying faucet that it was taken.
            if event.ref in self._grant_refs:
                raise self._replay()
            return [Publish(notice, to=faucet)]
        self.accounts.fund(funds.funds_account(msg.to, msg.account), msg.amount)
        self._grants[msg.nonce] = (msg.to, msg.account, msg.amount)
        self._grant_refs.add(event.ref)
        effects: list[CoordinatorEffect] = [Record(event), Publish(notice, to=msg.to)]
        if msg.to != faucet:
            effects.append(Publish(notice, to=faucet))
        return effects

    def _on_will(self, event: MessageReceived, msg: ProverWill) -> list[CoordinatorEffect]:
        """A prover's will, unless stale: offline, and its open batches fail after the grace.

        Anyone else's will, and a stale one (coordinator.presence), change nothing.
        """
        prover = self._provers.get(event.sender)
        if prover is None or not presence.will_counts(prover, msg.connected_at):
            return []
        prover.will_at = msg.connected_at
        at = presence.rescue_at(prover, event.now, self.params.will_grace_ms)
        if at is None:
            return [Record(event)]
        self._rescues[event.sender] = at
        return [Record(event), WakeAt(at)]

    def _on_online(self, event: MessageReceived, msg: ProverOnline) -> list[CoordinatorEffect]:
        """A prover's connection is up: recorded, unless stale (coordinator.presence)."""
        prover = self._provers.get(event.sender)
        if prover is None or not presence.online_counts(prover, msg.connected_at):
            return []
        prover.online_at = msg.connected_at
        return [Record(event)]

    def _on_status_query(self, event: MessageReceived, msg: StatusQuery) -> list[CoordinatorEffect]:
        """Answered from state and not recorded: a query changes nothing (coordinator.status)."""
        admit_query(
            self.queries,
            event.sender,
            msg.round,
            bidding=self._bidding,
            seen_rounds=self.seen_rounds,
        )
        return [Publish(account_status(self, event.sender, event.ref), to=event.sender)]

    # -- time -----------------------------------------------------------------------------

    def _on_tick(self, now: int) -> list[CoordinatorEffect]:
        effects: list[CoordinatorEffect] = []
        while True:
            step = self._next_due(now)
            if step is None:
                break
            kind, number = step
            if isinstance(number, str):
                effects.extend(self._rescue(number))
            elif kind == "start":
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
        grace = self.params.late_grace_ms
        open_to_bids, open_to_proofs = schedule.outage_moves(
            self._rounds.values(), event.since, grace
        )
        for r in open_to_bids:
            r.bid_deadline += outage
        for r in open_to_proofs:
            r.prove_deadline += outage
            for batch in r.batches.values():
                batch.assigned_ms += outage  # proving times leave the outage out
        # A prover's way back (its `prover_online`) may have waited at the broker too.
        self._rescues = schedule.outage_rescues(self._rescues, event.since, outage)
        effects: list[CoordinatorEffect] = [Record(event)]
        bidding = self._rounds.get(self._bidding)
        if bidding is not None and bidding.phase is Phase.BID:
            # Everyone learns the open round's new deadline; a user that hears its round
            # announced again sends once more the bids the outage may have lost.
            effects.append(Publish(notices.announcement(self.params, bidding)))
        wake = self.next_wake()
        return [*effects, *([WakeAt(wake)] if wake is not None else [])]

    def _open_round(self, number: int) -> list[CoordinatorEffect]:
        self._bidding = number
        self._forget(number)
        if self.rounds_limit is not None and number >= self.rounds_limit:
            return []
        r = self._rounds[number] = schedule.new_round(
            self.params, self.start_ms, self._shift, number
        )
        return [Publish(notices.announcement(self.params, r))]

    def _forget(self, bidding: int) -> None:
        """Forget settled rounds older than `seen_rounds`: their refs, tasks and batches.

        Redeliveries that old are refused (late, wrong round) instead of silently dropped,
        so nothing idempotency needs is lost, and a long-running market stays bounded.
        """
        floor = schedule.forget_below(self._rounds, self._floor, bidding, self.seen_rounds)
        for number in range(self._floor, floor):
            self._refs.pop(number, None)
            self._seeds.pop(number, None)
            r = self._rounds.pop(number, None)
            for key in () if r is None else r.tasks:
                task = self._tasks.get(key)
                # A carried task lives on in the next round.
                if task is not None and task.round == number:
                    del self._tasks[key]
                    del self._wire[task.wire_id]
        self._floor = floor
        kept = self._floor // self.params.epoch_rounds
        if kept > self._epochs_kept:
            self._forget_epochs(kept)
            self._epochs_kept = kept

    def _forget_epochs(self, kept: int) -> None:
        """Forget declarations of epochs before `kept`, all of whose rounds are forgotten."""
        for epoch in [e for e in self._declaration_refs if e < kept]:
            del self._declaration_refs[epoch]
        for prover in self._provers.values():
            for epoch in capacity.stale_capacities(prover, kept):
                del prover.capacities[epoch]

    # -- clearing -------------------------------------------------------------------------

    def _clear_round(self, r: Round, now: int) -> list[CoordinatorEffect]:
        # A round cleared late (a busy or restarted coordinator) still gives its provers
        # the whole prove window from the moment their batches are decided.
        r.prove_deadline = max(r.prove_deadline, now + self.params.prove_window_ms)
        r.phase = Phase.PROVE
        self._proving.add(r.number)
        announce_next = self._open_round(r.number + 1)
        next_round = self._rounds.get(r.number + 1)
        seed = self._seed(r.number)
        admission = clearing.plan_admission(
            r, self._tasks, self._provers, self.locked, self.params.p_max, seed
        )
        effects: list[CoordinatorEffect] = [
            Publish(self._reject(x.code, x.reason, x.ref, r.number), to=x.prover)
            for x in admission.refused
        ]
        outcome = clear_indexed(
            self.mechanism, admission.task_bids, admission.prover_bids, admission.prover_ties
        )
        r.close_book()
        subsidy_account = balance_of(self.params.subsidy_account or "")
        outcome, subsidy = clearing.plan_subsidy(outcome, self.accounts.balance(subsidy_account))
        if subsidy:
            self.accounts.move(subsidy_account, TREASURY, subsidy)
        fates = clearing.plan_task_fates(r, self._tasks, outcome, can_carry=next_round is not None)
        batches = self._assign_batches(r, clearing.plan_batches(r, fates, now))
        result = notices.clearing_result(  # after the batches: its track records count the wins
            self.params.market,
            r,
            admission,
            outcome,
            subsidy=subsidy,
            tie_proof=seed.proof,
            carried=len(fates.carried),
            refused=self._refusals.pop(r.number, {}),
            track_record=published(self._provers, list(r.cost_bids)),
        )
        effects += [Publish(result), *batches]
        effects += self._apply_fates(fates, r.number, next_round)
        if not r.batches:
            self._settled(r)
        if (r.number + 1) % self.params.epoch_rounds == 0:
            # The epoch's last round has cleared: idle provers get back what no later
            # declaration needs.
            for key in sorted(self._provers):
                self._release_lock(key)
        return effects + announce_next

    def _assign_batches(self, r: Round, batches: list[Batch]) -> list[CoordinatorEffect]:
        """Open each winner's batch and hand it its assignment."""
        effects: list[CoordinatorEffect] = []
        for batch in batches:
            r.batches[batch.prover] = batch
            prover = self._provers[batch.prover]
            prover.open_rounds.add(r.number)
            note_won(prover.record)
            effects.append(
                Publish(notices.assignment(self.params, r, batch, self._tasks), to=batch.prover)
            )
        return effects

    def _apply_fates(
        self, fates: clearing.TaskFates, number: int, next_round: Round | None
    ) -> list[CoordinatorEffect]:
        """Carry out each task's fate and tell its user, one message a user; released fees
        go back one move a user, not one a task."""
        told = notices.Told(self.params.market)
        tell = told.tell
        tasks, market = self._tasks, self.params.market
        for winner in fates.winners:
            prover = winner.prover
            for key, price in zip(winner.tasks, winner.charges, strict=True):
                task = tasks[key]
                task.assign(prover, price)
                tell(task.user, notices.assigned(market, number, task.task_id, prover, price))
        if next_round is not None:
            for key in fates.carried:
                task = tasks[key]
                task.carry(next_round.number)
                self._enter(next_round, key)
                receipt = notices.user_receipt(
                    market, number, task.task_id, carried_to=next_round.number
                )
                tell(task.user, receipt)
        refunds: dict[str, int] = {}
        for key in fates.released:
            task = tasks[key]
            refunds[task.user] = refunds.get(task.user, 0) + task.fee
            task.close("released")
            tell(task.user, notices.user_receipt(market, number, task.task_id))
            tell(task.user, notices.released(market, task))
        for user, amount in refunds.items():
            if amount:
                self.accounts.move(escrow_of(user), balance_of(user), amount)
        return list(told.publishes())

    # -- settlement -----------------------------------------------------------------------

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
        plan = settlement.plan_settlement(
            batch,
            self._tasks,
            p_max=self.params.p_max,
            locked=self.locked(batch.prover),
            prove_deadline=r.prove_deadline,
            grace_ms=self.params.late_grace_ms,
            rescuable=lambda t: self.params.rescue and into is not None and t.rescued_from is None,
        )
        self.accounts.transfer(plan.postings)
        told = notices.Told(self.params.market)
        for settled in plan.tasks:
            self._settle_task(r, batch, settled, into, told)
        effects: list[CoordinatorEffect] = list(told.publishes())
        if not plan.proven:
            self.slashes[batch.prover] = self.slashes.get(batch.prover, 0) + 1
        prover = self._provers[batch.prover]
        note_settled(prover.record, batch, proven=plan.proven, window=self.params.suspend_window)
        # Its proofs went out with the notices; a settled batch takes no more (coordinator.proofs).
        batch.proofs.clear()
        effects += [
            Publish(n, to=batch.prover)
            for n in notices.batch_notices(self.params.market, r.number, plan)
        ]
        prover.open_rounds.discard(r.number)
        if not prover.open_rounds:
            self._rescues.pop(batch.prover, None)  # nothing left for a rescue to fail
        self._release_lock(batch.prover)
        if all(b.settled for b in r.batches.values()):
            self._settled(r)
        return effects

    def _settle_task(
        self,
        r: Round,
        batch: Batch,
        settled: settlement.TaskSettlement,
        into: Round | None,
        told: notices.Told,
    ) -> None:
        """Close (or, rescued, reopen) one task of a settled batch, and tell its user."""
        task = self._tasks[settled.key]
        reopen = into if settled.outcome == "rescued" else None
        phrased = notices.task_notices(
            self.params.market,
            r.number,
            task.task_id,
            settled,
            None if reopen is None else reopen.number,
        )
        if reopen is not None:
            task.rescue(reopen.number, failed_in=r.number, failed_by=batch.prover)
            self._enter(reopen, settled.key)
        else:
            task.close("charged" if settled.outcome == "charged" else "refunded")
        for notice in phrased:
            told.tell(task.user, notice)

    def _rescue(self, key: str) -> list[CoordinatorEffect]:
        """`key`'s reconnect grace ran out: its open batches fail now, as at a deadline."""
        del self._rescues[key]
        effects: list[CoordinatorEffect] = []
        for number in sorted(self._provers[key].open_rounds):
            r = self._rounds[number]
            effects.extend(self._settle_batch(r, r.batches[key]))
        return effects

    def _settled(self, r: Round) -> None:
        r.phase = Phase.SETTLED
        self._proving.discard(r.number)

    def _release_lock(self, key: str) -> None:
        """Unlock deposit no longer backing any open batch or current/future epoch."""
        excess = capacity.lock_excess(
            self._provers[key], self.locked(key), bidding=self._bidding, params=self.params
        )
        if excess:
            self.accounts.move(locked_of(key), deposit_of(key), excess)
