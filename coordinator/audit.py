"""Auditing a ledger file: what it holds, and whether its history replays to its snapshots.

`inspect_ledger` describes the live store and the archive; `verify_ledger` replays every
archive segment and then the live records from the oldest live state, and checks each
snapshot it passes; `export_records` yields every record still kept, archived first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from coordinator.core import SEEN_ROUNDS, Coordinator
from coordinator.record_log import read_meta
from coordinator.records import CoordinatorEvent, decode_record
from coordinator.retention import (
    archive_dir,
    read_head,
    read_records,
    segment_files,
    verify_archive,
)
from coordinator.snapshot import SnapshotError, capture, decode, load, rounds_of
from coordinator.store import SqliteStore


def _blank(ledger: str, any_snapshot: bytes | None) -> Coordinator:
    meta = read_meta(ledger)
    rounds, seen = rounds_of(any_snapshot) if any_snapshot is not None else (None, SEEN_ROUNDS)
    return Coordinator(
        meta.params, meta.genesis, meta.key, meta.start_ms, rounds=rounds, seen_rounds=seen
    )


def inspect_ledger(ledger: str) -> dict[str, object]:
    """Sizes, positions and snapshots of a ledger file and its archive."""
    meta = read_meta(ledger)
    files = segment_files(archive_dir(ledger))
    heads = [read_head(f) for f in files]
    with SqliteStore(ledger) as store:
        snapshots = [
            {
                "position": p,
                "round": decode(store.read_snapshot(p)).bidding,
                "bytes": len(store.read_snapshot(p)),
            }
            for p in store.snapshots()
        ]
        live = {"first": store.first(), "records": len(store), "published": store.published()}
    return {
        "market": meta.params.market,
        "coordinator": meta.key,
        "start_ms": meta.start_ms,
        "live": live | {"bytes": _size(ledger)},
        "snapshots": snapshots,
        "archive": {
            "segments": [[h.first, h.end] for h in heads],
            "bytes": sum(f.stat().st_size for f in files),
        },
    }


def _size(ledger: str) -> int:
    return sum(os.path.getsize(p) for p in (ledger, f"{ledger}-wal") if os.path.exists(p))


def verify_ledger(ledger: str) -> list[str]:
    """Every inconsistency between the history kept and the snapshots (empty: sound)."""
    files = segment_files(archive_dir(ledger))
    last = read_head(files[-1]) if files else None
    with SqliteStore(ledger) as store:
        positions = store.snapshots()
        sample = store.read_snapshot(positions[-1]) if positions else None
        blank = _blank(ledger, sample or (last.end_snapshot if last else None))
        problems = verify_archive(files, blank)
        first = store.first()
        if last is not None and last.end != first:
            problems.append(f"the archive ends at {last.end}, the live store starts at {first}")
        core = _blank(ledger, sample)
        if first:
            try:
                load(core, store.read_snapshot(first), position=first)
            except (KeyError, SnapshotError) as exc:
                return [*problems, f"the live store's starting snapshot at {first}: {exc!r}"]
        checked = set(positions) - {first}
        for seq, record in enumerate(store.replay(first), first):
            if seq in checked:
                problems.extend(_check(core, store.read_snapshot(seq), seq))
            core.handle(decode_record(record))
        if len(store) in checked:
            problems.extend(_check(core, store.read_snapshot(len(store)), len(store)))
    return problems


def _check(core: Coordinator, filed: bytes, position: int) -> list[str]:
    if capture(core, position) == filed:
        return []
    return [f"replaying the live records does not reach the snapshot at {position}"]


def export_records(ledger: str) -> Iterator[tuple[int, CoordinatorEvent]]:
    """(number, event) for every record kept, archived segments first."""
    for path in segment_files(archive_dir(ledger)):
        for seq, record in enumerate(read_records(path), read_head(path).first):
            yield seq, decode_record(record)
    with SqliteStore(ledger) as store:
        first = store.first()
        for seq, record in enumerate(store.replay(first), first):
            yield seq, decode_record(record)
