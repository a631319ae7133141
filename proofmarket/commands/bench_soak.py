"""`proofmarket bench soak`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("soak")
@click.option("--rounds", type=click.IntRange(min=4), default=10_000, show_default=True)
@click.option("--provers", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--users", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--samples", type=click.IntRange(min=2), default=100, show_default=True, help="Curve points."
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    default=None,
    help="The SQLite record log to write (a new file); default: one in a temporary directory.",
)
@click.option(
    "--snapshot-every", type=click.IntRange(min=1), default=None, help="Records between snapshots."
)
@click.option(
    "--compare-full-replay", is_flag=True, help="Also time a restart that ignores the snapshots."
)
@click.option(
    "--retention",
    type=click.Choice(["keep", "archive", "drop"]),
    default="keep",
    show_default=True,
    help="What the record log does with records behind its snapshots.",
)
@click.option("--audit-rounds", type=click.IntRange(min=0), default=86_400, show_default=True)
@click.option(
    "--no-bytecode-restart",
    is_flag=True,
    help="Skip timing the restart with compiled bytecode (it compiles every module first).",
)
@click.option(
    "--broker",
    default=None,
    help="Run one OS process per party over this broker (an mqtt:// URL, or 'embedded') "
    "instead of in memory; --ledger, --snapshot-every, --retention and --compare-full-replay "
    "are in-memory options.",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --broker: run this long (rounds = minutes / round time) instead of --rounds.",
)
@click.option(
    "--round-ms",
    type=click.IntRange(min=100),
    default=1000,
    show_default=True,
    help="With --broker: the bid window, which is how often a round starts.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="With --broker: keep keys, ledger and every process's log here (a new directory).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also draw the RSS and CPU-per-round curves to this PNG.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_soak(
    rounds: int,
    provers: int,
    users: int,
    seed: int,
    samples: int,
    ledger: str | None,
    snapshot_every: int | None,
    compare_full_replay: bool,
    retention: str,
    audit_rounds: int,
    no_bytecode_restart: bool,
    broker: str | None,
    minutes: float | None,
    round_ms: int,
    workdir: str | None,
    plot: str | None,
    as_json: bool,
) -> None:
    """A long market: per-round time, RSS and state size as it ages; restart time.

    In memory by default; with --broker, one OS process per party over a real broker.
    Exits non-zero unless time and memory (and, in memory, state) stay flat, honest
    parties lose nothing and the restart works.
    """
    import json
    import os

    from coordinator.record_log import SNAPSHOT_EVERY
    from coordinator.retention import Retention
    from deploy.soak import SoakConfig, run_soak
    from runtime.process import configure_logging

    if ledger is not None and os.path.exists(ledger):
        raise click.BadParameter("must not exist yet", param_hint="--ledger")
    configure_logging("console", "warning")  # stdout carries the result only
    if broker is not None:
        if workdir is not None and os.path.exists(workdir):
            raise click.BadParameter("must not exist yet", param_hint="--workdir")
        net = (rounds, provers, users, samples, seed, minutes, round_ms)
        _on_broker(broker, net, None if workdir is None else Path(workdir), as_json, plot)
        return
    if minutes is not None:
        raise click.BadParameter("needs --broker", param_hint="--minutes")
    config = SoakConfig(
        rounds=rounds,
        provers=provers,
        users=users,
        seed=seed,
        samples=samples,
        ledger=ledger,
        snapshot_every=snapshot_every or SNAPSHOT_EVERY,
        compare_full_replay=compare_full_replay,
        retention=Retention(retention, audit_rounds),  # type: ignore[arg-type]
        bytecode_restart=not no_bytecode_restart,
    )
    result = run_soak(config)
    _draw(plot, result)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print(result)
    verdict = result["verdict"]
    assert isinstance(verdict, dict)
    if not verdict["ok"]:
        raise SystemExit(1)


def _print(result: dict[str, object]) -> None:
    per_round, rss, restart, verdict = (
        result["per_round"],
        result["rss_mb"],
        result["restart"],
        result["verdict"],
    )
    assert isinstance(per_round, dict) and isinstance(rss, dict)
    assert isinstance(restart, dict) and isinstance(verdict, dict)
    click.echo(
        f"{result['rounds']} rounds, {result['provers']} provers x {result['users']} users: "
        f"CPU per round {per_round['first_ms']} ms first, {per_round['last_ms']} ms last "
        f"(ratio {per_round['ratio']}, {per_round.get('relative_ratio')} relative to the "
        f"reference work{_after_warmup(per_round)}); "
        f"RSS {rss['first']} -> {rss['last']} MB "
        f"({rss['slope_per_1000']} MB per 1,000 rounds); restart: "
        f"{_process_restart(restart)}fold {restart['seconds']} s "
        f"over {restart['replayed']} of {restart['records']} records; "
        f"{'ok' if verdict['ok'] else 'NOT ok: ' + str(verdict)}"
    )


def _after_warmup(per_round: dict[str, object]) -> str:
    full = per_round.get("after_warmup")
    if not isinstance(full, dict):
        return ""
    return (
        f"; from round {full['from_round']}: {full['first_ms']} ms first, "
        f"ratio {full['ratio']}, {full.get('relative_ratio')} relative"
    )


def _process_restart(restart: dict[str, object]) -> str:
    process = restart.get("process")
    if not isinstance(process, dict):
        return ""
    return f"exec to serving {process['exec_to_serving_s']} s (CPU {process['cpu_ms']} ms), "


def _on_broker(
    broker: str,
    net: tuple[int, int, int, int, int, float | None, int],
    workdir: Path | None,
    as_json: bool,
    plot: str | None = None,
) -> None:
    import asyncio
    import json

    from deploy.soak_net import NetSoakConfig, rounds_for, run_net_soak
    from proofmarket.commands.bench_broker import on_broker

    rounds, provers, users, samples, seed, minutes, round_ms = net

    def config(url: str) -> NetSoakConfig:
        return NetSoakConfig(
            broker=url,
            rounds=rounds if minutes is None else rounds_for(minutes, round_ms),
            provers=provers,
            users=users,
            round_ms=round_ms,
            samples=samples,
            seed=seed,
            workdir=workdir,
        )

    result = asyncio.run(on_broker(broker, lambda url: run_net_soak(config(url))))
    _draw(plot, result)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_net(result)
    verdict = result["verdict"]
    assert isinstance(verdict, dict)
    if not verdict["ok"]:
        raise SystemExit(1)


def _draw(plot: str | None, result: dict[str, object]) -> None:
    if plot is not None:
        from deploy.lab.plots import soak_curves

        samples = result["samples"]
        assert isinstance(samples, list)
        soak_curves(plot, samples)


def _print_net(result: dict[str, object]) -> None:
    rss, restart, verdict = result["rss_mb"], result["restart"], result["verdict"]
    assert isinstance(rss, dict) and isinstance(restart, dict) and isinstance(verdict, dict)
    slopes = ", ".join(f"{n} {s:+.2f}" for n, s in rss["slope_per_1000"].items())
    click.echo(
        f"{result['rounds']} rounds of {result['round_ms']} ms over {result['broker']}, "
        f"{result['provers']} provers x {result['users']} users: RSS slope per 1,000 rounds "
        f"(MB) {slopes}; restart: exec to serving {restart['exec_to_serving_s']} s "
        f"(fold {restart['fold_ms']} ms, CPU {restart['cpu_ms']} ms); "
        f"{'ok' if verdict['ok'] else 'NOT ok: ' + str(verdict) + ' ' + str(result['problems'])}"
    )
