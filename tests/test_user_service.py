"""The user service against a live coordinator over real brokers."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from conftest import RunningBroker

from coordinator.service import CoordinatorConfig, run_coordinator
from coordinator.state import OpeningBalances
from deploy.market import DEFAULT_MARKET
from protocol.identity import Identity
from user_client.service import UserConfig, run_user

pytestmark = [pytest.mark.broker]

MARKET = "refused"
WAIT = 30.0
COORDINATOR = Identity.from_seed(b"\x70" * 32)
USER = Identity.from_seed(b"\x71" * 32)
PARAMS = msgspec.structs.replace(
    DEFAULT_MARKET, market=MARKET, bid_window_ms=1000, prove_window_ms=1000
)


async def test_a_user_whose_bids_are_all_refused_finishes_without_waiting(
    broker: RunningBroker,
) -> None:
    """Bids refused for want of money close their tasks: the user stops long before its grace."""
    user = UserConfig(
        broker=broker.url,
        coordinator=COORDINATOR.public_hex,
        market=MARKET,
        tasks=3,
        fee_range=(1, 9),
        rounds=1,
        seed=3,
        grace_ms=600_000,  # a user left waiting on its bids would outlast the test's bound
        password=broker.login(USER.public_hex)["password"],
    )
    coordinator = CoordinatorConfig(
        broker=broker.url,
        params=PARAMS,
        genesis=OpeningBalances(balances={}),  # the user has no money: every bid is refused
        rounds=3,
        start_delay_ms=1000,  # time for the user to subscribe first
        password=broker.login(COORDINATOR.public_hex)["password"],
    )
    market = asyncio.create_task(run_coordinator(COORDINATOR, coordinator))
    try:
        async with asyncio.timeout(WAIT):
            fleet = await run_user(USER, user, stop=asyncio.Event())
    finally:
        market.cancel()
        await asyncio.gather(market, return_exceptions=True)
    summary = fleet.summary()
    assert fleet.finished
    assert (3, 3, 3, 0) == (
        summary.tasks_bid,
        summary.rejects,
        summary.bids_rejected,
        summary.bids_accepted,
    )
