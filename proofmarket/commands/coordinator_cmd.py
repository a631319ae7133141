"""`proofmarket coordinator`: run one market's coordinator against a broker."""

from __future__ import annotations

import click

verify_workers_option = click.option(
    "--verify-workers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes that check bid signatures beside the coordinator's event loop; 0 "
    "checks them in it [default: 1 when the machine has a second core, else 0].",
)


def _check_listen(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from runtime.metrics import MetricsAddressError, parse_listen

    if value is not None:
        try:
            parse_listen(value)
        except MetricsAddressError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


metrics_option = click.option(
    "--metrics",
    metavar="HOST:PORT",
    default=None,
    callback=_check_listen,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics and a health check at "
    "/health (503 while deaf to the broker or unable to write the ledger).",
)


@click.command()
@click.option("--broker", required=True, help="Broker URL: mqtt[s]://[user:pw@]host[:port].")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The coordinator's key file (see `proofmarket keygen`).",
)
@click.option(
    "--market",
    "market_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Market file (TOML); every field has a default.",
)
@click.option(
    "--genesis",
    "genesis_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="OpeningBalances file (JSON): the users' balances and the provers' deposits.",
)
@click.option(
    "--ledger",
    default=None,
    help="Record log (SQLite). Restarting with the same file resumes the market.",
)
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Stop after R rounds.")
@click.option(
    "--start-delay-ms",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="How long after start-up round 0 opens (a fresh ledger only).",
)
@click.option(
    "--password",
    envvar="PROOFMARKET_BROKER_PASSWORD",
    default=None,
    help="Broker password (or $PROOFMARKET_BROKER_PASSWORD); the username is the key.",
)
@click.option("--ca-file", default=None, help="CA bundle for mqtts:// brokers.")
@verify_workers_option
@click.option(
    "--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@metrics_option
@click.option("--json", "as_json", is_flag=True, help="Print the market report on exit.")
def coordinator(
    broker: str,
    key_file: str,
    market_file: str | None,
    genesis_file: str,
    ledger: str | None,
    rounds: int | None,
    start_delay_ms: int,
    password: str | None,
    ca_file: str | None,
    verify_workers: int | None,
    log_format: str,
    log_level: str,
    metrics: str | None,
    as_json: bool,
) -> None:
    """Run a market's coordinator: announce rounds, clear, verify proofs, settle."""
    import json
    import os
    import sys

    # The clearing's arrays need no BLAS: its threads only cost CPU when numpy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if log_format == "json" and "structlog" not in sys.modules:
        # structlog imports rich (and pygments) when it can, to draw tracebacks on a
        # console: a sixth of a restart's CPU for what JSON logs never show. Hidden while
        # structlog loads, it formats tracebacks plainly (docs/deploy.md, "Restarts").
        hidden = "rich" not in sys.modules
        sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
        import structlog  # noqa: F401

        if hidden:
            del sys.modules["rich"]

    from coordinator.verifier import default_workers, new_verifier

    # The signature workers start first: they come up (on another core) while the rest
    # is imported and the record log folded, not after (docs/deploy.md, "Restarts").
    verifier = new_verifier(default_workers() if verify_workers is None else verify_workers)
    verifier.spawn()

    from coordinator.service import (
        CoordinatorConfig,
        CoordinatorStartError,
        run_coordinator,
        summary_from_ledger,
    )
    from deploy.genesis import opening_balances
    from deploy.market import (
        DEFAULT_MARKET,
        LedgerSettings,
        MarketFileError,
        load_ledger_settings,
        load_market,
    )
    from protocol.errors import ProtocolError
    from protocol.identity import Identity
    from runtime.bus import BusError
    from runtime.process import configure_logging, run_service

    configure_logging(log_format, log_level)
    try:
        identity = Identity.load(key_file)
        params = load_market(market_file) if market_file else DEFAULT_MARKET
        settings = load_ledger_settings(market_file) if market_file else LedgerSettings()
        config = CoordinatorConfig(
            broker=broker,
            params=params,
            genesis=opening_balances(genesis_file, market=params.market, key=identity.public_hex),
            ledger=ledger,
            rounds=rounds,
            start_delay_ms=start_delay_ms,
            password=password,
            ca_file=ca_file,
            verify_workers=verifier.workers,
            snapshot_every=settings.snapshot_every,
            retention=settings.policy(),
            metrics=metrics,
        )
        core = run_service(run_coordinator(identity, config, verifier=verifier))
    except (ProtocolError, MarketFileError, CoordinatorStartError, BusError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        verifier.close()  # run_coordinator closes it; not so when it never ran
    if as_json and ledger is not None:
        click.echo(json.dumps(summary_from_ledger(config, identity.public_hex), sort_keys=False))
    if rounds is not None and not core.finished:
        raise SystemExit(1)
