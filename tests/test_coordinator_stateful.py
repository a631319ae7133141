"""Hypothesis drives the coordinator with random, duplicated and reordered inputs and clock
jumps; the market's invariants must hold after every step, and a replay of the record log
must rebuild the same state, from the first record or from a snapshot halfway."""

from __future__ import annotations

from typing import ClassVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_coordinator_helpers import (
    COORD,
    FAUCET,
    MARKET,
    P_MAX,
    PROVERS,
    START,
    USERS,
    Market,
    genesis,
    params,
    proofs_for,
    replayed,
)

from coordinator.core import Coordinator
from coordinator.invariants import check_invariants
from coordinator.records import CoordinatorEffect, CoordinatorEvent
from coordinator.snapshot import capture, load
from protocol.events import Publish, Record
from protocol.messages import (
    Assignment,
    CapacityDeclaration,
    FailureRules,
    FaucetGrant,
    Message,
    Notices,
    ProofSubmission,
    ProverCostBid,
    SettlementNotice,
    TaskBidMessage,
    Withdrawal,
)

MODES = ["valid", "valid", "corrupt", "partial", "impostor"]
SEEN = 3


class CoordinatorMachine(RuleBasedStateMachine):
    RULES: ClassVar[dict[str, object]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.params = params(prove_window_ms=150, epoch_rounds=1, **self.RULES)
        self.genesis = genesis(balance=40, deposit=60, faucet=FAUCET)
        # A short memory, so that forgetting old rounds happens within a run.
        self.market = Market(Coordinator(self.params, self.genesis, COORD, START, seen_rounds=SEEN))
        self.now = START
        self.market.tick(self.now)
        self.fed: list[CoordinatorEvent] = []
        self.assignments: list[tuple[str, Assignment]] = []
        self.task_ids: list[str] = []

    @property
    def coordinator(self) -> Coordinator:
        return self.market.coordinator

    def _round(self, offset: int) -> int:
        current = self.coordinator.bidding_round
        return max(0, (current if current is not None else 0) + offset)

    def _check_effects(self, before: dict[str, object], effects: list[CoordinatorEffect]) -> None:
        accepted = any(isinstance(e, Record) for e in effects)
        if accepted:
            assert isinstance(effects[0], Record)
        else:
            assert before == self.coordinator.state()  # a refused input changes nothing
        for effect in effects:
            if isinstance(effect, Publish) and isinstance(effect.message, Assignment):
                assert effect.to is not None
                self.assignments.append((effect.to, effect.message))

    def _send(self, sender: str, message: Message) -> None:
        before = self.coordinator.state()
        effects = self.market.send(sender, message, self.now)
        assert self.market.last_event is not None
        self.fed.append(self.market.last_event)
        self._check_effects(before, effects)

    @rule(
        user=st.sampled_from(USERS),
        fee=st.integers(0, P_MAX + 1),
        offset=st.integers(-1, 1),
        carry=st.booleans(),
        reuse=st.booleans(),
    )
    def task_bid(self, user: str, fee: int, offset: int, carry: bool, reuse: bool) -> None:
        if reuse and self.task_ids:
            task_id = self.task_ids[fee % len(self.task_ids)]
        else:
            task_id = f"t{len(self.task_ids)}"
            self.task_ids.append(task_id)
        bid = TaskBidMessage(
            market=MARKET,
            round=self._round(offset),
            task_id=task_id,
            fee=fee,
            task_input=task_id.encode(),
            carry_over=carry,
        )
        self._send(user, bid)

    @rule(prover=st.sampled_from(PROVERS), capacity=st.integers(1, 7), offset=st.integers(-1, 2))
    def declare(self, prover: str, capacity: int, offset: int) -> None:
        epoch = max(0, self._round(0) // self.params.epoch_rounds + offset)
        self._send(prover, CapacityDeclaration(market=MARKET, epoch=epoch, capacity=capacity))

    @rule(
        prover=st.sampled_from(PROVERS), cost=st.integers(0, P_MAX + 1), offset=st.integers(-1, 1)
    )
    def cost_bid(self, prover: str, cost: int, offset: int) -> None:
        self._send(prover, ProverCostBid(market=MARKET, round=self._round(offset), cost=cost))

    @rule(
        costs=st.lists(st.integers(0, P_MAX), min_size=len(PROVERS), max_size=len(PROVERS)),
        fees=st.lists(st.integers(0, P_MAX), min_size=1, max_size=8),
        capacity=st.integers(1, 3),
    )
    def busy_round(self, costs: list[int], fees: list[int], capacity: int) -> None:
        """A whole round's worth of bids at once, so that clearings allocate often."""
        number = self._round(0)
        epoch = number // self.params.epoch_rounds
        for prover, cost in zip(PROVERS, costs, strict=True):
            self._send(prover, CapacityDeclaration(market=MARKET, epoch=epoch, capacity=capacity))
            self._send(prover, ProverCostBid(market=MARKET, round=number, cost=cost))
        for i, fee in enumerate(fees):
            task_id = f"t{len(self.task_ids)}"
            self.task_ids.append(task_id)
            bid = TaskBidMessage(
                market=MARKET, round=number, task_id=task_id, fee=fee, task_input=b"x%d" % i
            )
            self._send(USERS[i % len(USERS)], bid)

    @rule(
        costs=st.lists(st.integers(0, P_MAX), min_size=len(PROVERS), max_size=len(PROVERS)),
        fees=st.lists(st.integers(0, P_MAX), min_size=1, max_size=8),
        capacity=st.integers(1, 3),
        modes=st.lists(st.sampled_from(MODES), min_size=len(PROVERS), max_size=len(PROVERS)),
    )
    def full_round(
        self, costs: list[int], fees: list[int], capacity: int, modes: list[str]
    ) -> None:
        """Bid, clear at the deadline, then every winner answers in its drawn mode."""
        self.busy_round(costs, fees, capacity)
        number = self._round(0)
        known = len(self.assignments)
        bid_deadline, _ = self.coordinator.round_deadlines(number)
        self.tick(max(0, bid_deadline - self.now))
        for (prover, assignment), mode in zip(self.assignments[known:], modes, strict=False):
            self._answer(prover, assignment, mode)

    def _answer(self, prover: str, assignment: Assignment, mode: str) -> None:
        ids = [t.task_id for t in assignment.tasks]
        submission = proofs_for(assignment, corrupt=ids[:1] if mode == "corrupt" else ())
        if mode == "partial":
            submission = ProofSubmission(
                market=MARKET, round=assignment.round, proofs=submission.proofs[:1]
            )
        if mode == "impostor":
            prover = PROVERS[(PROVERS.index(prover) + 1) % len(PROVERS)]
        self._send(prover, submission)

    @precondition(lambda self: bool(self.assignments))
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def prove(self, data: st.DataObject, mode: str) -> None:
        # Mostly the newest batches, which are still open; sometimes a stale one.
        recent = data.draw(st.booleans())
        pool = self.assignments[-2:] if recent else self.assignments
        prover, assignment = data.draw(st.sampled_from(pool))
        self._answer(prover, assignment, mode)

    @rule(
        owner=st.sampled_from(USERS + PROVERS),
        account=st.sampled_from(["balance", "deposit"]),
        amount=st.integers(0, 70),
        offset=st.integers(-1, 1),
    )
    def withdraw(self, owner: str, account: str, amount: int, offset: int) -> None:
        msg = Withdrawal(market=MARKET, round=self._round(offset), account=account, amount=amount)  # type: ignore[arg-type]
        self._send(owner, msg)

    @rule(
        sender=st.sampled_from([FAUCET, FAUCET, USERS[0]]),
        to=st.sampled_from(USERS + PROVERS),
        account=st.sampled_from(["balance", "deposit"]),
        amount=st.integers(0, 50),
        nonce=st.integers(0, 5),
    )
    def grant(self, sender: str, to: str, account: str, amount: int, nonce: int) -> None:
        """Faucet grants, some from an impostor, nonces often reused."""
        msg = FaucetGrant(market=MARKET, to=to, account=account, amount=amount, nonce=nonce)  # type: ignore[arg-type]
        self._send(sender, msg)

    @precondition(lambda self: bool(self.fed))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """An earlier input again, unchanged: a duplicate, possibly out of order."""
        event = data.draw(st.sampled_from(self.fed))
        before = self.coordinator.state()
        effects = self.market.feed(event)
        self._check_effects(before, effects)

    @rule(jump=st.one_of(st.integers(0, 60), st.integers(0, 260)))
    def tick(self, jump: int) -> None:
        self.now += jump
        before = self.coordinator.state()
        effects = self.market.tick(self.now)
        self._check_effects(before, effects)
        event(f"open batches: {len(self.coordinator.open_assignments())}")
        event(f"rounds forgotten: {self.coordinator.floor > 0}")

    @invariant()
    def market_invariants_hold(self) -> None:
        assert [] == check_invariants(self.coordinator)

    def teardown(self) -> None:
        for status in sorted({t.status for t in self.coordinator.tasks()}):
            event(f"some task {status}")
        restored = replayed(
            Coordinator(self.params, self.genesis, COORD, START, seen_rounds=SEEN),
            self.market.recorded,
        )
        assert self.coordinator.state() == restored.state()
        # Snapshot halfway through the log, then replay the rest: the very same state.
        recorded = list(self.market.recorded)
        at = len(recorded) // 2
        head = replayed(
            Coordinator(self.params, self.genesis, COORD, START, seen_rounds=SEEN), recorded[:at]
        )
        resumed = load(
            Coordinator(self.params, self.genesis, COORD, START, seen_rounds=SEEN),
            capture(head, at),
            position=at,
        )
        replayed(resumed, recorded[at:])
        assert capture(self.coordinator, len(recorded)) == capture(resumed, len(recorded))
        assert self.coordinator.state() == resumed.state()


CoordinatorMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoordinatorStateful = CoordinatorMachine.TestCase
TestCoordinatorStateful.__doc__ = "Random inputs keep every invariant and replay to the same state."


class FailureRulesMachine(CoordinatorMachine):
    """The same machine in a market with a grace for late proofs, rescue and suspension."""

    RULES: ClassVar[dict[str, object]] = {
        "failures": FailureRules(
            late_grace_ms=60, rescue=True, suspend_after_failures=2, suspend_window=3
        )
    }

    def _check_effects(self, before: dict[str, object], effects: list[CoordinatorEffect]) -> None:
        super()._check_effects(before, effects)
        for effect in effects:
            message = effect.message if isinstance(effect, Publish) else None
            told = message.notices if isinstance(message, Notices) else [message]
            for notice in told:
                if isinstance(notice, SettlementNotice) and notice.outcome in (
                    "rescued",
                    "compensated",
                    "penalty",
                ):
                    event(f"some {notice.outcome} notice")
        for task in self.coordinator.tasks():
            # A rescued task is never handed back to the prover that failed it.
            assert task.failed_by is None or task.prover != task.failed_by

    @precondition(lambda self: bool(self.assignments))
    @rule(data=st.data(), after=st.integers(1, 70))
    def prove_late(self, data: st.DataObject, after: int) -> None:
        """A batch proven `after` ms past its deadline: within the grace, or just past it."""
        prover, assignment = data.draw(st.sampled_from(self.assignments[-2:]))
        self.now = max(self.now, assignment.prove_deadline + after)
        self._answer(prover, assignment, "valid")


FailureRulesMachine.TestCase.settings = CoordinatorMachine.TestCase.settings
TestFailureRulesStateful = FailureRulesMachine.TestCase
TestFailureRulesStateful.__doc__ = (
    "Under grace, rescue and suspension, random inputs keep every invariant and replay alike."
)
