"""A whole market in one process: pure cores over an in-memory bus and a fake clock.

The coordinator, every prover and every user run their real cores; this harness only
carries messages between them (in order, instantly), runs the proof workload when a
prover asks, and moves a fake clock from one timer to the next. Nothing sleeps and
nothing touches a socket, so hundreds of rounds take seconds and the same seed always
gives the same market, byte for byte.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from coordinator.core import Coordinator
from coordinator.records import CoordinatorEvent
from coordinator.report import RoundTally, market_report
from coordinator.state import OpeningBalances
from protocol.events import MessageReceived, Publish, Record, Tick, WakeAt
from protocol.mechanism import Mechanism, Outcome, ProverBid, TaskBid, get_mechanism
from protocol.mechanism.clearing import IndexedOutcome, TaskColumns, clear_indexed
from protocol.messages import MarketParams, Message, TaskBidMessage, TaskBids, TaskProof
from protocol.workload import prove_batch
from prover_node.core import ProverCore, ProvingDone, StartProving
from user_client.core import UserCore

FAULT_CYCLE: Final = ("drop", "corrupt", "late")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """A simulated market: its size, its rules and the seed everything is drawn from."""

    rounds: int
    provers: int
    users: int
    seed: int
    faulty_provers: int = 0
    tasks_per_round: int = 1
    fee_range: tuple[int, int] = (1, 100)
    cost_range: tuple[int, int] = (1, 60)
    capacity_range: tuple[int, int] = (5, 20)
    p_max: int = 100
    epoch_rounds: int = 10
    capacity_factor: int = 2
    # Tiny proofs: the simulation checks the market, not the prover's speed.
    difficulty: int = 1
    setup: int = 1
    bid_window_ms: int = 1_000
    prove_window_ms: int = 1_000
    # Proving takes fake time: a ms of setup, then this many µs a task.
    proving_us_per_task: int = 1_000
    mechanism: str = "prooph"
    carry_over: bool = False
    market: str = "sim"
    posted_price: int | None = None
    call_a_bps: int = 5_000
    reserve_cost: int | None = None

    def params(self) -> MarketParams:
        return MarketParams(
            market=self.market,
            p_max=self.p_max,
            epoch_rounds=self.epoch_rounds,
            capacity_factor=self.capacity_factor,
            mechanism=self.mechanism,
            difficulty=self.difficulty,
            setup=self.setup,
            bid_window_ms=self.bid_window_ms,
            prove_window_ms=self.prove_window_ms,
            posted_price=self.posted_price,
            call_a_bps=self.call_a_bps,
            reserve_cost=self.reserve_cost,
            # VCG's deficit is paid by a simulated subsidy account, funded at genesis.
            subsidy_account=sim_key(self.seed, "subsidy", 0) if self.mechanism == "vcg" else None,
        )


def sim_config_from_market(rules: MarketParams, **sizes: Any) -> SimConfig:
    """A simulation of a market file's rules; proofs stay tiny (difficulty and setup 1)."""
    return SimConfig(
        market=rules.market,
        p_max=rules.p_max,
        epoch_rounds=rules.epoch_rounds,
        capacity_factor=rules.capacity_factor,
        mechanism=rules.mechanism,
        bid_window_ms=rules.bid_window_ms,
        prove_window_ms=rules.prove_window_ms,
        posted_price=rules.posted_price,
        call_a_bps=rules.call_a_bps,
        reserve_cost=rules.reserve_cost,
        **sizes,
    )


