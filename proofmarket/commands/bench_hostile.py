"""`proofmarket bench hostile`."""

from __future__ import annotations

import asyncio

import click


@click.command("hostile")
@click.option(
    "--broker",
    default="embedded",
    show_default=True,
    help="An mqtt:// URL, or 'embedded' for an amqtt broker in a process of its own.",
)
@click.option("--inputs", type=click.IntRange(min=19), default=10_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_hostile(broker: str, inputs: int, seed: int, as_json: bool) -> None:
    """Hostile inputs of every class against a live testnet, against the same testnet in peace.

    Exits non-zero when an honest party lost anything or an input went unanswered.
    """
    import json

    from deploy.hostile_bench import run_hostile_bench
    from deploy.runtime import configure_logging
    from proofmarket.commands.bench_ingest import _embedded_broker

    configure_logging("console", "warning")  # stdout carries the result only

    async def run() -> dict[str, object]:
        if broker != "embedded":
            return await run_hostile_bench(inputs, broker, seed)
        url, process = await _embedded_broker()
        try:
            return await run_hostile_bench(inputs, url, seed)
        finally:
            process.terminate()
            await process.wait()

    result = asyncio.run(run())
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
