"""`proofmarket bench ...`: benchmarks reported as ratios against a same-run baseline."""

from __future__ import annotations

import click

from proofmarket.commands.bench_clear import bench_clear
from proofmarket.commands.bench_envelope import bench_envelope
from proofmarket.commands.bench_hostile import bench_hostile
from proofmarket.commands.bench_ingest import bench_ingest
from proofmarket.commands.bench_market import bench_market
from proofmarket.commands.bench_soak import bench_soak


@click.group()
def bench() -> None:
    """Benchmarks; each prints one JSON line with a same-run baseline and a ratio."""


bench.add_command(bench_clear)
bench.add_command(bench_envelope)
bench.add_command(bench_hostile)
bench.add_command(bench_ingest)
bench.add_command(bench_market)
bench.add_command(bench_soak)
