"""`proofmarket wallet ...`: a party's balance, deposit and open work; withdrawals; grants.

Each command sends one signed request to the coordinator and prints its signed answer;
a reject exits 1 with its code and reason, no answer within `--timeout` exits 1 too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from proofmarket.commands.services import (
    _check_key,
    _load_credentials,
    _load_identity,
    connection_options,
)

if TYPE_CHECKING:
    from user_client.wallet import Answer, Request


def _wallet_options(command: Callable[..., None]) -> Callable[..., None]:
    """Broker, key, market and output options every wallet command shares."""
    options = [
        *connection_options("The party's key file (the faucet's, for `grant`)."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=15.0,
            show_default=True,
            help="Seconds to wait for the round announcement, then for the answer.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group()
def wallet() -> None:
    """A party's money in a running market, by signed queries to its coordinator."""


def _run(options: dict[str, object], make: Callable[[str, str], Request]) -> None:
    """Ask the coordinator with the request `make(market, my key)`; print its answer."""
    import asyncio
    import json

    from runtime.bus import BusError
    from user_client.wallet import WalletConfig, WalletError, ask, describe

    identity = _load_identity(str(options["key_file"]))
    password = options["password"] or _load_credentials(
        options["credentials_file"]  # type: ignore[arg-type]
    ).get(identity.public_hex)
    market = str(options["market"])
    config = WalletConfig(
        broker=str(options["broker"]),
        coordinator=_check_key(str(options["coordinator"])),
        market=market,
        password=password,  # type: ignore[arg-type]
        ca_file=options["ca_file"],  # type: ignore[arg-type]
        timeout_s=float(options["timeout"]),  # type: ignore[arg-type]
    )
    try:
        answer = asyncio.run(ask(identity, config, make(market, identity.public_hex)))
    except (BusError, WalletError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if options["as_json"]:
        click.echo(json.dumps(describe(answer), sort_keys=True))
    else:
        for line in _lines(answer):
            click.echo(line)
    from protocol.messages import Reject

    if isinstance(answer, Reject):
        raise SystemExit(1)


def _lines(answer: Answer) -> list[str]:
    from protocol.messages import AccountStatus, FundingNotice, Reject, WithdrawalReceipt
    from user_client.wallet import status_lines

    if isinstance(answer, AccountStatus):
        return status_lines(answer)
    if isinstance(answer, WithdrawalReceipt):
        return [f"withdrew {answer.amount} from {answer.account}; {answer.remaining} left"]
    if isinstance(answer, FundingNotice):
        return [f"granted {answer.amount} to {answer.to} ({answer.account}, nonce {answer.nonce})"]
    assert isinstance(answer, Reject)
    return [f"rejected: {answer.code}: {answer.reason}"]


@wallet.command()
@_wallet_options
def balance(**options: object) -> None:
    """Show balance, escrow, deposit free and locked, capacity by epoch, open tasks."""
    from user_client.wallet import status_query

    _run(options, lambda market, _me: status_query(market))


_ACCOUNT = click.option(
    "--account",
    type=click.Choice(["balance", "deposit"]),
    default="balance",
    show_default=True,
    help="Spendable balance, or a prover's free deposit.",
)


@wallet.command()
@_wallet_options
@_ACCOUNT
@click.argument("amount", type=click.IntRange(min=1, max=2**53))
def withdraw(account: str, amount: int, **options: object) -> None:
    """Pay AMOUNT of free money out of the market."""
    from user_client.wallet import withdrawal

    _run(options, lambda market, _me: withdrawal(market, account, amount))


@wallet.command()
@_wallet_options
@_ACCOUNT
@click.option("--to", "to", required=True, help="The recipient's public key (64 hex).")
@click.option("--amount", type=click.IntRange(min=1, max=2**53), required=True)
@click.option(
    "--nonce",
    type=click.IntRange(min=0, max=2**63 - 1),
    default=None,
    help="Names the grant; reuse it to retry without paying twice. Default: random.",
)
def grant(account: str, to: str, amount: int, nonce: int | None, **options: object) -> None:
    """As the market's faucet (--key), bring AMOUNT of new money to --to."""
    from protocol.identity import valid_public_key
    from user_client.wallet import faucet_grant

    if not valid_public_key(to):
        raise click.BadParameter("not a public key (64 lowercase hex)", param_hint="--to")
    recipient = to
    chosen = nonce if nonce is not None else int.from_bytes(os.urandom(8), "big") >> 1
    _run(options, lambda market, _me: faucet_grant(market, recipient, account, amount, chosen))
