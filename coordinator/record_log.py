"""The coordinator's record log: opened, checked, folded and resent from one place.

The log is a record store plus the run it belongs to (`RunMeta`, kept beside a ledger
file and checked on every restart). `fold` rebuilds the coordinator: from the newest
usable snapshot and the records after it, or from the first record when there is none
(or it is refused); and it says which messages the records after the published
watermark produced, which a restart sends again. While a market runs, `RecordLog`
files a snapshot of the live core every `snapshot_every` records, so a restart costs
the records since the last snapshot, not the market's whole history.

Service, tests and summaries all open and fold the log through here.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
import structlog

from coordinator.core import Coordinator
from coordinator.records import CoordinatorEvent, decode_record
from coordinator.retention import Retention, archive_dir, retire
from coordinator.snapshot import SnapshotError, capture, load
from coordinator.state import OpeningBalances
from coordinator.store import MemoryStore, RecordStore, SqliteStore
from protocol.events import Publish
from protocol.messages import MarketParams, Message

SNAPSHOT_EVERY: Final = 2048
"""Records between snapshots: a restart replays at most about this many."""
SNAPSHOT_KEEP: Final = 3
"""Snapshots kept: a restart needs one at or before the published watermark."""


def _log() -> structlog.typing.FilteringBoundLogger:
    # A fresh logger each time: a module-level one is cached by structlog on first use
    # and would keep whatever configuration was current then.
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("coordinator.record_log")
    return logger


class CoordinatorStartError(RuntimeError):
    """The ledger file belongs to another market, genesis or coordinator key."""


class RunMeta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What pins a ledger file to one market run: kept beside it, checked on restart."""

    key: str
    start_ms: int
    params: MarketParams
    genesis: OpeningBalances


def meta_path(ledger: str) -> Path:
    return Path(f"{ledger}.meta.json")


def resuming(ledger: str | None) -> bool:
    """Whether `ledger` holds a run already: a restart, not a new market."""
    return ledger is not None and meta_path(ledger).exists()


