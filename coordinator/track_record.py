"""Each prover's track record, and the suspension rule that reads it: pure functions.

A record counts the batches a prover won, proved (on time or within the grace: `late`
counts those) and failed (slashed). It keeps the proving times of its last `TIMES_KEPT`
proven batches, for the published median, and the (round, failed) of its last settled
batches, as many as the market's suspension window: the history stays bounded.

Suspension (market keys `suspend_after_failures` K and `suspend_window` W): a prover
with at least K failures among its last W settled batches is suspended until W rounds
after the round of its latest failure; its cost bids are refused `prover_suspended`
meanwhile. The expiry is what lets a suspended prover, which can win nothing and so
settle nothing, come back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from coordinator.state import Batch, ProverState, TrackRecord
from protocol.messages import MarketParams, ProverRecord

# Proving times kept per prover for the median: enough to be stable, few enough to stay
# small in every clearing result and snapshot.
TIMES_KEPT: Final = 32


def note_won(record: TrackRecord) -> None:
    record.won += 1


def note_proved(
    record: TrackRecord, number: int, proving_ms: int, *, late: bool, window: int
) -> None:
    """A batch of round `number` proven `proving_ms` after its assignment."""
    record.proved += 1
    record.late += int(late)
    record.times = [*record.times, proving_ms][-TIMES_KEPT:]
    _note_settled(record, number, failed=False, window=window)


def note_failed(record: TrackRecord, number: int, *, window: int) -> None:
    """A batch of round `number` slashed."""
    record.failed += 1
    _note_settled(record, number, failed=True, window=window)


def note_settled(record: TrackRecord, batch: Batch, *, proven: bool, window: int) -> None:
    """`batch` settled: proven (its proving time noted) or slashed."""
    if not proven:
        note_failed(record, batch.round, window=window)
        return
    took = (batch.finished_ms or batch.assigned_ms) - batch.assigned_ms
    note_proved(record, batch.round, took, late=bool(batch.late), window=window)


def _note_settled(record: TrackRecord, number: int, *, failed: bool, window: int) -> None:
    record.recent = [*record.recent, (number, failed)][-window:] if window else []


def median_ms(times: list[int]) -> int | None:
    """The median proving time (the lower middle of an even count: an integer, exact)."""
    if not times:
        return None
    ordered = sorted(times)
    return ordered[(len(ordered) - 1) // 2]


def suspended(record: TrackRecord, bidding: int, params: MarketParams) -> bool:
    """Whether a prover with `record` may not bid in round `bidding` (see the module doc)."""
    k, w = params.suspend_after_failures, params.suspend_window
    if k == 0 or w == 0:
        return False
    failures = [n for n, failed in record.recent if failed]
    return len(failures) >= k and bidding <= max(failures) + w


def published(provers: Mapping[str, ProverState], keys: list[str]) -> list[ProverRecord] | None:
    """The public records of `keys` (the round's bidders), None when there are none."""
    records = [
        ProverRecord(
            prover=key,
            won=r.won,
            proved=r.proved,
            late=r.late,
            failed=r.failed,
            median_proving_ms=median_ms(r.times),
        )
        for key in sorted(keys)
        for r in [provers[key].record]
    ]
    return records or None
