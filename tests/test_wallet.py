"""The wallet's pure parts (which message answers a request) and its command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner
from conftest import RunningBroker

from proofmarket.commands.wallet_cmd import wallet
from protocol.identity import Identity
from protocol.messages import (
    AccountStatus,
    FaucetGrant,
    FundingNotice,
    Reject,
    StatusQuery,
    WithdrawalReceipt,
)
from user_client.wallet import answers

REF, OTHER = b"r" * 16, b"o" * 16
QUERY = StatusQuery(market="m1", round=3)
GRANT = FaucetGrant(market="m1", to="a" * 64, account="balance", amount=5, nonce=9)


def status(ref: bytes) -> AccountStatus:
    return AccountStatus(
        market="m1",
        round=3,
        epoch=0,
        ref=ref,
        balance=1,
        escrow=0,
        deposit=0,
        locked=0,
        capacities=[],
        open_batches=[],
        open_tasks=[],
        open_task_count=0,
    )


def test_answers_match_the_request_envelope_or_grant_nonce() -> None:
    """Only messages naming the request's envelope (or a grant's nonce) answer it."""
    reject = Reject(market="m1", code="replay", reason="", ref=REF)
    receipt = WithdrawalReceipt(
        market="m1", round=3, ref=OTHER, account="balance", amount=1, remaining=0
    )
    notice = FundingNotice(market="m1", to="a" * 64, account="balance", amount=5, nonce=9)
    other_notice = FundingNotice(market="m1", to="a" * 64, account="balance", amount=5, nonce=8)
    assert [True, False, True, False, True, False] == [
        answers(status(REF), QUERY, REF),
        answers(status(OTHER), QUERY, REF),
        answers(reject, QUERY, REF),
        answers(receipt, QUERY, REF),
        answers(notice, GRANT, REF),
        answers(other_notice, GRANT, REF),
    ]


def test_grant_refuses_a_bad_recipient_key(tmp_path: Path) -> None:
    """`wallet grant --to junk` exits 2 naming --to, before any connection."""
    key = Identity.generate()
    path = f"{tmp_path}/faucet.key"
    key.save(path)
    args = ["grant", "--broker", "mqtt://127.0.0.1:1", "--key", path]
    args += ["--coordinator", key.public_hex, "--to", "junk", "--amount", "5"]
    result = CliRunner().invoke(wallet, args)
    assert 2 == result.exit_code
    assert "--to" in result.output


async def test_balance_without_a_coordinator_exits_1(
    embedded_broker: RunningBroker, tmp_path: Path
) -> None:
    """With no coordinator announcing rounds, `wallet balance` says so and exits 1."""
    key = Identity.generate()
    path = f"{tmp_path}/me.key"
    key.save(path)
    args = ["balance", "--broker", embedded_broker.url, "--key", path, "--timeout", "0.5"]
    args += ["--coordinator", Identity.generate().public_hex, "--password", "x"]
    result = await asyncio.to_thread(CliRunner().invoke, wallet, args)
    assert 1 == result.exit_code
    assert "no round announcement from the coordinator in 0.5s" in result.output
