"""Retention: records older than a snapshot and the audit horizon leave the live store.

A market file chooses what happens to them (`[ledger] retention`): `keep` them all
(the default), `archive` them into compressed segment files beside the ledger, or
`drop` them. Either way the live store keeps the snapshot they end at, so a restart
loads it and replays the records after it; an archive additionally keeps everything
needed to re-check history: each segment holds the snapshot it starts from (none for
the first), its records, and the snapshot it ends at, so `verify_archive` replays each
segment and compares the state it reaches with the snapshot filed for it.

Cuts fall on milestones: snapshots pinned (kept from pruning) every audit horizon / 8
rounds. A milestone is cut at once it is published and a whole horizon behind the
newest snapshot, so each retirement moves about an eighth of a horizon, streamed to
the archive a record at a time, and the live store holds up to 9/8 of a horizon.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec

from coordinator.core import Coordinator
from coordinator.records import decode_record
from coordinator.snapshot import SnapshotError, capture, load, round_of
from coordinator.store import RecordStore

Mode = Literal["keep", "archive", "drop"]
MODES: Final = ("keep", "archive", "drop")
ARCHIVE_FORMAT: Final = 1
_SUFFIX: Final = ".pmarc"
MILESTONES: Final = 8
"""Pinned snapshots per audit horizon: each retirement moves about 1/8 of a horizon."""
_FRAME: Final = struct.Struct(">I")


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
    """The head of an archive file: records first .. end-1 of one run, and its snapshots.

    The records follow it in the file, one length-prefixed frame each.
    """

    format: int
    key: str
    market: str
    first: int
    end: int
    start_snapshot: bytes | None  # the state before `first`; None when first == 0
    end_snapshot: bytes


def archive_dir(ledger: str) -> Path:
    return Path(f"{ledger}.archive")


def cut_position(store: RecordStore, retention: Retention, newest_round: int) -> int | None:
    """Where records may be retired up to now, if anywhere; pins a milestone when due.

    `newest_round` is the round of the newest snapshot (the one just filed).
    """
    positions = store.snapshots()
    first = store.first()
    if not positions or positions[-1] <= first:
        return None
    pins = [(p, r) for p, r in store.pinned() if p > first]
    spacing = max(1, retention.audit_rounds // MILESTONES)
    if not pins or newest_round - pins[-1][1] >= spacing:
        store.pin_snapshot(positions[-1], newest_round)
    published = store.published()
    ripe = [p for p, r in pins if p <= published + 1 and r <= newest_round - retention.audit_rounds]
    return ripe[-1] if ripe else None


def pin_oldest_ripe(store: RecordStore, retention: Retention) -> int | None:
    """Pin the newest snapshot already `audit_rounds` behind the newest one (offline use).

    A stopped coordinator's file may have no milestone that old; this picks the best cut
    among the snapshots it holds, so `retire` can apply the retention at once.
    """
    positions = [p for p in store.snapshots() if p > store.first()]
    if not positions:
        return None
    rounds = {p: round_of(store.read_snapshot(p)) for p in positions}
    ripe = [p for p in positions if rounds[p] <= rounds[positions[-1]] - retention.audit_rounds]
    if not ripe:
        return None
    store.pin_snapshot(ripe[-1], rounds[ripe[-1]])
    return ripe[-1]


def newest_round(store: RecordStore) -> int | None:
    """The round of the newest snapshot, if any (decodes it)."""
    positions = store.snapshots()
    return round_of(store.read_snapshot(positions[-1])) if positions else None


def retire(
    store: RecordStore,
    retention: Retention,
    *,
    key: str,
    market: str,
    archive: Path | None,
    newest: int | None = None,
) -> int | None:
    """Apply `retention` once: the new first live record, or None if nothing moved.

    `newest` is the newest snapshot's round when the caller knows it (saves a decode).
    """
    if retention.mode == "keep":
        return None
    newest = newest_round(store) if newest is None else newest
    cut = None if newest is None else cut_position(store, retention, newest)
    if cut is None:
        return None
    if retention.mode == "archive":
        if archive is None:
            raise ValueError("an in-memory record log has nowhere to archive to")
        first = store.first()
        head = Segment(
            ARCHIVE_FORMAT,
            key,
            market,
            first,
            cut,
            store.read_snapshot(first) if first else None,
            store.read_snapshot(cut),
        )
        _write_segment(archive / f"{first:012d}-{cut:012d}{_SUFFIX}", head, store)
    store.discard_before(cut)
    return cut


def _write_segment(path: Path, head: Segment, store: RecordStore) -> None:
    """Stream the head and records first .. end-1 into a compressed file, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    packer = zlib.compressobj(6)
    with open(partial, "wb") as file:
        for frame in _frames_of(head, store):
            file.write(packer.compress(frame))
        file.write(packer.flush())
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)


def _frames_of(head: Segment, store: RecordStore) -> Iterator[bytes]:
    body = msgspec.msgpack.encode(head)
    yield _FRAME.pack(len(body)) + body
    for _, record in zip(range(head.end - head.first), store.replay(head.first), strict=False):
        yield _FRAME.pack(len(record)) + record


def segment_files(archive: Path) -> list[Path]:
    return sorted(archive.glob(f"*{_SUFFIX}")) if archive.exists() else []


def read_head(path: Path) -> Segment:
    """The head of one archive file."""
    return msgspec.msgpack.decode(next(_read_frames(path)), type=Segment)


def read_records(path: Path) -> Iterator[bytes]:
    """The records of one archive file, streamed."""
    frames = _read_frames(path)
    next(frames)
    yield from frames


def _read_frames(path: Path) -> Iterator[bytes]:
    unpacker = zlib.decompressobj()
    buffer = b""
    with open(path, "rb") as file:
        while chunk := file.read(1 << 16):
            buffer += unpacker.decompress(chunk)
            while len(buffer) >= _FRAME.size:
                (size,) = _FRAME.unpack_from(buffer)
                if len(buffer) < _FRAME.size + size:
                    break
                yield buffer[_FRAME.size : _FRAME.size + size]
                buffer = buffer[_FRAME.size + size :]
    if buffer or not unpacker.eof:
        raise ValueError(f"archive file {path} is truncated")


def verify_archive(files: list[Path], blank: Coordinator) -> list[str]:
    """Replay every segment from its start state; the problems found (empty: all sound).

    `blank` is a new coordinator of the run (its genesis is the first segment's start).
    Segments must follow one another, and each must end in the snapshot filed for it.
    """
    problems: list[str] = []
    expected_first, previous_end = 0, None
    for path in files:
        head = read_head(path)
        name = f"segment {head.first}..{head.end}"
        if head.first != expected_first:
            problems.append(f"{name}: expected to start at record {expected_first}")
        if head.start_snapshot != previous_end:
            problems.append(f"{name}: starts from another state than the last segment ended in")
        core = _fresh(blank)
        try:
            if head.start_snapshot is not None:
                load(core, head.start_snapshot, position=head.first)
            for record in read_records(path):
                core.handle(decode_record(record))
        except (SnapshotError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        if capture(core, head.end) != head.end_snapshot:
            problems.append(f"{name}: replaying it does not reach its end snapshot")
        expected_first, previous_end = head.end, head.end_snapshot
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
