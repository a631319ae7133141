"""What a command that is not built yet says: plainly, and with a non-zero exit."""

from __future__ import annotations

import click


def not_built(name: str) -> None:
    click.echo(f"proofmarket {name}: not built yet", err=True)
    raise SystemExit(1)
