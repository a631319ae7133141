"""`proofmarket prover|user`: the long-running participant services."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import click

from proofmarket.commands.coordinator_cmd import metrics_option

if TYPE_CHECKING:
    from protocol.identity import Identity


def _load_identity(path: str) -> Identity:
    from protocol.errors import ProtocolError
    from protocol.identity import Identity

    try:
        return Identity.load(path)
    except ProtocolError as exc:
        raise click.ClickException(str(exc)) from exc


def _parse_fee_range(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int]:
    low, sep, high = value.partition(":")
    try:
        parsed = (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise click.BadParameter(f"expected A:B with integers, got {value!r}") from None
    if parsed[0] < 0 or parsed[1] < parsed[0]:
        raise click.BadParameter(f"expected 0 <= A <= B, got {value!r}")
    return parsed


def connection_options(key_help: str) -> list[Callable[..., object]]:
    """How a party reaches its market: broker, key, coordinator, market and credentials."""
    return [
        click.option(
            "--broker", required=True, help="Broker URL: mqtt[s]://[user:pw@]host[:port]."
        ),
        click.option(
            "--key",
            "key_file",
            required=True,
            type=click.Path(exists=True, dir_okay=False),
            help=key_help,
        ),
        click.option(
            "--coordinator",
            required=True,
            help="The market coordinator's public key (64 hex).",
        ),
        click.option("--market", default="zk-default", show_default=True, help="Market id."),
        click.option(
            "--password",
            envvar="PROOFMARKET_BROKER_PASSWORD",
            default=None,
            help="Broker password (or $PROOFMARKET_BROKER_PASSWORD); the username is the key.",
        ),
        click.option(
            "--credentials",
            "credentials_file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="credentials.json (public key -> broker password) to find passwords in.",
        ),
        click.option("--ca-file", default=None, help="CA bundle for mqtts:// brokers."),
    ]


def _participant_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every participant service shares: broker, key, market, logging."""
    options = [
        *connection_options("This party's key file (see `proofmarket keygen`)."),
        click.option(
            "--log-format",
            type=click.Choice(["console", "json"]),
            default="console",
            show_default=True,
        ),
        click.option(
            "--log-level",
            type=click.Choice(["debug", "info", "warning", "error"]),
            default="info",
            show_default=True,
        ),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on exit."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _load_credentials(path: str | None) -> dict[str, str]:
    import json
    from pathlib import Path

    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read credentials {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise click.ClickException(f"{path}: expected a JSON object of key -> password")
    return data


def _check_key(value: str) -> str:
    from protocol.errors import ProtocolError
    from protocol.identity import PublicKey

    try:
        return PublicKey.from_hex(value).hex
    except ProtocolError as exc:
        raise click.BadParameter(str(exc), param_hint="--coordinator") from exc


@click.command()
@_participant_options
@click.option("--capacity", type=click.IntRange(min=1), required=True, help="Tasks per round.")
@click.option("--cost", type=click.IntRange(min=0), required=True, help="True unit cost.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Proving processes."
)
@click.option(
    "--fault",
    type=click.Choice(["none", "drop", "corrupt", "late"]),
    default="none",
    show_default=True,
    help="Misbehave on purpose, to test a market's slashing.",
)
@metrics_option
def prover(
    broker: str,
    key_file: str,
    coordinator: str,
    market: str,
    password: str | None,
    credentials_file: str | None,
    ca_file: str | None,
    log_format: str,
    log_level: str,
    as_json: bool,
    capacity: int,
    cost: int,
    workers: int,
    fault: str,
    metrics: str | None,
) -> None:
    """Run a prover node: bid truthfully each round, prove assigned batches, submit proofs."""
    import json

    from prover_node.service import ProverConfig, run_prover
    from runtime.bus import BusError
    from runtime.process import configure_logging, run_service

    configure_logging(log_format, log_level)
    identity = _load_identity(key_file)
    config = ProverConfig(
        broker=broker,
        coordinator=_check_key(coordinator),
        market=market,
        capacity=capacity,
        cost=cost,
        workers=workers,
        fault=fault,
        ca_file=ca_file,
        password=password or _load_credentials(credentials_file).get(identity.public_hex),
        metrics=metrics,
    )
    try:
        core = run_service(run_prover(identity, config))
    except (BusError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"prover": identity.public_hex, **core.stats.as_dict()}))


@click.command()
@_participant_options
@click.option("--tasks", type=click.IntRange(min=0), required=True, help="Task bids per round.")
@click.option(
    "--fee-range",
    required=True,
    callback=_parse_fee_range,
    help="Fees are drawn uniformly from A:B (clipped to the market's P_max).",
)
@click.option(
    "--identities",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Act for M users (derived from --key): a load generator.",
)
@click.option("--rounds", type=click.IntRange(min=0), default=None, help="Stop after R rounds.")
@click.option("--carry-over", is_flag=True, help="Ask for unallocated bids to carry over.")
@click.option("--seed", type=int, default=None, help="Seed fees and task inputs.")
@click.option(
    "--connections",
    type=click.Choice(["shared", "per-identity"]),
    default="shared",
    show_default=True,
    help="One broker login for the fleet, or one per identity (for ACL-pinned brokers).",
)
def user(
    broker: str,
    key_file: str,
    coordinator: str,
    market: str,
    password: str | None,
    credentials_file: str | None,
    ca_file: str | None,
    log_format: str,
    log_level: str,
    as_json: bool,
    tasks: int,
    fee_range: tuple[int, int],
    identities: int,
    rounds: int | None,
    carry_over: bool,
    seed: int | None,
    connections: Literal["shared", "per-identity"],
) -> None:
    """Run a user (or a fleet): bid tasks each round, follow receipts, verify proofs."""
    import json

    from runtime.bus import BusError
    from runtime.process import configure_logging, run_service
    from user_client.service import UserConfig, run_user

    configure_logging(log_format, log_level)
    identity = _load_identity(key_file)
    config = UserConfig(
        broker=broker,
        coordinator=_check_key(coordinator),
        market=market,
        tasks=tasks,
        fee_range=fee_range,
        identities=identities,
        rounds=rounds,
        carry_over=carry_over,
        seed=seed,
        connections=connections,
        ca_file=ca_file,
        password=password,
        passwords=_load_credentials(credentials_file),
    )
    try:
        fleet = run_service(run_user(identity, config))
    except (BusError, ValueError) as exc:
        hint = ""
        if "refused subscription" in str(exc) and connections == "shared" and identities > 1:
            hint = " (this broker pins logins to their own topics: use --connections per-identity)"
        raise click.ClickException(f"{exc}{hint}") from exc
    if as_json:
        click.echo(json.dumps({"user": identity.public_hex, **fleet.summary().as_dict()}))
