"""Joining a running market, process by process over a real Mosquitto with the market's ACL.

A key the genesis never named is admitted to the broker (`deploy admit`, then SIGHUP),
funded by the market's faucet (`wallet grant`), sees its money (`wallet balance`), and,
started after a round opened, hears that round from the broker's retained announcement
and bids in it. After the market finished, a party that connects drops the retained
announcement of the closed last round instead of bidding in it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import RunningBroker
from test_network_processes import QUICK, WAIT, LocalMarket, Proc, assert_sound, local_market

from coordinator.state import OpeningBalances
from deploy.acl import admit_party, write_broker_files
from deploy.broker import MosquittoBroker, mosquitto_binary
from deploy.genesis import MarketGenesis, dump_genesis
from deploy.testnet import TestnetConfig as NetConfig  # not a test class
from protocol.identity import Identity

pytestmark = [pytest.mark.broker, pytest.mark.slow]

JOIN = msgspec.structs.replace(QUICK, market="jointest", bid_window_ms=4000)
"""Bid windows long enough for a process started after a round opened to bid in it."""
ROUNDS = 5
GRANT = 100


class JoinMarket(LocalMarket):
    """A LocalMarket whose genesis names a faucet, each party logging in with its password."""

    def __init__(self, config: NetConfig, url: str, workdir: Path) -> None:
        super().__init__(config, url, workdir)
        self.faucet_key = workdir / "faucet.key"
        self.newcomer_key = workdir / "newcomer.key"
        # A genesis user without money, with no broker session yet: it connects at the end.
        self.watcher_key = workdir / "watcher.key"
        faucet, newcomer, watcher = Identity.generate(), Identity.generate(), Identity.generate()
        faucet.save(self.faucet_key)
        newcomer.save(self.newcomer_key)
        watcher.save(self.watcher_key)
        self.faucet, self.newcomer = faucet.public_hex, newcomer.public_hex
        genesis = MarketGenesis(
            market=config.params.market,
            coordinator=self.plan.coordinator,
            provers=dict(self.plan.genesis.deposits),
            users={watcher.public_hex: 0},
            faucet=self.faucet,
        )
        self.plan.genesis_file.write_text(dump_genesis(genesis))
        self.plan = dataclasses.replace(
            self.plan,
            genesis=OpeningBalances(
                balances=dict(genesis.users), deposits=dict(genesis.provers), faucet=self.faucet
            ),
        )
        self.broker_dir = workdir / "broker"
        self.files = write_broker_files(genesis, self.broker_dir)

    def common(self, key_file: Path) -> list[str]:
        plan = self.plan
        return [
            *("--broker", self.url, "--coordinator", plan.coordinator),
            *("--market", self.config.params.market, "--key", str(key_file)),
            *("--credentials", str(self.files.credentials)),
        ]

    async def start_provers(self) -> None:
        for p in self.plan.provers:
            args = ["--capacity", str(p.capacity), "--cost", str(p.cost)]
            proc = await self.spawn(p.name, "prover", *self.common(p.key_file), *args)
            self.provers.append(proc)
            await self.wait_line([proc], "prover.started")

    async def start_coordinator(self, name: str = "coordinator") -> Proc:
        plan = self.plan
        password = json.loads(self.files.credentials.read_text())[plan.coordinator]
        return await self.spawn(
            name,
            *("coordinator", "--broker", self.url, "--key", str(plan.coordinator_key)),
            *("--market", str(plan.market_file), "--genesis", str(plan.genesis_file)),
            *("--ledger", str(plan.ledger), "--rounds", str(self.config.rounds)),
            *("--start-delay-ms", "300", "--password", password),
        )

    async def wallet(self, key_file: Path, *args: str, code: int = 0) -> dict[str, Any]:
        """Run `proofmarket wallet ARGS --json` as its own process; its answer (exit `code`)."""
        command, *rest = args
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "proofmarket", "wallet", command, *self.common(key_file), "--json", *rest),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(WAIT):
            out, err = await process.communicate()
        assert code == process.returncode, err.decode()
        answer = json.loads(out)
        assert isinstance(answer, dict)
        return answer

    def user(self, key_file: Path) -> list[str]:
        fee = "1:40"  # two bids fit in what is left after the withdrawal
        args = ["--tasks", "2", "--fee-range", fee, "--rounds", "1", "--seed", "7"]
        return ["user", *self.common(key_file), *args]


def newest_round(proc: Proc) -> int:
    """The newest round the coordinator announced, from its round.progress lines."""
    return max(line["round"] for line in proc.lines if line.get("event") == "round.progress")


async def test_newcomer_admitted_funded_and_bids_in_the_open_round(tmp_path: Path) -> None:
    """Admitted by SIGHUP and funded by the faucet, a late user bids in the round already open."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not on PATH")
    config = NetConfig(provers=2, users=1, rounds=ROUNDS, params=JOIN)
    broker_dir = tmp_path / "market" / "broker"  # where JoinMarket writes the broker files
    server = MosquittoBroker(
        password_file=broker_dir / "passwd", acl_file=broker_dir / "acl", workdir=tmp_path / "mq"
    )
    market = JoinMarket(config, server.url, tmp_path / "market")
    try:
        async with server:
            await _join_while_running(market, server)
    finally:
        await market.close()


