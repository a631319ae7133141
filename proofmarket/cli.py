"""The `proofmarket` console script: one click group, one module per subcommand.

Subcommands are imported when they run (or when `--help` lists them), not all at
start: a coordinator restarting imports what it needs and no bench, lab or plot.
"""

from __future__ import annotations

import importlib

import click

from proofmarket import __version__

COMMANDS = {
    "clear": "proofmarket.commands.clear:clear",
    "bench": "proofmarket.commands.bench:bench",
    "keygen": "proofmarket.commands.keygen:keygen",
    "sim": "proofmarket.commands.sim:sim",
    "lab": "proofmarket.commands.lab:lab",
    "testnet": "proofmarket.commands.testnet:testnet",
    "coordinator": "proofmarket.commands.coordinator_cmd:coordinator",
    "prover": "proofmarket.commands.services:prover",
    "user": "proofmarket.commands.services:user",
    "deploy": "proofmarket.commands.deploy_cmd:deploy",
    "ledger": "proofmarket.commands.ledger_cmd:ledger",
    "scenario": "proofmarket.commands.scenario:scenario",
    "wallet": "proofmarket.commands.wallet_cmd:wallet",
}
"""Subcommand name -> where it is defined (module:attribute)."""


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = where.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="proofmarket")
def cli() -> None:
    """A market for zero-knowledge-proof generation."""


def main() -> None:
    cli()
