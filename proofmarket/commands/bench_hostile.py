"""`proofmarket bench hostile`."""

from __future__ import annotations

import asyncio

import click

from proofmarket.commands.bench_broker import broker_option, on_broker


@click.command("hostile")
@broker_option
@click.option("--inputs", type=click.IntRange(min=19), default=10_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_hostile(broker: str, inputs: int, seed: int, as_json: bool) -> None:
    """Hostile inputs of every class against a live testnet, against the same testnet in peace.

    Exits non-zero when an honest party lost anything or an input went unanswered.
    """
    import json

    from deploy.hostile_bench import run_hostile_bench
    from runtime.process import configure_logging

    configure_logging("console", "warning")  # stdout carries the result only

    result = asyncio.run(on_broker(broker, lambda url: run_hostile_bench(inputs, url, seed)))
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"{result['inputs']} hostile inputs of {result['classes']} classes: sent at "
            f"{result['inputs_per_s']}/s, {result['rejects']} rejects at "
            f"{result['rejects_per_s']}/s, coordinator CPU "
            f"{result['coordinator_cpu_ms_per_1000_inputs']} ms per 1,000 inputs, "
            f"{result['honest_slashes']} honest slashes"
        )
    problems = result["problems"]
    if not result["ok"] and isinstance(problems, list):
        raise click.ClickException("; ".join(str(p) for p in problems))
