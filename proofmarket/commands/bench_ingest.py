"""`proofmarket bench ingest`."""

from __future__ import annotations

import asyncio

import click

from proofmarket.commands.coordinator_cmd import verify_workers_option


@click.command("ingest")
@click.option(
    "--broker",
    default="embedded",
    show_default=True,
    help="An mqtt:// URL, or 'embedded' for an amqtt broker in a process of its own.",
)
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
@verify_workers_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_ingest(
    broker: str,
    bids: int,
    repeat: int,
    seed: int,
    mode: str,
    verify_workers: int | None,
    as_json: bool,
) -> None:
    """Task bids/s the coordinator accepts, against a bare subscriber on the same broker."""
    import functools
    import json

    from deploy.ingest_bench import BenchError, run_bench
    from deploy.runtime import configure_logging

    configure_logging("console", "warning")  # stdout carries the result line only
    bench = functools.partial(
        run_bench, count=bids, repeat=repeat, seed=seed, mode=mode, verify_workers=verify_workers
    )

    async def run() -> dict[str, object]:
        if broker != "embedded":
            return await bench(broker)
        url, process = await _embedded_broker()
        try:
            return await bench(url)
        finally:
            process.terminate()
            await process.wait()

    try:
        result = asyncio.run(run())
    except BenchError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"{result['bids']} task bids of {result['bytes']} bytes: coordinator "
            f"{result['coordinator_per_s']}/s, bare subscriber {result['bare_per_s']}/s, "
            f"ratio {result['ratio']} ({result['mode']}, "
            f"{result['verify_workers']} verify workers)"
        )


async def _embedded_broker() -> tuple[str, asyncio.subprocess.Process]:
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy.broker", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = (await process.stdout.readline()).decode().split()
    if len(line) != 2 or line[0] != "ready":
        process.kill()
        raise click.ClickException("the embedded broker did not start")
    return line[1], process
