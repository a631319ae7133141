"""Snapshots: a coordinator's folded state as bytes, so a restart need not replay history.

A snapshot is the core's whole state after the first `position` records of its log,
with the run it belongs to (key, start, rules, genesis) in its header and a digest over
everything. `load` refuses bytes that are damaged (`SnapshotCorrupt`) or that belong to
another run (`SnapshotForeign`); a refused snapshot is never half-applied, and the
caller falls back to the full log. This module is the core's persistence partner: it
reads and writes the core's private fields, and nothing else does.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from coordinator.accounts import Accounts, AccountsError, dump_accounts, load_accounts
from coordinator.core import Coordinator
from coordinator.state import (
    Batch,
    CostBid,
    OpeningBalances,
    Phase,
    ProverState,
    Round,
    TaskKey,
    TaskState,
    TrackRecord,
)
from protocol.messages import MarketParams

FORMAT: Final = 1
MAGIC: Final = b"PMSNAP\x01"
_DIGEST: Final = 32


class SnapshotError(ValueError):
    """A snapshot that cannot be used; the full record log must be replayed instead."""


class SnapshotCorrupt(SnapshotError):
    """The bytes are damaged, truncated, or not a snapshot of this format."""


class SnapshotForeign(SnapshotError):
    """A sound snapshot of another run: other key, start, rules, genesis or covered records."""


class _Run(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    key: str
    start_ms: int
    rounds: int | None
    seen_rounds: int
    params: MarketParams
    genesis: OpeningBalances


class _BatchState(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    prover: str
    tasks: list[TaskKey]
    payment: int
    proofs: list[tuple[TaskKey, bytes | None]]
    settled: bool
    assigned_ms: int = 0
    finished_ms: int | None = None
    late: list[TaskKey] = []


class _RoundState(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    number: int
    epoch: int
    bid_deadline: int
    prove_deadline: int
    phase: str
    tasks: list[TaskKey]
    cost_bids: list[tuple[str, int, bytes]]
    batches: list[_BatchState]


class _State(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    format: int
    run: _Run
    position: int
    started: bool
    bidding: int
    floor: int
    balances: list[tuple[str, str, int]]
    funded: int
    withdrawn: int
    tasks: list[TaskState]
    rounds: list[_RoundState]
    provers: list[tuple[str, dict[int, int], list[int]]]
    declaration_refs: list[tuple[int, list[bytes]]]
    refs: list[tuple[int, list[bytes]]]
    grants: list[tuple[int, tuple[str, str, int]]]
    grant_refs: list[bytes]
    slashes: list[tuple[str, int]] = []
    shift: int = 0
    records: list[tuple[str, TrackRecord]] = []
    offline: list[str] = []
    presence: list[tuple[str, int, int]] = []  # prover, newest will's and online's stamps
    rescues: list[tuple[str, int]] = []  # prover, when its reconnect grace ends


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_State)


def _run_of(core: Coordinator) -> _Run:
    return _Run(
        core.key, core.start_ms, core.rounds_limit, core.seen_rounds, core.params, core.genesis
    )


def capture(core: Coordinator, position: int) -> bytes:
    """The snapshot of `core`, which has folded exactly the first `position` records."""
    balances, funded, withdrawn = dump_accounts(core.accounts)
    state = _State(
        format=FORMAT,
        run=_run_of(core),
        position=position,
        started=core._started,
        bidding=core._bidding,
        floor=core._floor,
        balances=balances,
        funded=funded,
        withdrawn=withdrawn,
        tasks=list(core._tasks.values()),
        rounds=[_round_state(r) for r in core._rounds.values()],
        provers=[(k, dict(p.capacities), sorted(p.open_rounds)) for k, p in core._provers.items()],
        declaration_refs=[(e, sorted(refs)) for e, refs in core._declaration_refs.items()],
        refs=[(n, sorted(refs)) for n, refs in core._refs.items()],
        grants=list(core._grants.items()),
        grant_refs=sorted(core._grant_refs),
        slashes=sorted(core.slashes.items()),
        shift=core._shift,
        records=[(k, p.record) for k, p in core._provers.items()],
        offline=sorted(k for k, p in core._provers.items() if p.offline),
        presence=[(k, p.will_at, p.online_at) for k, p in core._provers.items()],
        rescues=sorted(core._rescues.items()),
    )
    payload = _encoder.encode(state)
    return MAGIC + hashlib.blake2b(payload, digest_size=_DIGEST).digest() + payload


def _round_state(r: Round) -> _RoundState:
    return _RoundState(
        number=r.number,
        epoch=r.epoch,
        bid_deadline=r.bid_deadline,
        prove_deadline=r.prove_deadline,
        phase=r.phase.value,
        tasks=list(r.tasks),
        cost_bids=[(k, b.cost, b.ref) for k, b in r.cost_bids.items()],
        batches=[
            _BatchState(
                b.prover,
                list(b.tasks),
                b.payment,
                list(b.proofs.items()),
                b.settled,
                b.assigned_ms,
                b.finished_ms,
                list(b.late),
            )
            for b in r.batches.values()
        ],
    )


def decode(data: bytes) -> _State:
    """The snapshot's state, checked for damage only (see `load` for the run)."""
    head = len(MAGIC) + _DIGEST
    if len(data) < head or not data.startswith(MAGIC):
        raise SnapshotCorrupt("not a proofmarket snapshot of this format")
    payload = data[head:]
    if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != data[len(MAGIC) : head]:
        raise SnapshotCorrupt("the snapshot's digest does not match its contents")
    try:
        state = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise SnapshotCorrupt(f"the snapshot does not decode: {exc}") from exc
    if state.format != FORMAT:
        raise SnapshotCorrupt(f"snapshot format {state.format}, this build reads {FORMAT}")
    return state


