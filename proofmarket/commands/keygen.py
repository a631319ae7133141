"""`proofmarket keygen`: write a new identity and print its public key."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file to write (mode 0600).",
)
@click.option("--force", is_flag=True, help="Replace an existing key file.")
def keygen(out: Path, force: bool) -> None:
    """Write a new Ed25519 identity to --out and print its public key in hex."""
    from protocol.identity import Identity

    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; refusing to overwrite a key (use --force)")
    identity = Identity.generate()
    try:
        identity.save(out, overwrite=force)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc}") from exc
    click.echo(identity.public_hex)