async def _join_while_running(market: JoinMarket, server: MosquittoBroker) -> None:
    await market.start_provers()
    coordinator = await market.start_coordinator()
    await market.wait_line([coordinator], "round.progress", round=0)
    admit_party(market.broker_dir, market.newcomer)
    server.reload()  # SIGHUP: the broker rereads passwd; every connection stays up
    granted = await market.wallet(
        market.faucet_key, "grant", "--to", market.newcomer, "--amount", str(GRANT)
    )
    assert ("funding_notice", market.newcomer, GRANT) == (
        granted["kind"],
        granted["to"],
        granted["amount"],
    )
    status = await market.wallet(market.newcomer_key, "balance")
    assert ("account_status", GRANT, 0, [], market.faucet) == (
        status["kind"],
        status["balance"],
        status["escrow"],
        status["open_tasks"],
        status["faucet"],
    )
    refused = await market.wallet(market.newcomer_key, "withdraw", str(GRANT + 1), code=1)
    assert ("reject", "insufficient_funds") == (refused["kind"], refused["code"])
    paid = await market.wallet(market.newcomer_key, "withdraw", "10")
    assert ("withdrawal_receipt", 10, GRANT - 10) == (
        paid["kind"],
        paid["amount"],
        paid["remaining"],
    )
    # Started just after a round opens, the user hears of it only from the retained copy.
    opened = newest_round(coordinator) + 1
    assert opened < ROUNDS
    await market.wait_line([coordinator], "round.progress", round=opened)
    late = await market.spawn("newcomer", *market.user(market.newcomer_key))
    market.users.append(late)
    await market.wait_line([late], "user.bid")
    assert opened == (late.find("user.bid") or {}).get("round")
    codes = await market.finish(coordinator)
    assert {0} == set(codes.values())
    stopped = late.find("user.stopped") or {}
    assert (2, 2, 0) == (stopped["tasks_bid"], stopped["bids_accepted"], stopped["bids_rejected"])
    report = market.report()
    ledger = report["ledger"]
    # The 10 withdrawn left the market: what it holds is what was funded, less that.
    assert (True, 10, ledger["funded"] - 10) == (
        ledger["conserved"],
        ledger["withdrawn"],
        ledger["total"],
    )
    assert_sound({**report, "ledger": {**ledger, "total": ledger["funded"]}}, ROUNDS)
    # The market is over; the broker still holds the last round's announcement. (The
    # newcomer's own session would also hold what was queued for it since it left.)
    after = await market.spawn("after-the-end", *market.user(market.watcher_key))
    await market.wait_line([after], "wire.stale_announcement", round=ROUNDS - 1)
    after.process.send_signal(signal.SIGTERM)
    assert 0 == await market.exit_code(after)
    assert after.find("user.bid") is None


async def test_user_started_mid_round_bids_in_it(broker: RunningBroker, tmp_path: Path) -> None:
    """On either broker, a user started after a round opened bids in that round."""
    params = msgspec.structs.replace(JOIN, market="latejoin")
    config = NetConfig(provers=2, users=1, rounds=3, params=params)
    async with local_market(config, broker.url, tmp_path) as market:
        common = ["--broker", broker.url, "--coordinator", market.plan.coordinator]
        common += ["--market", params.market]
        for p in market.plan.provers:
            args = ["--key", str(p.key_file), "--capacity", str(p.capacity), "--cost", str(p.cost)]
            market.provers.append(await market.spawn(p.name, "prover", *common, *args))
            await market.wait_line([market.provers[-1]], "prover.started")
        coordinator = await market.start_coordinator()
        await market.wait_line([coordinator], "round.progress", round=1)
        user = market.plan.users[0]
        late = await market.spawn(
            "late",
            *("user", *common, "--key", str(user.key_file), "--tasks", "1"),
            *("--fee-range", "1:1", "--rounds", "1", "--seed", "9"),
        )
        market.users.append(late)
        await market.wait_line([late], "user.bid")
        codes = await market.finish(coordinator)
    assert 1 == (late.find("user.bid") or {}).get("round")
    assert {0} == set(codes.values())
    assert_sound(market.report(), 3)
