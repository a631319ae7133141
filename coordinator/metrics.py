"""The coordinator's Prometheus metrics: what the service takes in, records and sends.

The service (coordinator/service.py) calls these hooks; the core is only read, after
each batch, for the two things its effects do not show (proof verdicts and slashes).
Every counter counts from this process's start, as Prometheus expects of a counter: a
restarted coordinator starts again from zero. docs/deploy.md lists the metrics.
"""

from __future__ import annotations

import collections
import time
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from coordinator.core import Coordinator
from protocol.envelope import kind_of
from protocol.events import MessageReceived
from protocol.messages import (
    ClearingResult,
    Message,
    Reject,
    Rejects,
    RoundAnnouncement,
    SettlementNotice,
    TaskBids,
)
from protocol.rejects import RejectCode
from runtime.bus import Bus

INGEST_WINDOW_S: Final = 10.0
"""The ingest-rate gauge averages deliveries over this many seconds."""
ROUNDS_TIMED: Final = 256
"""Rounds whose phase start times are remembered (a round settles well within this)."""
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
PHASE_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60)


class CoordinatorMetrics:
    """One coordinator's metrics, in a registry of their own."""

    def __init__(self, core: Coordinator, bus: Bus) -> None:
        self.registry = CollectorRegistry()
        self._core = core
        self._proofs_seen = dict(core.proofs_checked)
        self._slashes_seen = sum(core.slashes.values())
        self._deliveries: collections.deque[tuple[float, int]] = collections.deque()
        self._announced: dict[int, float] = {}
        self._cleared: dict[int, float] = {}
        self._define()
        self.inbox_depth.set_function(bus.pending)
        self.connected.set_function(lambda: 1.0 if bus.connected else 0.0)
        self.bus_dropped.set_function(lambda: bus.stats.dropped_full)
        self.ingest_rate.set_function(self._ingest_rate)
        self.bidding_round.set_function(lambda: core.bidding_round or 0)

    def _define(self) -> None:
        r, p = self.registry, "proofmarket_coordinator_"
        self.deliveries = Counter(f"{p}deliveries", "Envelopes taken from the broker", registry=r)
        self.accepted = Counter(
            f"{p}inputs_accepted",
            "Inputs accepted and recorded, by kind (task_bid, prover_bid, ...)",
            ["kind"],
            registry=r,
        )
        self.refused = Counter(
            f"{p}refused", "Inputs refused, by reject code", ["code"], registry=r
        )
        self.proofs = Counter(
            f"{p}proofs", "Task proofs by verdict: valid, invalid, late", ["verdict"], registry=r
        )
        self.slashes = Counter(f"{p}slashes", "Prover batches slashed", registry=r)
        self.clearings = Counter(f"{p}clearings", "Rounds cleared", registry=r)
        self.tasks_allocated = Counter(f"{p}tasks_allocated", "Tasks allocated", registry=r)
        self.price = Gauge(
            f"{p}clearing_price", "Last clearing's price, by side", ["side"], registry=r
        )
        self.verify_seconds = Histogram(
            f"{p}verify_seconds",
            "Checking one batch's signatures",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.record_seconds = Histogram(
            f"{p}record_seconds",
            "One durable write (fsync) of a batch's records",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.phase_seconds = Histogram(
            f"{p}round_phase_seconds",
            "Round phases: bid (announced to cleared), prove (cleared to settled)",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.inbox_depth = Gauge(f"{p}inbox_depth", "Deliveries waiting in the inbox", registry=r)
        self.ingest_rate = Gauge(
            f"{p}ingest_per_second", f"Deliveries per second over {INGEST_WINDOW_S:g} s", registry=r
        )
        self.connected = Gauge(
            f"{p}broker_connected", "1 while subscribed on a live connection", registry=r
        )
        self.bus_dropped = Gauge(f"{p}inbox_dropped", "Deliveries dropped, inbox full", registry=r)
        self.bidding_round = Gauge(f"{p}bidding_round", "The round open for bids", registry=r)
        for verdict in ("valid", "invalid", "late"):
            self.proofs.labels(verdict)  # present at zero from the first scrape

    # -- hooks ------------------------------------------------------------------------

    def took(self, count: int) -> None:
        """`count` deliveries were taken from the broker."""
        now = time.monotonic()
        self.deliveries.inc(count)
        self._deliveries.append((now, count))
        while self._deliveries and self._deliveries[0][0] < now - INGEST_WINDOW_S:
            self._deliveries.popleft()

    def recorded(self, event: MessageReceived) -> None:
        """An input the core accepted and the service is about to write down."""
        message = event.message
        if isinstance(message, TaskBids):
            # counted as the task bids it carries (an entry it refused is counted there too)
            self.accepted.labels("task_bid").inc(len(message.bids))
        else:
            self.accepted.labels(kind_of(message)).inc()

    def refused_unanswered(self, code: str) -> None:
        """A refusal with nobody to send a Reject to (the others are counted as sent)."""
        self.refused.labels(code).inc()

    def sent(self, message: Message, row: dict[str, object] | None) -> None:
        """One message the coordinator is sending; `row`: its round in the live view after it."""
        now = time.monotonic()
        if (
            isinstance(message, ClearingResult | SettlementNotice)
            and row is not None
            and row.get("phase") == "settled"
        ):
            self._settled(message.round, now)
        if isinstance(message, Rejects):
            for entry in message.rejects:
                self.refused.labels(entry.code).inc()
        if isinstance(message, Reject):
            self.refused.labels(message.code).inc()
            if message.code == RejectCode.LATE_PROOF:
                self.proofs.labels("late").inc()
        elif isinstance(message, RoundAnnouncement):
            self._announced[message.round] = now
            _bound(self._announced)
        if isinstance(message, ClearingResult):
            self._on_clearing(message, now)

    def _settled(self, number: int, now: float) -> None:
        """Round `number` has settled (every task charged or refunded): its prove phase."""
        cleared = self._cleared.pop(number, None)
        if cleared is not None:
            self.phase_seconds.labels("prove").observe(now - cleared)

    def after_batch(self) -> None:
        """Read what only the core knows: proof verdicts and slashes since the last batch."""
        for verdict, count in self._core.proofs_checked.items():
            self.proofs.labels(verdict).inc(count - self._proofs_seen[verdict])
            self._proofs_seen[verdict] = count
        slashes = sum(self._core.slashes.values())
        self.slashes.inc(slashes - self._slashes_seen)
        self._slashes_seen = slashes

    def _on_clearing(self, message: ClearingResult, now: float) -> None:
        self.clearings.inc()
        self.tasks_allocated.inc(message.allocated_tasks)
        announced = self._announced.pop(message.round, None)
        if announced is not None:
            self.phase_seconds.labels("bid").observe(now - announced)
        if message.user_price is not None and message.prover_price is not None:
            self.price.labels("user").set(message.user_price)
            self.price.labels("prover").set(message.prover_price)
        if message.allocated_tasks:
            self._cleared[message.round] = now
            _bound(self._cleared)

    def _ingest_rate(self) -> float:
        now = time.monotonic()
        recent = sum(n for t, n in self._deliveries if t >= now - INGEST_WINDOW_S)
        return recent / INGEST_WINDOW_S


def _bound(times: dict[int, float]) -> None:
    """Forget the oldest rounds past ROUNDS_TIMED (one that never settled, say)."""
    while len(times) > ROUNDS_TIMED:
        del times[next(iter(times))]
