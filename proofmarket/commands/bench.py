"""`proofmarket bench ...`: benchmarks reported as ratios against a same-run baseline."""

from __future__ import annotations

import click

from proofmarket.commands._unbuilt import not_built


@click.group()
def bench() -> None:
    """Benchmarks; each prints one JSON line with a same-run baseline and a ratio."""


@bench.command("clear", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_clear(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("bench clear")


@bench.command("envelope", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_envelope(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("bench envelope")


@bench.command("ingest", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_ingest(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("bench ingest")
