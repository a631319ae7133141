"""`proofmarket bench clear`."""

from __future__ import annotations

import click

from proofmarket.commands._unbuilt import not_built


@click.command("clear", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_clear(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("bench clear")
