"""`proofmarket ledger ...`: inspect, verify, export and retire a coordinator's ledger file."""

from __future__ import annotations

import click

ledger_path = click.argument("ledger", type=click.Path(exists=True, dir_okay=False))


@click.group()
def ledger() -> None:
    """A coordinator's ledger file (its record log, snapshots and archive), offline."""


@ledger.command("inspect")
@ledger_path
def inspect_cmd(ledger: str) -> None:
    """Print what the ledger holds: live records, snapshots, archive segments (JSON)."""
    import json

    from coordinator.audit import inspect_ledger

    click.echo(json.dumps(inspect_ledger(ledger)))


@ledger.command("verify")
@ledger_path
def verify_cmd(ledger: str) -> None:
    """Replay the archive and the live records; check every snapshot they pass."""
    from coordinator.audit import verify_ledger

    problems = verify_ledger(ledger)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise SystemExit(1)
    click.echo("ok: the archive and the live records replay to every snapshot")


@ledger.command("export")
@ledger_path
def export_cmd(ledger: str) -> None:
    """Every record kept (archive first), one JSON object per line."""
    import msgspec

    from coordinator.audit import export_records

    encoder = msgspec.json.Encoder()
    for seq, event in export_records(ledger):
        kind = type(event).__name__
        click.echo(encoder.encode({"seq": seq, "kind": kind, "event": event}).decode())


@ledger.command("retire")
@ledger_path
@click.option("--audit-rounds", type=click.IntRange(min=0), default=86_400, show_default=True)
@click.option("--drop", is_flag=True, help="Drop the records instead of archiving them.")
def retire_cmd(ledger: str, audit_rounds: int, drop: bool) -> None:
    """Move records behind the newest snapshot and the audit horizon out of the live store.

    Run it with the coordinator stopped; a running one does this itself when its market
    file's [ledger] table sets a retention.
    """
    from coordinator.record_log import read_meta
    from coordinator.retention import Retention, archive_dir, pin_oldest_ripe, retire
    from coordinator.store import SqliteStore

    meta = read_meta(ledger)
    policy = Retention("drop" if drop else "archive", audit_rounds)
    with SqliteStore(ledger) as store:
        pin_oldest_ripe(store, policy)
        first = retire(
            store, policy, key=meta.key, market=meta.params.market, archive=archive_dir(ledger)
        )
    click.echo("nothing to retire" if first is None else f"live records now start at {first}")
