"""`proofmarket bench soak`."""

from __future__ import annotations

import click


@click.command("soak")
@click.option("--rounds", type=click.IntRange(min=4), default=10_000, show_default=True)
@click.option("--provers", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--users", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--samples", type=click.IntRange(min=2), default=100, show_default=True, help="Curve points."
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    default=None,
    help="The SQLite record log to write (a new file); default: one in a temporary directory.",
)
@click.option(
    "--snapshot-every", type=click.IntRange(min=1), default=None, help="Records between snapshots."
)
@click.option(
    "--compare-full-replay", is_flag=True, help="Also time a restart that ignores the snapshots."
)
@click.option(
    "--retention",
    type=click.Choice(["keep", "archive", "drop"]),
    default="keep",
    show_default=True,
    help="What the record log does with records behind its snapshots.",
)
@click.option("--audit-rounds", type=click.IntRange(min=0), default=86_400, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_soak(
    rounds: int,
    provers: int,
    users: int,
    seed: int,
    samples: int,
    ledger: str | None,
    snapshot_every: int | None,
    compare_full_replay: bool,
    retention: str,
    audit_rounds: int,
    as_json: bool,
) -> None:
    """A long in-memory market: per-round time, RSS and state size as it ages; restart time.

    Exits non-zero unless time, memory and state stay flat, honest parties lose nothing
    and the restart rebuilds the final state.
    """
    import json
    import os

    from coordinator.record_log import SNAPSHOT_EVERY
    from coordinator.retention import Retention
    from deploy.soak import SoakConfig, run_soak
    from runtime.process import configure_logging

    if ledger is not None and os.path.exists(ledger):
        raise click.BadParameter("must not exist yet", param_hint="--ledger")
    configure_logging("console", "warning")  # stdout carries the result only
    config = SoakConfig(
        rounds=rounds,
        provers=provers,
        users=users,
        seed=seed,
        samples=samples,
        ledger=ledger,
        snapshot_every=snapshot_every or SNAPSHOT_EVERY,
        compare_full_replay=compare_full_replay,
        retention=Retention(retention, audit_rounds),  # type: ignore[arg-type]
    )
    result = run_soak(config)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print(result)
    verdict = result["verdict"]
    assert isinstance(verdict, dict)
    if not verdict["ok"]:
        raise SystemExit(1)


def _print(result: dict[str, object]) -> None:
    per_round, rss, restart, verdict = (
        result["per_round"],
        result["rss_mb"],
        result["restart"],
        result["verdict"],
    )
    assert isinstance(per_round, dict) and isinstance(rss, dict)
    assert isinstance(restart, dict) and isinstance(verdict, dict)
    click.echo(
        f"{result['rounds']} rounds, {result['provers']} provers x {result['users']} users: "
        f"CPU per round {per_round['first_ms']} ms first, {per_round['last_ms']} ms last "
        f"(ratio {per_round['ratio']}); RSS {rss['first']} -> {rss['last']} MB "
        f"({rss['slope_per_1000']} MB per 1,000 rounds); restart {restart['seconds']} s "
        f"over {restart['replayed']} of {restart['records']} records; "
        f"{'ok' if verdict['ok'] else 'NOT ok: ' + str(verdict)}"
    )
