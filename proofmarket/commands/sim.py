"""`proofmarket sim`: a whole market in one process, over an in-memory bus and a fake clock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from deploy.simulation import SimConfig


@click.command()
@click.option("--rounds", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--provers", type=click.IntRange(min=0), default=8, show_default=True)
@click.option("--users", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--faulty-provers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="How many provers misbehave, cycling through drop, corrupt and late.",
)
@click.option("--tasks-per-round", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--carry-over", is_flag=True, help="Users carry unallocated tasks to the next round.")
@click.option(
    "--market",
    "market_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A market file: its rules (mechanism and parameters included) apply.",
)
@click.option("--mechanism", default=None, help="A registered mechanism (overrides the market's).")
@click.option("--posted-price", type=click.IntRange(min=0), default=None)
@click.option("--call-a-bps", type=click.IntRange(0, 10_000), default=None)
@click.option("--reserve-cost", type=click.IntRange(min=0), default=None)
@click.option(
    "--fee-range",
    type=(int, int),
    default=(1, 100),
    show_default=True,
    help="Users' fees: uniform in LOW..HIGH (capped at p_max).",
)
@click.option(
    "--cost-range",
    type=(int, int),
    default=(1, 60),
    show_default=True,
    help="Provers' unit costs: uniform in LOW..HIGH.",
)
@click.option(
    "--capacity-range",
    type=(int, int),
    default=(5, 20),
    show_default=True,
    help="Provers' capacities: uniform in LOW..HIGH.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def sim(
    rounds: int,
    provers: int,
    users: int,
    seed: int,
    faulty_provers: int,
    tasks_per_round: int,
    carry_over: bool,
    as_json: bool,
    **rules: Any,
) -> None:
    """Simulate a market: every core, no sockets, no sleeping; the same seed, the same output."""
    import json

    from coordinator.report import honest_losses
    from deploy.simulation import run_simulation, sim_key

    if faulty_provers > provers:
        raise click.BadParameter("cannot exceed --provers", param_hint="--faulty-provers")
    sizes = {
        "rounds": rounds,
        "provers": provers,
        "users": users,
        "seed": seed,
        "faulty_provers": faulty_provers,
        "tasks_per_round": tasks_per_round,
        "carry_over": carry_over,
    }
    config = _config(sizes, rules)
    report = run_simulation(config).report
    if as_json:
        click.echo(json.dumps(report, separators=(",", ":")))
    else:
        _print_table(report)
    honest = [sim_key(seed, "prover", i) for i in range(faulty_provers, provers)]
    problems = honest_losses(report, honest, users_bid=users > 0)
    for problem in problems:
        click.echo(f"FAILED: {problem}", err=True)
    if problems:
        raise SystemExit(1)


def _config(sizes: dict[str, Any], rules: dict[str, Any]) -> SimConfig:
    """The SimConfig of the options: market file first, then the options over it."""
    import dataclasses

    from deploy.market import MarketFileError, load_market
    from deploy.simulation import SimConfig, sim_config_from_market
    from protocol.mechanism import get_mechanism

    for name in ("fee_range", "cost_range", "capacity_range"):
        low, high = rules[name]
        if not 0 <= low <= high:
            raise click.BadParameter(
                "need 0 <= LOW <= HIGH", param_hint=f"--{name.replace('_', '-')}"
            )
    ranges = {k: rules[k] for k in ("fee_range", "cost_range", "capacity_range")}
    if rules["capacity_range"][0] < 1:
        raise click.BadParameter("capacities start at 1", param_hint="--capacity-range")
    if rules["market_file"]:
        try:
            config = sim_config_from_market(load_market(rules["market_file"]), **sizes, **ranges)
        except MarketFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--market") from None
    else:
        config = SimConfig(**sizes, **ranges)
    overrides = {
        k: rules[k]
        for k in ("mechanism", "posted_price", "call_a_bps", "reserve_cost")
        if rules[k] is not None
    }
    config = dataclasses.replace(config, **overrides)
    try:
        get_mechanism(config.mechanism)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--mechanism") from None
    if config.mechanism == "posted" and config.posted_price is None:
        raise click.BadParameter("posted needs --posted-price", param_hint="--posted-price")
    return config


def _print_table(report: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="proofmarket sim")
    columns = [
        ("round", "round"),
        ("tasks_bid", "tasks"),
        ("offers", "offers"),
        ("allocated_provers", "won"),
        ("allocated_tasks", "allocated"),
        ("user_price", "user price"),
        ("prover_price", "prover price"),
        ("proofs_valid", "proven"),
        ("slashed_provers", "slashed"),
        ("refunded_tasks", "refunded"),
        ("surplus", "surplus"),
        ("late", "late"),
        ("carried", "carried"),
        ("welfare", "welfare"),
        ("optimum_welfare", "optimum"),
        ("efficiency", "efficiency"),
    ]
    for _, title in columns:
        table.add_column(title, justify="right")
    rows = report["rounds"]
    assert isinstance(rows, list)
    for row in rows:
        table.add_row(*("-" if row[key] is None else str(row[key]) for key, _ in columns))
    console = Console()
    console.print(table)
    ledger = report["ledger"]
    assert isinstance(ledger, dict)
    console.print(
        f"ledger: funded {ledger['funded']}, total {ledger['total']}, "
        f"conserved {ledger['conserved']}; invariants ok: {report['invariants_ok']}"
    )
