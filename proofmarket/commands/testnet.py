"""`proofmarket testnet`: a whole market of separate processes on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

COLUMNS = [
    ("round", "round"),
    ("phase", "phase"),
    ("tasks_bid", "bids"),
    ("offers", "offers"),
    ("allocated_provers", "won"),
    ("allocated_tasks", "tasks"),
    ("user_price", "charge"),
    ("prover_price", "pay"),
    ("proofs_valid", "proofs"),
    ("slashed_provers", "slashed"),
    ("refunded_tasks", "refunds"),
    ("surplus", "surplus"),
]


def round_table(rows: list[dict[str, Any]], title: str, *, phase: bool = True) -> Any:
    from rich import box
    from rich.table import Table

    # Narrow enough for an 80-column terminal: no inner rules, one space between columns.
    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), show_edge=False, pad_edge=False
    )
    columns = [(key, header) for key, header in COLUMNS if phase or key != "phase"]
    for _, header in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*("" if row.get(k) is None else str(row.get(k)) for k, _ in columns))
    return table


@click.command()
@click.option("--provers", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--users", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--broker",
    default="auto",
    show_default=True,
    help="'auto': Mosquitto when it is installed, else 'embedded' (amqtt in this process); "
    "'mosquitto'; or an mqtt:// URL. Each of the first three runs on a free loopback port.",
)
@click.option(
    "--faulty-provers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Make the first K provers drop, corrupt or send late proofs (in turn).",
)
@click.option("--tasks", "tasks_per_user", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--user-processes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds the users' fees.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep keys, genesis, ledger and logs here (default: a temporary directory).",
)
@click.option(
    "--market",
    "market_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The market's rules from a market file (TOML); the options below override it.",
)
@click.option("--mechanism", default=None, help="A registered mechanism [default: prooph].")
@click.option("--posted-price", type=click.IntRange(min=0), default=None, help="posted: the price.")
@click.option("--call-a-bps", type=click.IntRange(0, 10_000), default=None, help="[default: 5000]")
@click.option("--reserve-cost", type=click.IntRange(min=0), default=None, help="prooph: reserve.")
@click.option(
    "--signed-ties", is_flag=True, default=None, help="Tie seeds from the coordinator's signature."
)
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON report.")
def testnet(
    provers: int,
    users: int,
    rounds: int,
    broker: str,
    faulty_provers: int,
    tasks_per_user: int,
    user_processes: int,
    seed: int,
    workdir: Path | None,
    market_file: Path | None,
    as_json: bool,
    **rules: Any,
) -> None:
    """Run a local market: broker, coordinator, provers and users as separate processes."""
    import asyncio
    import dataclasses
    import json
    import logging

    from deploy.market import MarketFileError, load_market
    from deploy.testnet import Progress, TestnetConfig, TestnetError, run_testnet

    logging.getLogger("amqtt").setLevel(logging.ERROR)
    logging.getLogger("transitions").setLevel(logging.ERROR)
    config = TestnetConfig(
        provers=provers,
        users=users,
        rounds=rounds,
        broker=broker,
        faulty_provers=faulty_provers,
        tasks_per_user=tasks_per_user,
        user_processes=user_processes,
        seed=seed,
        workdir=workdir,
    )
    try:
        if market_file is not None:
            config = dataclasses.replace(config, params=load_market(market_file))
    except MarketFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--market") from None
    config = _with_rules(config, {k: v for k, v in rules.items() if v is not None})
    if market_file is None:
        config = config.sized()
    else:
        for warning in config.window_warnings():
            click.echo(f"warning: {warning}", err=True)
    try:
        if as_json:
            report = asyncio.run(run_testnet(config))
        else:
            report = asyncio.run(_run_live(config, Progress()))
    except TestnetError as exc:
        raise click.ClickException(str(exc)) from exc
    ok = bool(report["ok"])
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_summary(report, ok)
    raise SystemExit(0 if ok else 1)


def _with_rules(config: Any, rules: dict[str, Any]) -> Any:
    """The config with the options' mechanism and parameters (vcg gets a subsidy account
    when the plan is made: deploy.testnet.make_plan)."""
    import dataclasses

    import msgspec

    from deploy.market import MarketFileError, market_from_dict

    params = msgspec.structs.replace(config.params, **rules)
    as_dict = {k: v for k, v in msgspec.structs.asdict(params).items() if v is not None}
    if params.mechanism == "vcg":
        as_dict["subsidy_account"] = "0" * 64  # stands in for the plan's own account
    try:
        market_from_dict(as_dict)
    except MarketFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--mechanism") from None
    return dataclasses.replace(config, params=params)


async def _run_live(config: Any, progress: Any) -> dict[str, object]:
    import asyncio

    from rich.console import Console
    from rich.live import Live

    from deploy.testnet import run_testnet

    console = Console()

    def started(plan: Any) -> None:
        console.print(
            f"[bold]testnet[/] market {config.params.market}: {len(plan.provers)} provers, "
            f"{sum(len(u.identities) for u in plan.users)} users, coordinator "
            f"{plan.coordinator[:12]}…, files in {plan.workdir}"
        )

    live = Live(round_table([], "rounds"), console=console, refresh_per_second=8, transient=True)
    with live:

        async def follow() -> None:
            while True:
                await progress.changed.wait()
                progress.changed.clear()
                rows = [progress.rows[n] for n in sorted(progress.rows)]
                live.update(round_table(rows, "rounds (live)"))

        follower = asyncio.create_task(follow())
        try:
            return await run_testnet(config, progress=progress, on_started=started)
        finally:
            follower.cancel()


def _print_summary(report: dict[str, Any], ok: bool) -> None:
    from rich.console import Console

    console = Console()
    console.print(round_table(report["rounds"], "settled rounds", phase=False))
    ledger = report["ledger"]
    console.print(
        f"ledger: funded {ledger['funded']}, total {ledger['total']}, "
        f"conserved {ledger['conserved']}; invariants ok {report['invariants_ok']}; "
        f"all rounds settled {report['all_rounds_settled']}; wall {report['wall_s']} s"
    )
    if "workdir" in report:
        console.print(f"files and logs: {report['workdir']}")
    for problem in report.get("problems", []):
        console.print(f"[red]{problem}[/]")
    console.print("[green]ok[/]" if ok else "[red]FAILED: an honest party lost[/]")
