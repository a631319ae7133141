"""The prover node's Prometheus metrics: the core's own counters, read at each scrape.

What the node has done (rounds bid, batches and tasks assigned, proofs sent, payments,
slashes, rejects by code) is counted by the core in `ProverStats`; this collector reads
those at scrape time, so no count is kept twice. The adapter adds what only it sees:
how long proving took, the inbox, and the broker connection. docs/deploy.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from prover_node.core import ProverCore
from runtime.bus import Bus

PROVING_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60)

_COUNTERS: Final = {  # the core's stat: (metric name, help)
    "epochs_declared": ("epochs_declared", "Capacity declarations sent (one per epoch)"),
    "rounds_bid": ("rounds_bid", "Cost bids sent (one per round)"),
    "batches_assigned": ("batches_assigned", "Batches assigned"),
    "tasks_assigned": ("tasks_assigned", "Tasks assigned"),
    "batches_submitted": ("batches_submitted", "Batches whose proofs were sent"),
    "proofs_sent": ("proofs_sent", "Task proofs sent"),
    "payments": ("payments", "Batches paid"),
    "paid_total": ("paid_money", "Money paid for batches"),
    "slashes": ("slashes", "Batches slashed"),
    "slashed_total": ("slashed_money", "Deposit money slashed"),
}


class _StatsCollector(Collector):
    """The core's counters, as Prometheus counters, read when scraped."""

    def __init__(self, core: ProverCore) -> None:
        self._core = core

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self._core.stats
        counts = stats.as_dict()
        for stat, (name, help_text) in _COUNTERS.items():
            yield CounterMetricFamily(f"proofmarket_prover_{name}", help_text, value=counts[stat])
        rejects = CounterMetricFamily(
            "proofmarket_prover_rejects", "Rejects received, by code", labels=["code"]
        )
        for code, count in sorted(stats.reject_codes.items()):
            rejects.add_metric([code], count)
        yield rejects


class ProverMetrics:
    """One prover node's metrics, in a registry of their own."""

    def __init__(self, core: ProverCore, bus: Bus, queued: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r, p = self.registry, "proofmarket_prover_"
        r.register(_StatsCollector(core))
        self.proving_seconds = Histogram(
            f"{p}proving_seconds", "Proving one batch", buckets=PROVING_BUCKETS, registry=r
        )
        inbox = Gauge(f"{p}inbox_depth", "Messages and events waiting for the core", registry=r)
        inbox.set_function(lambda: bus.pending() + queued())
        connected = Gauge(
            f"{p}broker_connected", "1 while subscribed on a live connection", registry=r
        )
        connected.set_function(lambda: 1.0 if bus.connected else 0.0)
