"""`proofmarket bench ingest`."""

from __future__ import annotations

import asyncio

import click

from proofmarket.commands.bench_broker import broker_option, on_broker
from proofmarket.commands.coordinator_cmd import verify_workers_option


@click.command("ingest")
@broker_option
@click.option("--bids", type=click.IntRange(min=1), default=10000, show_default=True)
@click.option(
    "--repeat", type=click.IntRange(min=1), default=5, show_default=True, help="Best of K each."
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["live", "drain"]),
    default="live",
    show_default=True,
    help="live: a publisher sends while each side receives. drain: the bids wait at the "
    "broker and each side takes them in with the CPU to itself.",
)
@click.option(
    "--bulk",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Task bids per envelope: 1 sends task_bid envelopes, more sends task_bids bulks.",
)
@verify_workers_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_ingest(
    broker: str,
    bids: int,
    repeat: int,
    seed: int,
    mode: str,
    bulk: int,
    verify_workers: int | None,
    as_json: bool,
) -> None:
    """Task bids/s the coordinator accepts, against a bare subscriber on the same broker."""
    import functools
    import json

    from deploy.ingest_bench import BenchError, run_bench
    from runtime.process import configure_logging

    configure_logging("console", "warning")  # stdout carries the result line only
    bench = functools.partial(
        run_bench,
        count=bids,
        repeat=repeat,
        seed=seed,
        mode=mode,
        verify_workers=verify_workers,
        bulk=bulk,
    )

    try:
        result = asyncio.run(on_broker(broker, bench))
    except BenchError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"{result['bids']} task bids in {result['envelopes']} envelopes of "
            f"{result['bytes']} bytes: coordinator {result['coordinator_per_s']} bids/s "
            f"({result['coordinator_envelopes_per_s']} envelopes/s), bare subscriber "
            f"{result['bare_per_s']} envelopes/s, ratio {result['ratio']} ({result['mode']}, "
            f"{result['verify_workers']} verify workers)"
        )
