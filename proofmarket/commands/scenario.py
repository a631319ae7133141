"""`proofmarket scenario`: run a scripted market from a scenario file (docs/scenarios.md)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from deploy.scenario import RunResult, Scenario

# Exit codes: 0 every expectation held and nobody honest lost; 1 a failed expectation or
# an honest loss; 2 the scenario file is bad (one line names the key and the problem).
EXIT_FAILED = 1
EXIT_BAD_FILE = 2


@click.group()
def scenario() -> None:
    """Scripted markets: rules, participants, events by round, and expectations."""


def _load(path: str) -> Scenario:
    from deploy.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(path)
    except ScenarioError as exc:
        click.echo(f"bad scenario file {path}: {exc}", err=True)
        sys.exit(EXIT_BAD_FILE)


@scenario.command()
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Check FILE without running it."""
    loaded = _load(file)
    click.echo(
        f"{loaded.name}: {loaded.rounds} rounds, {len(loaded.provers)} provers, "
        f"{len(loaded.users)} users, {len(loaded.events)} events, "
        f"{len(loaded.expectations)} expectations, mechanism {loaded.params.mechanism}"
    )


@scenario.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--in-memory",
    "in_memory",
    is_flag=True,
    help="Run in one process on a fake clock (the default without --broker).",
)
@click.option(
    "--broker",
    default=None,
    help="'embedded' starts amqtt in a child process; or an mqtt:// URL. Runs the real "
    "coordinator process and every participant over the broker.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --broker: keep keys, market file, genesis, ledger and logs here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON document.")
def run(
    file: str, in_memory: bool, broker: str | None, workdir: Path | None, as_json: bool
) -> None:
    """Run the scenario in FILE and check its expectations."""
    from deploy.scenario import ScenarioError, run_in_memory
    from runtime.process import configure_logging

    if in_memory and broker is not None:
        raise click.UsageError("--in-memory and --broker exclude each other")
    loaded = _load(file)
    if broker is None:
        result = run_in_memory(loaded)
    else:
        from deploy.scenario.network import run_on_broker

        configure_logging(level="warning")  # the participants run in this process
        try:
            result = asyncio.run(run_on_broker(loaded, broker, workdir=workdir))
        except ScenarioError as exc:
            click.echo(f"bad scenario file {file}: {exc}", err=True)
            sys.exit(EXIT_BAD_FILE)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        _print(result)
    if not result.ok:
        for line in [*result.problems, *result.mismatches]:
            click.echo(f"FAILED {line}", err=True)
        if result.workdir is not None:
            click.echo(f"files and logs kept in {result.workdir}", err=True)
        sys.exit(EXIT_FAILED)


def _print(result: RunResult) -> None:
    click.echo(f"scenario {result.scenario} ({result.mode})")
    for row in result.rounds:
        figures = " ".join(
            f"{k}={'-' if row.get(k) is None else row.get(k)}"
            for k in ("tasks_bid", "provers_bid", "allocated_tasks", "user_price", "prover_price")
        )
        click.echo(f"  round {row['round']}: {figures}")
        for kind in ("assigned", "paid", "slashed", "charged", "refunded", "withdrawn", "refused"):
            part = row.get(kind)
            if isinstance(part, dict) and part:
                shown = ", ".join(f"{name} {_short(v)}" for name, v in part.items())
                click.echo(f"    {kind}: {shown}")
    verdict = "ok" if result.ok else "FAILED"
    click.echo(f"{verdict}: {len(result.mismatches)} failed expectations, "
               f"{len(result.problems)} honest losses")  # fmt: skip


def _short(value: object) -> str:
    if isinstance(value, list):
        return f"[{', '.join(str(v) for v in value)}]"
    return str(value)
