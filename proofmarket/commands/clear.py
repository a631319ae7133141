"""`proofmarket clear`: clear one round of bids given as JSON and print the outcome as JSON."""

from __future__ import annotations

from typing import Any, NoReturn

import click


def outcome_json(outcome: Any) -> dict[str, Any]:
    """The outcome in the documented key order; batches and their charges in prover order."""
    charges = outcome.charges
    ordered = [t for batch in outcome.assignments.values() for t in batch]
    return {
        "mechanism": outcome.mechanism,
        "allocated_provers": outcome.allocated_provers,
        "allocated_tasks": outcome.allocated_tasks,
        "user_price": outcome.user_price,
        "prover_price": outcome.prover_price,
        "assignments": {p: list(batch) for p, batch in outcome.assignments.items()},
        "charges": {t: charges[t] for t in ordered},
        "payments": dict(outcome.payments),
        "surplus": outcome.surplus,
        "welfare": outcome.welfare,
    }


def _fail(message: str) -> NoReturn:
    click.echo(f"proofmarket clear: {message}", err=True)
    raise SystemExit(2)


@click.command()
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option(
    "--mechanism",
    "mechanism_name",
    default=None,
    help="A registered mechanism, or `all` for one table of every mechanism "
    "[default: the market file's, else prooph].",
)
@click.option(
    "--market",
    "market_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="A market file: its mechanism and parameters.",
)
@click.option("--posted-price", type=click.IntRange(min=0), default=None, help="posted: the price.")
@click.option(
    "--call-a-bps", type=click.IntRange(0, 10_000), default=None, help="call-market: a in 1/10000."
)
@click.option(
    "--reserve-cost",
    type=click.IntRange(min=0),
    default=None,
    help="prooph: a virtual reserve prover's cost.",
)
@click.option(
    "--plot",
    "plot_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write supply/demand curves with each clearing point to this PNG.",
)
@click.option("--json", "as_json", is_flag=True, help="With `all`: print the table as JSON.")
def clear(
    source: str,
    mechanism_name: str | None,
    market_file: str | None,
    plot_file: str | None,
    as_json: bool,
    **overrides: int | None,
) -> None:
    """Clear one round: read {"tasks": [...], "provers": [...]} from FILE or stdin (-)."""
    import json

    from deploy.lab.compare import compare
    from protocol.mechanism import COMPARED, BidError, get_mechanism

    name, params = _rules(mechanism_name, market_file, overrides)
    names = list(COMPARED) if name == "all" else [name]
    if name != "all":
        try:
            get_mechanism(name)
        except KeyError as exc:
            _fail(str(exc.args[0]))
    tasks, provers = _read_bids(source)
    try:
        rows = compare(tasks, provers, params, names=names)
    except BidError as exc:
        _fail(str(exc))
    if plot_file:
        from deploy.lab.plots import plot_clearing

        try:
            plot_clearing(plot_file, tasks, provers, rows)
        except OSError as exc:
            _fail(f"cannot write {plot_file}: {exc}")
    if name != "all":
        click.echo(json.dumps(outcome_json(rows[0].outcome)))
    elif as_json:
        click.echo(json.dumps([row.as_json() for row in rows]))
    else:
        _print_table(rows)


def _rules(name: str | None, market_file: str | None, overrides: dict[str, int | None]) -> Any:
    """The mechanism name and parameters: the market file's, then the options over them."""
    from deploy.market import MarketFileError, load_market
    from protocol.mechanism import MechanismParams

    params = MechanismParams()
    if market_file:
        try:
            rules = load_market(market_file)
        except MarketFileError as exc:
            _fail(str(exc))
        params = MechanismParams.of(rules)
        name = name or rules.mechanism
    given = {k: v for k, v in overrides.items() if v is not None}
    import dataclasses

    return name or "prooph", dataclasses.replace(params, **given)


def _read_bids(source: str) -> Any:
    import json
    import sys

    from protocol.mechanism import BidError, parse_bids

    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {source}: {exc}")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError
        _fail(f"malformed JSON: {exc}")
    try:
        return parse_bids(doc)
    except BidError as exc:
        _fail(str(exc))


def _print_table(rows: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="proofmarket clear: every mechanism on the same bids")
    heads = [
        "mechanism",
        "trades",
        "provers",
        "user price",
        "prover price",
        "surplus",
        "welfare",
        "efficiency",
    ]
    for head in heads:
        table.add_column(head, justify="left" if head == "mechanism" else "right")
    for row in rows:
        cells = list(row.as_json().values())
        table.add_row(*("-" if c is None else str(c) for c in cells))
    Console(width=120).print(table)
