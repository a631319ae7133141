"""`proofmarket sim`: a whole market in one process, over an in-memory bus and a fake clock."""

from __future__ import annotations

import click


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
) -> None:
    """Simulate a market: every core, no sockets, no sleeping; the same seed, the same output."""
    import json

    from deploy.simulation import SimConfig, run_simulation

    if faulty_provers > provers:
        raise click.BadParameter("cannot exceed --provers", param_hint="--faulty-provers")
    config = SimConfig(
        rounds=rounds,
        provers=provers,
        users=users,
        seed=seed,
        faulty_provers=faulty_provers,
        tasks_per_round=tasks_per_round,
        carry_over=carry_over,
    )
    report = run_simulation(config).report
    if as_json:
        click.echo(json.dumps(report, separators=(",", ":")))
    else:
        _print_table(report)
    if not report["invariants_ok"]:
        raise SystemExit(1)


def _print_table(report: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="proofmarket sim")
    columns = [
        ("round", "round"),
        ("tasks_bid", "tasks"),
        ("provers_bid", "provers"),
        ("allocated_provers", "won"),
        ("allocated_tasks", "allocated"),
        ("user_price", "user price"),
        ("prover_price", "prover price"),
        ("proofs_valid", "proven"),
        ("slashed_provers", "slashed"),
        ("refunded_tasks", "refunded"),
        ("surplus", "surplus"),
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
