"""`proofmarket deploy ...`: broker files for running a market across machines."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def deploy() -> None:
    """Broker credentials, ACLs and an embedded broker for a market."""


@deploy.command()
@click.option(
    "--genesis",
    "genesis_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="OpeningBalances JSON: market, coordinator, provers, users.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for passwd, acl, credentials.json and broker-secret.",
)
def acl(genesis_path: Path, out_dir: Path) -> None:
    """Write a Mosquitto password file and ACL from a genesis.

    Each party logs in with its public key as username and the password listed
    in credentials.json; rerunning reuses OUT/broker-secret, so passwords stay.
    """
    from deploy.acl import write_broker_files
    from deploy.genesis import GenesisError, load_genesis

    try:
        genesis = load_genesis(genesis_path)
    except GenesisError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        files = write_broker_files(genesis, out_dir)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot write broker files: {exc}") from exc
    click.echo(f"password_file {files.password_file}")
    click.echo(f"acl_file {files.acl_file}")
    click.echo(f"credentials {files.credentials} ({1 + len(genesis.participants)} parties)")


@deploy.command()
@click.option("--key", required=True, help="The newcomer's public key (64 hex).")
@click.option(
    "--dir",
    "out_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The directory `deploy acl --out` wrote (passwd, credentials.json, broker-secret).",
)
def admit(key: str, out_dir: Path) -> None:
    """Let a new party (user or prover) log in to a running market's broker.

    Adds KEY to DIR/passwd and DIR/credentials.json and prints its password; the ACL's
    per-username patterns already cover it. Then reload the broker: Mosquitto rereads
    its files on SIGHUP (`systemctl reload mosquitto`); the embedded broker must restart.
    Fund the newcomer with `proofmarket wallet grant` from the market's faucet.
    """
    from deploy.acl import AdmitError, admit_party

    try:
        password = admit_party(out_dir, key)
    except (AdmitError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"admitted {key}")
    click.echo(f"password {password}")


@deploy.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, type=int, help="0 picks a free port.")
@click.option(
    "--passwd",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Mosquitto-format password file; without it any non-empty username logs in.",
)
@click.option(
    "--genesis",
    "genesis_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Enforce this market's ACL (as `deploy acl` writes it for Mosquitto).",
)
def broker(host: str, port: int, passwd: Path | None, genesis_path: Path | None) -> None:
    """Run the embedded (amqtt) broker until SIGINT/SIGTERM; prints `ready URL`."""
    import asyncio
    import logging

    from deploy.broker import serve_embedded
    from deploy.genesis import GenesisError, load_genesis

    coordinators = None
    if genesis_path is not None:
        try:
            genesis = load_genesis(genesis_path)
        except GenesisError as exc:
            raise click.ClickException(str(exc)) from exc
        coordinators = {genesis.coordinator: genesis.market}
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    asyncio.run(serve_embedded(host, port, passwd, coordinators))