def _write_snapshot(core: Coordinator, position: int, directory: str, name: str) -> int:
    """In a forked child: the snapshot of `core` durably into `directory`/`name`; the
    child's exit code. Signals go back to their defaults, so the parent's handlers (and
    its event loop's wake-up descriptor) never run here."""
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        gc.disable()  # the collector would touch, and so copy, every page of the heap
        body = capture(core, position)
        path = os.path.join(directory, name)
        with open(path + ".tmp", "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException:
        return 1
    return 0


def read_meta(ledger: str) -> RunMeta:
    """The run a ledger file was started for."""
    return msgspec.json.decode(meta_path(ledger).read_bytes(), type=RunMeta)


class RecordLog:
    """A record store with its run; once `attach`ed to the live core, it snapshots it.

    It is itself a record store (it passes every call through), so the service writes
    to it as to any store; a snapshot is taken right after a write, when the core has
    folded exactly the records in the store (by a forked child, when attached `forked`).
    """

    def __init__(
        self,
        store: RecordStore,
        meta: RunMeta,
        *,
        snapshot_every: int = SNAPSHOT_EVERY,
        retention: Retention | None = None,
        archive: Path | None = None,
    ) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
        self.store = store
        self.meta = meta
        self.snapshot_every = snapshot_every
        self.retention = retention or Retention()
        self.archive = archive  # where retired records go when retention is "archive"
        self._core: Coordinator | None = None
        self._forked = False
        self._child: tuple[int, int, str, float] | None = None  # pid, position, file, start
        self._wrote = False  # records appended through this log since it was opened
        filed = store.snapshots()
        self._snapshot_at = filed[-1] if filed else 0

    def attach(self, core: Coordinator, *, forked: bool = False) -> None:
        """Snapshot `core` from now on; it must have folded every record in the store.

        `forked`: a write never snapshots by itself; the owner calls `snapshot_soon`
        after its writes, which captures the core in a forked child (its copy-on-write
        image of the heap at that moment), and files the result once the child is done,
        so the capture costs the owner's event loop nothing. Where there is no fork or no
        SQLite file to write beside, it snapshots at once, as a write would.
        """
        self._core = core
        self._forked = forked

    def snapshot_soon(self) -> int | None:
        """File a forked snapshot that has finished, then start one if one is due; the
        position filed, if any."""
        filed = self._collect(wait=False)
        if self._child is None and self._due():
            if isinstance(self.store, SqliteStore) and hasattr(os, "fork"):
                self._fork(self.store)
            else:
                filed = self.snapshot()
        return filed

    def finish_snapshot(self) -> int | None:
        """Wait for a forked snapshot still being written, and file it (a stop's first
        step); the position filed, if any."""
        return self._collect(wait=True)

    def _due(self) -> bool:
        return self._core is not None and len(self.store) - self._snapshot_at >= self.snapshot_every

    def _fork(self, store: SqliteStore) -> None:
        assert self._core is not None
        position = len(self.store)
        name = f"{position:012d}.snapshot"
        directory = store.snapshot_dir
        os.makedirs(directory, exist_ok=True)
        pid = os.fork()
        if pid == 0:  # the child: capture, write, and leave without running any cleanup
            os._exit(_write_snapshot(self._core, position, directory, name))
        self._child = (pid, position, name, time.perf_counter())

    def _collect(self, *, wait: bool) -> int | None:
        if self._child is None:
            return None
        pid, position, name, started = self._child
        done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
        if done == 0:
            return None
        self._child = None
        if os.waitstatus_to_exitcode(status) != 0:
            _log().warning("record_log.snapshot_failed", position=position, status=status)
            return None
        assert isinstance(self.store, SqliteStore)
        self.store.save_snapshot_file(position, name, keep=SNAPSHOT_KEEP)
        size = os.path.getsize(os.path.join(self.store.snapshot_dir, name))
        return self._filed(position, size, started, forked=True)

    def snapshot(self) -> int | None:
        """File a snapshot of the attached core now; its position, or None if detached."""
        if self._core is None:
            return None
        position = len(self.store)
        started = time.perf_counter()
        body = capture(self._core, position)
        self.store.save_snapshot(position, body, keep=SNAPSHOT_KEEP)
        return self._filed(position, len(body), started, forked=False)

    def _filed(self, position: int, size: int, started: float, *, forked: bool) -> int:
        """A snapshot at `position` is filed: the retention applies, and a line says so."""
        self._snapshot_at = position
        retired = self.retire()
        _log().info(
            "record_log.snapshot",
            position=position,
            bytes=size,
            first_live=self.store.first() if retired is not None else None,
            ms=round((time.perf_counter() - started) * 1000, 1),
            forked=forked,
        )
        return position

    def snapshot_if_behind(self) -> int | None:
        """File a snapshot if this run wrote records since the last one: a clean stop's
        last act, so that the next start replays nothing (a run that wrote nothing leaves
        the file as it found it). Its position, or None if none was due."""
        if self._core is None or not self._wrote or len(self.store) == self._snapshot_at:
            return None
        return self.snapshot()

    def retire(self) -> int | None:
        """Apply the retention once; the new first live record, or None if none moved."""
        meta = self.meta
        return retire(
            self.store,
            self.retention,
            key=meta.key,
            market=meta.params.market,
            archive=self.archive,
            newest=None if self._core is None else self._core.current_round,
        )

    # -- the record store's interface, passed through ------------------------------------

    def append(self, record: bytes) -> int:
        return self.append_many([record])

    def append_many(self, records: Sequence[bytes], *, published: int | None = None) -> int:
        last = self.store.append_many(records, published=published)
        self._wrote = self._wrote or bool(records)
        if not self._forked and self._due():
            self.snapshot()
        return last

    def published(self) -> int:
        return self.store.published()

    def mark_published(self, seq: int) -> None:
        self.store.mark_published(seq)

    def replay(self, start: int = 0) -> Iterator[bytes]:
        return self.store.replay(start)

    def save_snapshot(self, position: int, body: bytes, *, keep: int = 2) -> None:
        self.store.save_snapshot(position, body, keep=keep)

    def snapshots(self) -> list[int]:
        return self.store.snapshots()

    def read_snapshot(self, position: int) -> bytes:
        return self.store.read_snapshot(position)

    def first(self) -> int:
        return self.store.first()

    def discard_before(self, position: int) -> None:
        self.store.discard_before(position)

    def pin_snapshot(self, position: int, round: int) -> None:
        self.store.pin_snapshot(position, round)

    def pinned(self) -> list[tuple[int, int]]:
        return self.store.pinned()

    def __len__(self) -> int:
        return len(self.store)

    def close(self) -> None:
        try:
            self._collect(wait=True)  # never leave a child behind, nor its snapshot unfiled
        finally:
            self.store.close()


def open_record_log(
    ledger: str | None,
    *,
    key: str,
    params: MarketParams,
    genesis: OpeningBalances,
    start_ms: int,
    snapshot_every: int = SNAPSHOT_EVERY,
    retention: Retention | None = None,
) -> RecordLog:
    """The record log of `ledger` (in memory when None), checked against this run.

    A new ledger is pinned to a run starting at `start_ms`; an existing one keeps its
    own start and must name the same key, market rules and genesis.
    """
    fresh = RunMeta(key, start_ms, params, genesis)
    if ledger is None:
        return RecordLog(MemoryStore(), fresh, snapshot_every=snapshot_every, retention=retention)
    path = meta_path(ledger)
    if path.exists():
        meta = read_meta(ledger)
        for what, mine, theirs in (
            ("coordinator key", key, meta.key),
            ("market", params, meta.params),
            ("genesis", genesis, meta.genesis),
        ):
            if mine != theirs:
                raise CoordinatorStartError(
                    f"ledger {ledger} was started with another {what}; "
                    "use a new ledger file for a new market run"
                )
    else:
        meta = fresh
        # Write-then-rename: a crash here leaves no meta file or a whole one, never half.
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(msgspec.json.encode(meta))
        partial.replace(path)
    return RecordLog(
        SqliteStore(ledger),
        meta,
        snapshot_every=snapshot_every,
        retention=retention,
        archive=archive_dir(ledger),
    )


@dataclass(slots=True)
class Folded:
    """A coordinator rebuilt from its log, and what it owes the wire."""

    core: Coordinator
    resend: list[Publish] = field(default_factory=list)
    tail: list[CoordinatorEvent] = field(default_factory=list)  # replayed events
    snapshot: int | None = None  # position of the snapshot started from; None: record 0
    seconds: float = 0.0


def fold(
    log: RecordLog,
    *,
    rounds: int | None = None,
    use_snapshot: bool = True,
    observe: Callable[[Message], object] | None = None,
    keep_tail: bool = True,
    tie_signer: Callable[[bytes], bytes] | None = None,
) -> Folded:
    """Rebuild the core: the newest usable snapshot (unless told not to), then the tail.

    Records up to the published watermark replay silently; the messages the records
    after it produce are returned to be sent again. `observe` sees every message the
    replayed records produce (a summary's tally); `keep_tail` keeps the replayed events.
    A market with signed ties needs `tie_signer` (the coordinator's key) to replay.
    """
    started = time.perf_counter()
    # A fold builds what it keeps: the collector's passes over the growing state would
    # find nothing to free, and cost a third of a restart's fold.
    collecting = gc.isenabled()
    gc.disable()
    try:
        folded = _fold(log, rounds, use_snapshot, observe, keep_tail, tie_signer)
    finally:
        if collecting:
            gc.enable()
    folded.seconds = time.perf_counter() - started
    return folded


def _fold(
    log: RecordLog,
    rounds: int | None,
    use_snapshot: bool,
    observe: Callable[[Message], object] | None,
    keep_tail: bool,
    tie_signer: Callable[[bytes], bytes] | None,
) -> Folded:
    meta = log.meta
    published = log.published()
    core = Coordinator(
        meta.params, meta.genesis, meta.key, meta.start_ms, rounds=rounds, tie_signer=tie_signer
    )
    first = log.first()
    position = _load_snapshot(log, core, published) if use_snapshot else None
    if position is None and first:
        raise CoordinatorStartError(
            f"records before {first} have left the live store and no snapshot covering them "
            "loads; restore the snapshot or replay the archive (proofmarket ledger verify)"
        )
    folded = Folded(core, snapshot=position)
    for seq, record in enumerate(log.replay(position or 0), position or 0):
        event = decode_record(record)
        if keep_tail:
            folded.tail.append(event)
        for effect in core.handle(event):
            if not isinstance(effect, Publish):
                continue
            if observe is not None:
                observe(effect.message)
            if seq > published:
                folded.resend.append(effect)
    return folded


def _load_snapshot(log: RecordLog, core: Coordinator, published: int) -> int | None:
    """Load the newest snapshot a restart can use into `core`; its position, or None.

    Usable means at or before the published watermark, so that every record whose
    messages may not have gone out is replayed. A refused snapshot is logged and the
    next older one tried; with none left the full log is used.
    """
    usable = [p for p in log.snapshots() if log.first() <= p <= published + 1]
    for position in reversed(usable):
        try:
            load(core, log.read_snapshot(position), position=position)
        except SnapshotError as exc:
            older = any(p < position for p in usable)
            _log().warning(
                "record_log.snapshot_refused",
                position=position,
                reason=str(exc),
                fallback="an older snapshot" if older else "replaying the full record log",
            )
            continue
        return position
    return None
