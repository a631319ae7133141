"""A market's whole state, and what the tests, the operator and the snapshots read of it.

`MarketState` holds what the coordinator's rules change: the ledger, rounds, tasks,
provers, and the envelope references that make redeliveries harmless. The rules
themselves are `coordinator.core.Coordinator`, which is a `MarketState`; only they change
these fields (coordinator/snapshot.py restores them, coordinator/views.py compares them).
Pure: values and readers, no rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Literal

from coordinator.accounts import balance_of, deposit_of, escrow_of, locked_of
from coordinator.funds import opening_accounts
from coordinator.schedule import Due, next_deadline, next_due, round_deadlines, settle_at
from coordinator.state import OpeningBalances, Phase, ProverState, Round, TaskKey, TaskState
from coordinator.views import comparable_state, state_size
from protocol.messages import MarketParams

# How many rounds back envelope references are remembered to drop redeliveries silently;
# settled rounds older than this are forgotten altogether (their tasks included).
SEEN_ROUNDS: Final = 64

_NO_REFS: Final[frozenset[bytes]] = frozenset()


class MarketState:
    """The state of one market: `params` its rules, `genesis` its starting money.

    `start_ms` is when round 0 opens; `rounds`, when given, stops the market after that
    many rounds (round numbers 0..rounds-1).
    """

    def __init__(
        self,
        params: MarketParams,
        genesis: OpeningBalances,
        start_ms: int,
        *,
        rounds: int | None = None,
        seen_rounds: int = SEEN_ROUNDS,
    ) -> None:
        self.params = params
        self.genesis = genesis
        self.start_ms = start_ms
        self.rounds_limit = rounds
        if seen_rounds < 1:
            raise ValueError(f"seen_rounds must be >= 1, got {seen_rounds}")
        self.seen_rounds = seen_rounds
        self.accounts = opening_accounts(genesis)
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
        # Provers whose will came while they held a batch -> when their reconnect grace
        # ends and those batches fail, unless they are back first (coordinator.presence).
        self._rescues: dict[str, int] = {}

    @property
    def finished(self) -> bool:
        """True once a market with a round limit has settled every round."""
        return (
            self._started
            and self.rounds_limit is not None
            and self._bidding >= self.rounds_limit
            and not self._proving
        )

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

    def next_wake(self) -> int | None:
        """When the next deadline falls, so an adapter (re)arms its timer after a restore."""
        if not self._started:
            return self.start_ms
        grace = self.params.late_grace_ms
        return next_deadline(self._rounds, self._proving, self._bidding, grace, self._rescues)

    def pending_rescues(self) -> dict[str, int]:
        """Provers whose will came while they held a batch -> when those batches fail."""
        return dict(self._rescues)

    def _next_due(self, now: int) -> Due | tuple[Literal["start"], int] | None:
        """The deadline passed by `now` to act on first; the market's start is one too."""
        if not self._started:
            return ("start", 0) if now >= self.start_ms else None
        grace = self.params.late_grace_ms
        return next_due(self._rounds, self._proving, self._bidding, now, grace, self._rescues)

    def _settle_at(self, r: Round) -> int:
        return settle_at(r, self.params.late_grace_ms)

    def round_deadlines(self, number: int) -> tuple[int, int]:
        """(bid deadline, prove deadline) of round `number`."""
        return round_deadlines(self.params, self.start_ms, self._shift, number)

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

    def size(self) -> dict[str, int]:
        """How many entries the state holds, by kind: what must stay bounded over time."""
        return state_size(self)

    def _seen(self, number: int) -> frozenset[bytes] | set[bytes]:
        """The envelope references accepted in round `number` and still remembered."""
        return self._refs.get(number, _NO_REFS)

    def _remember(self, number: int, ref: bytes) -> None:
        self._refs.setdefault(number, set()).add(ref)
