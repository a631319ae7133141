"""`proofmarket bench market`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("market")
@click.option(
    "--broker",
    default="auto",
    show_default=True,
    help="'auto' (Mosquitto when installed, else embedded), 'mosquitto', 'embedded' or a URL.",
)
@click.option("--tasks-per-round", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Identities; each bids its share of the round in one bulk envelope.",
)
@click.option("--user-processes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--provers", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--bid-window-ms",
    type=click.IntRange(min=100),
    default=None,
    help="The bid window to hold the load to (default: sized for the load).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the market's keys, ledger and logs here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_market(
    broker: str,
    tasks_per_round: int,
    rounds: int,
    users: int,
    user_processes: int,
    provers: int,
    seed: int,
    bid_window_ms: int | None,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """A real multi-process market of this size: bid rate, clearing and settling times.

    Exits 1 when an honest party lost (see `proofmarket testnet`).
    """
    import asyncio
    import json

    from deploy.market_bench import MarketBenchConfig, proving_ms_per_task, run_market_bench
    from deploy.testnet import TestnetError
    from runtime.process import configure_logging

    configure_logging("console", "warning")
    config = MarketBenchConfig(
        broker=broker,
        tasks_per_round=tasks_per_round,
        rounds=rounds,
        users=min(users, tasks_per_round),
        user_processes=user_processes,
        provers=provers,
        seed=seed,
        proving_ms_per_task=proving_ms_per_task(),
        bid_window_ms=bid_window_ms,
    )
    try:
        result = asyncio.run(run_market_bench(config, workdir))
    except TestnetError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"{tasks_per_round} task bids a round x {rounds}: {result['bids_per_s']} bids/s "
            f"in a {result['bid_window_ms']} ms window; deadline to clearing "
            f"{result['clear_ms']} ms, to the last assignment {result['assign_ms']} ms "
            f"(core {result['core_ms']} ms), to settled {result['settle_ms']} ms; honest slashes "
            f"{result['honest_slashes']}; coordinator peak RSS "
            f"{result['coordinator_max_rss_mb']} MB; ratio {result['ratio']}"
        )
    if not result["ok"]:
        raise click.ClickException("an honest party lost: " + "; ".join(result["problems"]))  # type: ignore[arg-type]
