"""Checking bids before any mechanism sees them: one error type, naming the bid and the problem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from protocol.mechanism.base import BidError, ProverBid, TaskBid

# Every amount and capacity must fit the int64 arrays of the fast path.
MAX_VALUE = 2**63 - 1


def _whole(value: object) -> bool:
    # bool is an int subclass, but True is not a fee.
    return isinstance(value, int) and not isinstance(value, bool)


def _name(bid_id: object) -> str:
    return f"{bid_id!r}" if isinstance(bid_id, str) else f"<{bid_id!r}>"


def _plainly_good(ids: list[object], amounts: list[list[Any]], low: list[int]) -> bool:
    """True if every id is a distinct non-empty str and every amount a plain int in range:
    a pass over whole lists, so good books skip the bid-by-bid checks that name a culprit."""
    if not all(type(i) is str and i for i in ids) or len(set(ids)) != len(ids):
        return False
    for column, floor in zip(amounts, low, strict=True):
        if not all(type(v) is int for v in column):
            return False
        if column and (min(column) < floor or max(column) > MAX_VALUE):
            return False
    return True


def check_bids(tasks: Sequence[TaskBid], provers: Sequence[ProverBid]) -> None:
    """Raise BidError for the first bad bid: non-integer or negative fee or cost, capacity
    below 1, an id that is not a non-empty string, or an id used twice on one side."""
    if _plainly_good([t.id for t in tasks], [[t.fee for t in tasks]], [0]) and _plainly_good(
        [p.id for p in provers], [[p.capacity for p in provers], [p.cost for p in provers]], [1, 0]
    ):
        return
    seen: set[str] = set()
    for t in tasks:
        if not isinstance(t.id, str) or not t.id:
            raise BidError(f"task bid {_name(t.id)}: id must be a non-empty string")
        if t.id in seen:
            raise BidError(f"task bid {t.id!r}: duplicate id")
        seen.add(t.id)
        if not _whole(t.fee):
            raise BidError(f"task bid {t.id!r}: fee must be an integer, got {t.fee!r}")
        if t.fee < 0:
            raise BidError(f"task bid {t.id!r}: negative fee {t.fee}")
        if t.fee > MAX_VALUE:
            raise BidError(f"task bid {t.id!r}: fee {t.fee} exceeds {MAX_VALUE}")
    seen.clear()
    for p in provers:
        if not isinstance(p.id, str) or not p.id:
            raise BidError(f"prover bid {_name(p.id)}: id must be a non-empty string")
        if p.id in seen:
            raise BidError(f"prover bid {p.id!r}: duplicate id")
        seen.add(p.id)
        if not _whole(p.capacity):
            raise BidError(f"prover bid {p.id!r}: capacity must be an integer, got {p.capacity!r}")
        if not _whole(p.cost):
            raise BidError(f"prover bid {p.id!r}: cost must be an integer, got {p.cost!r}")
        if p.capacity < 1:
            raise BidError(f"prover bid {p.id!r}: capacity {p.capacity} is below 1")
        if p.cost < 0:
            raise BidError(f"prover bid {p.id!r}: negative cost {p.cost}")
        if max(p.capacity, p.cost) > MAX_VALUE:
            raise BidError(f"prover bid {p.id!r}: capacity or cost exceeds {MAX_VALUE}")


def _fields(kind: str, index: int, raw: object, names: tuple[str, ...]) -> list[Any]:
    if not isinstance(raw, Mapping):
        raise BidError(f"{kind} bid #{index}: must be an object, got {type(raw).__name__}")
    label = _name(raw["id"]) if "id" in raw else f"#{index}"
    missing = [n for n in names if n not in raw]
    if missing:
        raise BidError(f"{kind} bid {label}: missing field {', '.join(missing)}")
    extra = sorted(str(k) for k in raw if k not in names)
    if extra:
        raise BidError(f"{kind} bid {label}: unknown field {', '.join(extra)}")
    return [raw[n] for n in names]


def parse_bids(doc: object) -> tuple[list[TaskBid], list[ProverBid]]:
    """Bids from decoded JSON `{"tasks": [{id, fee}...], "provers": [{id, capacity, cost}...]}`,
    checked as by `check_bids`. A missing list counts as empty."""
    if not isinstance(doc, Mapping):
        raise BidError(f"input must be an object with tasks and provers, got {type(doc).__name__}")
    extra = sorted(str(k) for k in doc if k not in ("tasks", "provers"))
    if extra:
        raise BidError(f"input: unknown field {', '.join(extra)}")
    raw_tasks = doc.get("tasks", [])
    raw_provers = doc.get("provers", [])
    for key, value in (("tasks", raw_tasks), ("provers", raw_provers)):
        if not isinstance(value, list):
            raise BidError(f"input: {key} must be a list, got {type(value).__name__}")
    tasks = [TaskBid(*_fields("task", i, raw, ("id", "fee"))) for i, raw in enumerate(raw_tasks)]
    provers = [
        ProverBid(*_fields("prover", i, raw, ("id", "capacity", "cost")))
        for i, raw in enumerate(raw_provers)
    ]
    check_bids(tasks, provers)
    return tasks, provers
