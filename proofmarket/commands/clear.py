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
    default="prooph",
    show_default=True,
    help="A registered mechanism: prooph, optimum, prooph-reference, optimum-reference.",
)
def clear(source: str, mechanism_name: str) -> None:
    """Clear one round: read {"tasks": [...], "provers": [...]} from FILE or stdin (-)."""
    import json
    import sys

    from protocol.mechanism import BidError, get_mechanism

    try:
        mechanism = get_mechanism(mechanism_name)
    except KeyError as exc:
        _fail(str(exc.args[0]))
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
    from protocol.mechanism import parse_bids

    try:
        tasks, provers = parse_bids(doc)
        outcome = mechanism.clear(tasks, provers)
    except BidError as exc:
        _fail(str(exc))
    click.echo(json.dumps(outcome_json(outcome)))
