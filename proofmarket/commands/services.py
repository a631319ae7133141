"""`proofmarket coordinator|prover|user`: the long-running market services."""

from __future__ import annotations

import click

from proofmarket.commands._unbuilt import not_built


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def coordinator(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("coordinator")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def prover(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("prover")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def user(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("user")
