"""Retention: records older than a snapshot and the audit horizon leave the live store.

A market file chooses what happens to them (`[ledger] retention`): `keep` them all
(the default), `archive` them into compressed segment files beside the ledger, or
`drop` them. Either way the live store keeps the snapshot they end at, so a restart
loads it and replays the records after it; an archive additionally keeps everything
needed to re-check history: each segment holds the snapshot it starts from (none for
the first), its records, and the snapshot it ends at, so `verify_archive` replays each
segment and compares the state it reaches with the snapshot filed for it.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec

from coordinator.core import Coordinator, decode_record
from coordinator.snapshot import SnapshotError, capture, load, round_of
from coordinator.store import RecordStore

Mode = Literal["keep", "archive", "drop"]
MODES: Final = ("keep", "archive", "drop")
ARCHIVE_FORMAT: Final = 1
_SUFFIX: Final = ".pmarc"


@dataclass(frozen=True, slots=True)
class Retention:
    """What to do with records behind the newest usable snapshot and `audit_rounds`."""

    mode: Mode = "keep"
    audit_rounds: int = 86_400  # a day of one-second rounds stays live for audit

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"retention must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.audit_rounds < 0:
            raise ValueError(f"audit_rounds must be >= 0, got {self.audit_rounds}")


KEEP_ALL: Final = Retention()


class Segment(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """Records first .. end-1 of one market run, with the snapshots around them."""

    format: int
    key: str
    market: str
    first: int
    end: int
    start_snapshot: bytes | None  # the state before `first`; None when first == 0
    end_snapshot: bytes
    records: list[bytes]


def archive_dir(ledger: str) -> Path:
    return Path(f"{ledger}.archive")


def cut_position(store: RecordStore, retention: Retention) -> int | None:
    """Where records may be retired up to now, if anywhere; pins the next milestone.

    A milestone is a snapshot pinned when filed (so pruning keeps it). Once it is
    published (every record before it sent in full) and `audit_rounds` rounds older than
    the newest snapshot, it is the cut; then the newest snapshot is pinned as the next
    milestone. The live store so holds between one and two audit horizons of records.
    """
    positions = store.snapshots()
    if not positions or positions[-1] <= store.first():
        return None
    milestone = store.pinned()
    if milestone is None or milestone <= store.first():
        store.pin_snapshot(positions[-1])
        return None
    newest_round = round_of(store.read_snapshot(positions[-1]))
    ripe = round_of(store.read_snapshot(milestone)) <= newest_round - retention.audit_rounds
    if milestone > store.published() + 1 or not ripe:
        return None
    return milestone


def pin_oldest_ripe(store: RecordStore, retention: Retention) -> int | None:
    """Pin the newest snapshot already `audit_rounds` behind the newest one (offline use).

    A stopped coordinator's file has no milestone pinned long enough ago; this picks the
    best cut among the snapshots it holds, so `retire` can apply the retention at once.
    """
    positions = [p for p in store.snapshots() if p > store.first()]
    if not positions:
        return None
    newest_round = round_of(store.read_snapshot(positions[-1]))
    ripe = [
        p
        for p in positions
        if round_of(store.read_snapshot(p)) <= newest_round - retention.audit_rounds
    ]
    if not ripe:
        return None
    store.pin_snapshot(ripe[-1])
    return ripe[-1]


def retire(
    store: RecordStore, retention: Retention, *, key: str, market: str, archive: Path | None
) -> int | None:
    """Apply `retention` once: the new first live record, or None if nothing moved."""
    if retention.mode == "keep":
        return None
    cut = cut_position(store, retention)
    if cut is None:
        return None
    if retention.mode == "archive":
        if archive is None:
            raise ValueError("an in-memory record log has nowhere to archive to")
        first = store.first()
        start = store.read_snapshot(first) if first else None
        segment = Segment(
            ARCHIVE_FORMAT,
            key,
            market,
            first,
            cut,
            start,
            store.read_snapshot(cut),
            [bytes(r) for r in _take(store.replay(first), cut - first)],
        )
        _write_atomically(archive / f"{first:012d}-{cut:012d}{_SUFFIX}", segment)
    store.discard_before(cut)
    newest = store.snapshots()[-1]
    if newest > cut:
        store.pin_snapshot(newest)
    return cut


def _take(records: Iterator[bytes], count: int) -> Iterator[bytes]:
    for _, record in zip(range(count), records, strict=False):
        yield record


def _write_atomically(path: Path, segment: Segment) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        file.write(zlib.compress(msgspec.msgpack.encode(segment), 6))
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)


def read_segments(archive: Path) -> list[Segment]:
    """The archive's segments in record order."""
    segments = []
    for path in sorted(archive.glob(f"*{_SUFFIX}")):
        segments.append(msgspec.msgpack.decode(zlib.decompress(path.read_bytes()), type=Segment))
    return segments


def verify_archive(segments: list[Segment], blank: Coordinator) -> list[str]:
    """Replay every segment from its start state; the problems found (empty: all sound).

    `blank` is a new coordinator of the run (its genesis is the first segment's start).
    Segments must follow one another, and each must end in the snapshot filed for it.
    """
    problems: list[str] = []
    expected_first, previous_end = 0, None
    for segment in segments:
        name = f"segment {segment.first}..{segment.end}"
        if segment.first != expected_first:
            problems.append(f"{name}: expected to start at record {expected_first}")
        if segment.start_snapshot != previous_end:
            problems.append(f"{name}: starts from another state than the last segment ended in")
        core = _fresh(blank)
        try:
            if segment.start_snapshot is not None:
                load(core, segment.start_snapshot, position=segment.first)
        except SnapshotError as exc:
            problems.append(f"{name}: start snapshot refused: {exc}")
            continue
        for record in segment.records:
            core.handle(decode_record(record))
        if capture(core, segment.end) != segment.end_snapshot:
            problems.append(f"{name}: replaying it does not reach its end snapshot")
        expected_first, previous_end = segment.end, segment.end_snapshot
    return problems


def _fresh(blank: Coordinator) -> Coordinator:
    return Coordinator(
        blank.params,
        blank.genesis,
        blank.key,
        blank.start_ms,
        rounds=blank.rounds_limit,
        seen_rounds=blank.seen_rounds,
    )
