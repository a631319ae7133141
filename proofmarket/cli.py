"""The `proofmarket` console script: one click group, one module per subcommand."""

from __future__ import annotations

import click

from proofmarket import __version__
from proofmarket.commands import (
    bench,
    clear,
    coordinator_cmd,
    deploy_cmd,
    keygen,
    lab,
    ledger_cmd,
    scenario,
    services,
    sim,
    testnet,
    wallet_cmd,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="proofmarket")
def cli() -> None:
    """A market for zero-knowledge-proof generation."""


cli.add_command(clear.clear)
cli.add_command(bench.bench)
cli.add_command(keygen.keygen)
cli.add_command(sim.sim)
cli.add_command(lab.lab)
cli.add_command(testnet.testnet)
cli.add_command(coordinator_cmd.coordinator)
cli.add_command(services.prover)
cli.add_command(services.user)
cli.add_command(deploy_cmd.deploy)
cli.add_command(ledger_cmd.ledger)
cli.add_command(scenario.scenario)
cli.add_command(wallet_cmd.wallet)


def main() -> None:
    cli()
