"""A testnet of a thousand users trades out of the box: windows sized, provers first."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coordinator.service import by_urgency
from deploy.broker import mosquitto_binary
from deploy.testnet import TestnetConfig as Config
from protocol.events import Publish
from protocol.messages import (
    AssignedTask,
    Assignment,
    BidReceipt,
    ClearingResult,
    SettlementNotice,
    UserReceipt,
)

P, U = "p" * 64, "u" * 64
ASSIGNMENT = Assignment(
    market="m", round=0, prove_deadline=9, difficulty=1, setup=1, payment=1,
    tasks=[AssignedTask("t" * 32, b"x")],
)  # fmt: skip


def test_provers_and_public_messages_go_before_users_receipts() -> None:
    """Assignments, prover settlements and public results jump the users' receipts."""
    result = ClearingResult(
        market="m", round=0, mechanism="prooph", tasks_bid=1, provers_bid=1,
        allocated_provers=1, allocated_tasks=1, user_price=1, prover_price=1, winners=[P],
        surplus=0, prove_deadline=9,
    )  # fmt: skip
    sends = [
        Publish(BidReceipt(market="m", round=0, ref=b"r" * 16), to=U),
        Publish(result),
        Publish(UserReceipt(market="m", round=0, task_id="t", allocated=True), to=U),
        Publish(ASSIGNMENT, to=P),
        Publish(SettlementNotice(market="m", round=0, outcome="paid", amount=1), to=P),
        Publish(SettlementNotice(market="m", round=0, outcome="charged", amount=1), to=U),
    ]
    urgent, rest = by_urgency(sends)
    assert ([1, 3, 4], [0, 2, 5]) == (
        [sends.index(s) for s in urgent],
        [sends.index(s) for s in rest],
    )


def test_a_testnet_sizes_its_bid_window_for_its_users() -> None:
    """A thousand users in one process get a window they can bid in; twenty keep 1 s-ish."""
    small = Config(users=20, broker="mosquitto").sized()
    large = Config(users=1000, broker="mosquitto").sized()
    split = Config(users=1000, user_processes=4, broker="mosquitto").sized()
    assert (1060, 4000, 1750) == (
        small.params.bid_window_ms,
        large.params.bid_window_ms,
        split.params.bid_window_ms,
    )
    assert [] == large.window_warnings()
    assert 1 == len(Config(users=1000, broker="mosquitto").window_warnings())


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto binary")
def test_a_thousand_users_trade_every_round() -> None:
    """`proofmarket testnet --users 1000`: every bid of every round in, no prover slashed."""
    command = ["testnet", "--users", "1000", "--rounds", "3", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "proofmarket", *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 == result.returncode, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    rows = report["rounds"]
    assert ([1000] * 3, 0) == (
        [r["tasks_bid"] for r in rows],
        sum(r["slashed_provers"] for r in rows),
    )
