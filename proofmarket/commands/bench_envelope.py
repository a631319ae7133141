"""`proofmarket bench envelope`."""

from __future__ import annotations

import click

from proofmarket.commands._unbuilt import not_built


@click.command("envelope", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_envelope(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("bench envelope")
