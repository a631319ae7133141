"""A prover's presence, as rules: its wills and `prover_online`s, ordered by connection.

Every connection a prover makes carries a stamp, later than any before it: the will the
broker publishes when that connection dies and the `prover_online` the prover sends when
it comes up both carry it. The broker delivers a will whenever it notices the death,
which may be after the prover is back on a newer connection (a takeover, a broker
restart), so arrival order says little; the stamps say which is newer. A connection's
online comes before its will, so (stamp, will after online) orders them all: a message
counts only if it is newer than everything taken. Pure: stamps are message fields.
"""

from __future__ import annotations

from coordinator.state import ProverState


def will_counts(prover: ProverState, connected_at: int) -> bool:
    """Whether a will of the connection made at `connected_at` says the prover is gone.

    Not when a newer connection has said it is online, nor when a will of this or a newer
    connection was taken already: both are stale, and change nothing.
    """
    return connected_at > prover.will_at and connected_at >= prover.online_at


def online_counts(prover: ProverState, connected_at: int) -> bool:
    """Whether a `prover_online` of the connection made at `connected_at` is news.

    Not when this or a newer connection's will or online was taken already.
    """
    return connected_at > prover.online_at and connected_at > prover.will_at


def rescue_at(prover: ProverState, now: int, grace_ms: int) -> int | None:
    """When a prover whose will was taken at `now` fails its open batches, if it holds any.

    A batch whose deadline falls first settles then, as ever; nothing waits on the grace.
    """
    return now + grace_ms if prover.open_rounds else None