@dataclass
class _Observed:
    """The market's mechanism, recording each round's welfare and the optimum's on its bids.

    With `keep`, only the newest `keep` rounds' rows are held (a tally with a window
    reports no more than that); without, every round's.
    """

    inner: Mechanism
    keep: int | None = None
    rows: deque[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = deque(maxlen=self.keep)

    @property
    def name(self) -> str:
        return self.inner.name

    def clear(
        self, tasks: Sequence[TaskBid], provers: Sequence[ProverBid], *, seed: bytes = b""
    ) -> Outcome:
        out = self.inner.clear(tasks, provers, seed=seed)
        best = get_mechanism("optimum").clear(tasks, provers, seed=seed).welfare
        self.rows.append((out.welfare, best))
        return out

    def clear_columns(
        self,
        tasks: TaskColumns,
        provers: Sequence[ProverBid],
        prover_ties: Sequence[int] | None = None,
    ) -> IndexedOutcome:
        out = clear_indexed(self.inner, tasks, provers, prover_ties)
        best = clear_indexed(get_mechanism("optimum"), tasks, provers, prover_ties).welfare
        self.rows.append((out.welfare, best))
        return out


@dataclass(slots=True)
class SimResult:
    """The finished market: its coordinator, its published figures, and the report."""

    coordinator: Coordinator
    tally: RoundTally = field(default_factory=RoundTally)
    records: int = 0
    inputs: list[CoordinatorEvent] = field(default_factory=list)
    report: dict[str, object] = field(default_factory=dict)


def sim_key(seed: int, role: str, index: int) -> str:
    """A stand-in public key (64 hex digits), the same for the same seed, role and index."""
    return hashlib.sha256(f"proofmarket-sim/{seed}/{role}/{index}".encode()).hexdigest()


# -- the harness -------------------------------------------------------------------------

_Party: TypeAlias = ProverCore | UserCore


def run_simulation(config: SimConfig, *, keep_inputs: bool = False) -> SimResult:
    """Run `config.rounds` rounds to full settlement and report on them.

    With `keep_inputs`, `SimResult.inputs` holds every event fed to the coordinator, in
    order, accepted or not: a script that replays the same market without the harness.
    """
    market = Simulation(config, keep_inputs=keep_inputs)
    market.run()
    return market.finish()


class Simulation:
    """The market of `config`, advanced one timer at a time (`step`) or a round at a time.

    What it remembers beyond the parties' own state is the report's tally and each
    round's welfare (one row per round, or a window of rows with a windowed `tally`) and,
    with `keep_inputs`, every input.
    """

    proving_us_per_task = 1_000  # a market built another way (a scenario's) proves at this

    def __init__(
        self,
        config: SimConfig,
        *,
        keep_inputs: bool = False,
        tally: RoundTally | None = None,
        on_record: Callable[[CoordinatorEvent], None] | None = None,
        coordinator_key: str | None = None,
    ) -> None:
        if config.rounds < 1 or config.provers < 0 or config.users < 0:
            raise ValueError("a simulation needs rounds >= 1 and non-negative party counts")
        if not 0 <= config.faulty_provers <= config.provers:
            raise ValueError("faulty provers must be between 0 and the number of provers")
        self.config = config
        self.proving_us_per_task = config.proving_us_per_task
        self.keep_inputs = keep_inputs
        self.on_record = on_record  # sees each event the coordinator records, in order
        rng = random.Random(config.seed)
        # A real key when a coordinator process is to take the market over (the soak's
        # restart); a stand-in otherwise.
        self.coordinator_key = coordinator_key or sim_key(config.seed, "coordinator", 0)
        self.provers, deposits = _provers(config, rng, self.coordinator_key)
        self.users, balances = _users(config, rng, self.coordinator_key)
        self.parties: dict[str, _Party] = {**self.provers, **self.users}
        params = config.params()
        if params.subsidy_account is not None:
            # Enough for a deficit as large as every fee of every round.
            balances[params.subsidy_account] = (
                config.rounds
                * max(1, len(self.users))
                * (config.tasks_per_round * config.p_max * 2)
            )
        start = config.bid_window_ms
        coordinator = Coordinator(
            params,
            OpeningBalances(balances=balances, deposits=deposits),
            self.coordinator_key,
            start,
            rounds=config.rounds,
        )
        self._begin(coordinator, tally, start)

    def _begin(self, coordinator: Coordinator, tally: RoundTally | None, start: int) -> None:
        """The harness's own state, once the parties and the coordinator exist.

        A market built another way (a scenario's scripted parties) sets `parties`,
        `coordinator_key`, `keep_inputs` and `on_record`, then calls this.
        """
        self._everyone = list(self.parties)
        self.coordinator = coordinator
        self.result = SimResult(coordinator=self.coordinator, tally=tally or RoundTally())
        # Welfare rows for the rounds the tally reports: with a windowed tally (the soak's),
        # a window as wide, so a long market holds what it reports, not its whole history.
        self._observed = _Observed(self.coordinator.mechanism, self.result.tally.keep_rounds)
        self.coordinator.mechanism = self._observed
        self.now = 0
        self._seq = 0
        # Timers: (time, order, party key or "" for the coordinator, proving result or None).
        self._timers: list[tuple[int, int, str, ProvingDone | None]] = []
        self._inbox: deque[tuple[str, Message]] = deque()  # messages to the coordinator
        self._wakes: set[int] = set()  # coordinator wake-ups pending
        self._woken = -1  # the latest coordinator wake-up fired
        self._add_timer(start, "", None)

    @property
    def done(self) -> bool:
        return not self._timers or self.coordinator.finished

    def run(self) -> None:
        """Run to the end: every round cleared and settled."""
        while not self.done:
            self.step()

    def run_round(self) -> None:
        """Run until the next round opens for bids (or the market ends)."""
        start = self.coordinator.bidding_round
        while not self.done and self.coordinator.bidding_round == start:
            self.step()

    def finish(self) -> SimResult:
        self.result.report = market_report(self.coordinator, self.result.tally)
        _add_welfare(self.result.report, self._observed.rows)
        return self.result

    def step(self) -> None:
        """Fire the earliest timer, then deliver everything it caused."""
        at, _, key, done = heapq.heappop(self._timers)
        self.now = max(self.now, at)
        if key == "":
            self._wakes.discard(at)
            self._woken = max(self._woken, at)
            if self.keep_inputs:
                self.result.inputs.append(Tick(self.now))
            self._coordinator_effects(self.coordinator.handle(Tick(self.now)))
        else:
            party = self.parties[key]
            if done is not None and isinstance(party, ProverCore):
                self._party_effects(
                    key, party.handle(ProvingDone(done.round, done.proofs, self.now))
                )
            else:
                self._party_effects(key, party.handle(Tick(self.now)))
        self._drain()
        self._rearm()

    def _rearm(self) -> None:
        """Wake for the core's next deadline, as the coordinator service does after every
        batch: a round settled early on its proofs leaves its prove-deadline tick with
        nothing to do, and so with no WakeAt for the next bid deadline."""
        wake = self.coordinator.next_wake()
        if wake is not None and wake not in self._wakes and wake > self._woken:
            self._wakes.add(wake)
            self._add_timer(wake, "", None)

    def _add_timer(self, at: int, key: str, done: ProvingDone | None) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (at, self._seq, key, done))

    def _coordinator_effects(self, effects: Iterable[object]) -> None:
        for effect in effects:
            if isinstance(effect, Record):
                self.result.records += 1
                if self.on_record is not None:
                    self.on_record(effect.event)
            elif isinstance(effect, Publish):
                self.result.tally.note(effect.message)
                targets = self._everyone if effect.to is None else [effect.to]
                event = MessageReceived(self.coordinator_key, effect.message, b"", self.now)
                for target in targets:
                    party = self.parties.get(target)
                    if party is not None:
                        self._party_effects(target, party.handle(event))
            elif (
                isinstance(effect, WakeAt)
                and effect.at not in self._wakes
                and effect.at > self._woken
            ):
                self._wakes.add(effect.at)
                self._add_timer(effect.at, "", None)

    def _party_effects(self, key: str, effects: Iterable[object]) -> None:
        for effect in effects:
            if isinstance(effect, Publish):
                self._inbox.append((key, effect.message))
            elif isinstance(effect, WakeAt):
                self._add_timer(effect.at, key, None)
            elif isinstance(effect, StartProving):
                proofs = prove_batch(
                    [t.task_input for t in effect.tasks],
                    difficulty=effect.difficulty,
                    setup=effect.setup,
                )
                done = ProvingDone(
                    round=effect.round,
                    proofs=[
                        TaskProof(t.task_id, p) for t, p in zip(effect.tasks, proofs, strict=True)
                    ],
                    now=0,
                )
                took = 1 + -(-len(effect.tasks) * self.proving_us_per_task // 1000)
                self._add_timer(self.now + took, key, done)

    def _drain(self) -> None:
        while self._inbox:
            sender, message = self._inbox.popleft()
            self._seq += 1
            ref = self._seq.to_bytes(16, "big")
            party = self.parties.get(sender)
            if isinstance(party, UserCore) and isinstance(message, TaskBidMessage | TaskBids):
                # As the user service does: the user matches its receipt or reject by ref.
                party.sent(message, ref)
            event = MessageReceived(sender, message, ref, self.now)
            if self.keep_inputs:
                self.result.inputs.append(event)
            self._coordinator_effects(self.coordinator.handle(event))


def _provers(
    config: SimConfig, rng: random.Random, coordinator_key: str
) -> tuple[dict[str, ProverCore], dict[str, int]]:
    provers: dict[str, ProverCore] = {}
    deposits: dict[str, int] = {}
    for i in range(config.provers):
        key = sim_key(config.seed, "prover", i)
        capacity = rng.randint(*config.capacity_range)
        cost = rng.randint(*config.cost_range)
        fault = FAULT_CYCLE[i % len(FAULT_CYCLE)] if i < config.faulty_provers else "none"
        provers[key] = ProverCore(key, coordinator_key, config.market, capacity, cost, fault)
        # Enough for a few slashings before a faulty prover is priced out.
        deposits[key] = 3 * config.p_max * capacity
    return provers, deposits


def _users(
    config: SimConfig, rng: random.Random, coordinator_key: str
) -> tuple[dict[str, UserCore], dict[str, int]]:
    users: dict[str, UserCore] = {}
    balances: dict[str, int] = {}
    for i in range(config.users):
        key = sim_key(config.seed, "user", i)
        users[key] = UserCore(
            key,
            coordinator_key,
            config.market,
            random.Random(rng.getrandbits(64)),
            config.tasks_per_round,
            config.fee_range,
            config.carry_over,
        )
        balances[key] = config.rounds * config.tasks_per_round * config.p_max
    return users, balances


def _add_welfare(report: dict[str, object], rows: Sequence[tuple[int, int]]) -> None:
    """Each round's welfare, the optimum's on the same bids, and their ratio (None at 0)."""
    rounds = report["rounds"]
    assert isinstance(rounds, list)
    # A tally that keeps a window of rounds holds the last of them.
    newest = list(rows)[len(rows) - len(rounds) :]
    for row, (welfare, best) in zip(rounds, newest, strict=True):
        row["welfare"] = welfare
        row["optimum_welfare"] = best
        row["efficiency"] = round(welfare / best, 4) if best else None