def position_of(data: bytes) -> int:
    """How many records the snapshot covers (after checking it is sound)."""
    return decode(data).position


def round_of(data: bytes) -> int:
    """The round that was open for bids (or next to open) when the snapshot was taken."""
    return decode(data).bidding


def load(blank: Coordinator, data: bytes, *, position: int | None = None) -> Coordinator:
    """`blank` (a new coordinator of the run) given the snapshot's state, or an error.

    `position`, when given, is where the store filed the snapshot; a snapshot claiming to
    cover other records is refused. `blank` is changed only when everything checks out.
    """
    state = decode(data)
    if state.run != _run_of(blank):
        raise SnapshotForeign("the snapshot is of another run (key, start, rules or genesis)")
    if position is not None and state.position != position:
        raise SnapshotForeign(f"snapshot filed at {position} covers {state.position} records")
    if blank._started or blank._rounds:
        raise ValueError("a snapshot is loaded into a new coordinator only")
    try:
        ledger = load_accounts(state.balances, state.funded, state.withdrawn)
        rounds = {r.number: _round_of(r) for r in state.rounds}
    except (AccountsError, ValueError, KeyError) as exc:
        raise SnapshotCorrupt(f"the snapshot's state is inconsistent: {exc}") from exc
    _apply(blank, state, ledger, rounds)
    return blank


def _round_of(r: _RoundState) -> Round:
    batches = {
        b.prover: Batch(
            prover=b.prover,
            round=r.number,
            tasks=tuple(tuple(t) for t in b.tasks),  # type: ignore[misc]
            payment=b.payment,
            proofs={tuple(k): v for k, v in b.proofs},  # type: ignore[misc]
            settled=b.settled,
            assigned_ms=b.assigned_ms,
            finished_ms=b.finished_ms,
            late=[tuple(t) for t in b.late],  # type: ignore[misc]
        )
        for b in r.batches
    }
    return Round(
        number=r.number,
        epoch=r.epoch,
        bid_deadline=r.bid_deadline,
        prove_deadline=r.prove_deadline,
        phase=Phase(r.phase),
        tasks=[tuple(t) for t in r.tasks],  # type: ignore[misc]
        cost_bids={k: CostBid(cost=c, ref=ref) for k, c, ref in r.cost_bids},  # ties: _apply
        batches=batches,
    )


def _apply(core: Coordinator, state: _State, ledger: Accounts, rounds: dict[int, Round]) -> None:
    core.accounts = ledger
    core._started = state.started
    core._bidding = state.bidding
    core._floor = state.floor
    core._epochs_kept = state.floor // core.params.epoch_rounds
    core._rounds = rounds
    core._tasks = {(t.user, t.task_id): t for t in state.tasks}
    core._wire = {t.wire_id: (t.user, t.task_id) for t in state.tasks}
    for r in rounds.values():
        seed = core._seed(r.number)
        for prover, cost_bid in r.cost_bids.items():
            cost_bid.tie = seed.tie(prover)
        if r.phase is Phase.BID:  # the book's columns: taken again, as the bids came in
            keys, r.tasks = r.tasks, []
            for key in keys:
                core._enter(r, key)
    records = dict(state.records)
    offline = set(state.offline)
    stamps = {k: (will_at, online_at) for k, will_at, online_at in state.presence}
    core._provers = {
        k: ProverState(
            capacities=dict(caps),
            open_rounds=set(open_rounds),
            record=records.get(k, TrackRecord()),
            offline=k in offline,
            will_at=stamps.get(k, (-1, -1))[0],
            online_at=stamps.get(k, (-1, -1))[1],
        )
        for k, caps, open_rounds in state.provers
    }
    core._rescues = dict(state.rescues)
    core._proving = {n for n, r in rounds.items() if r.phase is Phase.PROVE}
    core._declaration_refs = {e: set(refs) for e, refs in state.declaration_refs}
    core._refs = {n: set(refs) for n, refs in state.refs}
    core._grants = {nonce: tuple(g) for nonce, g in state.grants}  # type: ignore[misc]
    core._grant_refs = set(state.grant_refs)
    core.slashes = dict(state.slashes)
    core._shift = state.shift


def rounds_of(data: bytes) -> tuple[int | None, int]:
    """The run's round limit and seen-rounds horizon, as the snapshot records them."""
    run = decode(data).run
    return run.rounds, run.seen_rounds
