"""Whole markets of separate OS processes over real brokers, with parties killed mid-round.

`run_testnet` covers the plain runs. The fault tests launch the same plan (deploy.testnet's
keys, genesis and market file) process by process, so one party at a time can be killed
or restarted, and they follow each process's JSON log to know when: no sleeps, every wait
bounded. Every verdict comes from the coordinator's ledger (`summary_from_ledger`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import RunningBroker

from coordinator.service import CoordinatorConfig, summary_from_ledger
from coordinator.state import OpeningBalances
from deploy.genesis import MarketGenesis, dump_genesis
from deploy.market import DEFAULT_MARKET
from deploy.testnet import Plan, make_plan, run_testnet
from deploy.testnet import TestnetConfig as NetConfig  # not a test class

pytestmark = [pytest.mark.broker, pytest.mark.slow]

WAIT = 60.0  # bound on each wait for a log line or an exit; a loaded 2-core machine is slow
QUICK = msgspec.structs.replace(
    DEFAULT_MARKET,
    market="nettest",
    difficulty=5,
    setup=50,
    bid_window_ms=1000,
    prove_window_ms=1500,
    epoch_rounds=4,
)
"""Tiny proofs and short windows: these tests check the market, not the prover's speed."""


def rounds_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    rounds = report["rounds"]
    assert isinstance(rounds, list)
    return rounds


def assert_sound(report: dict[str, Any], rounds: int) -> None:
    """The market finished every round, every allocated task settled, money is conserved."""
    assert report["finished"] is True
    assert list(range(rounds)) == [r["round"] for r in rounds_of(report)]
    for row in rounds_of(report):
        assert row["allocated_tasks"] == row["proofs_valid"] + row["refunded_tasks"], row
    assert report["ledger"]["conserved"] is True
    assert report["ledger"]["funded"] == report["ledger"]["total"]
    assert report["invariants_ok"] is True


# -- plain runs through run_testnet -------------------------------------------------------


async def test_testnet_settles_every_round_on_each_broker(broker: RunningBroker) -> None:
    """A testnet on an external broker settles every round with valid proofs and clean exits."""
    config = NetConfig(provers=2, users=6, rounds=3, broker=broker.url, params=QUICK)
    async with asyncio.timeout(WAIT * 2):
        report = await run_testnet(config)
    assert report["all_rounds_settled"] is True
    assert_sound(report, 3)
    allocated = sum(r["allocated_tasks"] for r in rounds_of(report))
    assert allocated > 0
    assert allocated == sum(r["proofs_valid"] for r in rounds_of(report))
    assert 0 == sum(r["slashed_provers"] for r in rounds_of(report))
    assert {"prover-0": 0, "prover-1": 0, "user-0": 0, "coordinator": 0} == report["processes"]
    assert ([], True) == (report["problems"], report["ok"])


async def test_testnet_with_faulty_provers_slashes_and_refunds() -> None:
    """On the default embedded broker, faulty provers are slashed, users refunded, money kept."""
    config = NetConfig(provers=3, users=9, rounds=3, faulty_provers=3, params=QUICK)
    async with asyncio.timeout(WAIT * 2):
        report = await run_testnet(config)
    assert report["all_rounds_settled"] is True
    assert_sound(report, 3)
    assert sum(r["slashed_provers"] for r in rounds_of(report)) >= 1
    assert sum(r["refunded_tasks"] for r in rounds_of(report)) >= 1
    assert 0 == sum(r["proofs_valid"] for r in rounds_of(report))
    assert ([], True) == (report["problems"], report["ok"])  # only faulty provers slashed
    processes = report["processes"]
    assert isinstance(processes, dict)
    assert {0} == set(processes.values())


# -- a market launched process by process --------------------------------------------------


@dataclass
class Proc:
    """One OS process of the market, its JSON log lines collected as they come."""

    name: str
    process: asyncio.subprocess.Process
    activity: asyncio.Event
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def find(self, event: str, **fields: object) -> dict[str, Any] | None:
        for line in self.lines:
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                return line
        return None

    @property
    def log_done(self) -> bool:
        return self.reader is not None and self.reader.done()


class LocalMarket:
    """deploy.testnet's plan for `config`, run on `url` one process at a time."""

    def __init__(self, config: NetConfig, url: str, workdir: Path) -> None:
        self.config = config
        self.url = url
        self.plan: Plan = make_plan(config, workdir)
        self.activity = asyncio.Event()
        self.procs: dict[str, Proc] = {}
        self.provers: list[Proc] = []
        self.users: list[Proc] = []

    def rewrite_genesis(self, deposits: dict[str, int], balances: dict[str, int]) -> None:
        """Give the market other money before its coordinator starts (file and plan)."""
        self.plan.genesis_file.write_text(
            dump_genesis(
                MarketGenesis(
                    market=self.config.params.market,
                    coordinator=self.plan.coordinator,
                    provers=deposits,
                    users=balances,
                )
            )
        )
        self.plan = dataclasses.replace(
            self.plan, genesis=OpeningBalances(balances=balances, deposits=deposits)
        )

    async def spawn(self, name: str, *args: str) -> Proc:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proofmarket",
            *args,
            "--log-format",
            "json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own group: a kill reaches its proving workers too
        )
        proc = Proc(name, process, self.activity)

        async def follow() -> None:
            assert process.stderr is not None
            with (self.plan.workdir / f"{name}.log").open("ab") as log:
                async for raw in process.stderr:
                    log.write(raw)
                    with contextlib.suppress(ValueError):
                        entry = json.loads(raw)
                        if isinstance(entry, dict):
                            proc.lines.append(entry)
                    self.activity.set()
            self.activity.set()

        proc.reader = asyncio.create_task(follow())
        self.procs[name] = proc
        return proc

    async def wait_line(self, procs: list[Proc], event: str, **fields: object) -> Proc:
        """The first of `procs` to log `event` (with `fields`); fails if all of them exit."""
        async with asyncio.timeout(WAIT):
            while True:
                for proc in procs:
                    if proc.find(event, **fields) is not None:
                        return proc
                if all(p.log_done for p in procs):
                    raise AssertionError(f"{[p.name for p in procs]} exited without {event}")
                self.activity.clear()
                await self.activity.wait()

    async def exit_code(self, proc: Proc) -> int:
        async with asyncio.timeout(WAIT):
            code = await proc.process.wait()
            assert proc.reader is not None
            await proc.reader
        return code

    async def start_parties(self) -> None:
        """Every prover and user, each listening before the coordinator starts."""
        params, plan = self.config.params, self.plan
        common = ["--broker", self.url, "--coordinator", plan.coordinator]
        common += ["--market", params.market]
        for p in plan.provers:
            self.provers.append(
                await self.spawn(
                    p.name,
                    *("prover", *common, "--key", str(p.key_file)),
                    *("--capacity", str(p.capacity), "--cost", str(p.cost), "--fault", p.fault),
                )
            )
        for i, u in enumerate(plan.users):
            self.users.append(
                await self.spawn(
                    u.name,
                    *("user", *common, "--key", str(u.key_file)),
                    *("--tasks", str(self.config.tasks_per_user)),
                    *("--fee-range", f"1:{params.p_max}", "--identities", str(len(u.identities))),
                    *("--rounds", str(self.config.rounds), "--seed", str(100 + i)),
                )
            )
        for proc in self.provers:
            await self.wait_line([proc], "prover.started")
        for proc in self.users:
            await self.wait_line([proc], "user.started")

    async def start_coordinator(self, name: str = "coordinator") -> Proc:
        plan = self.plan
        return await self.spawn(
            name,
            *("coordinator", "--broker", self.url, "--key", str(plan.coordinator_key)),
            *("--market", str(plan.market_file), "--genesis", str(plan.genesis_file)),
            *("--ledger", str(plan.ledger), "--rounds", str(self.config.rounds)),
            *("--start-delay-ms", "300"),
        )

    async def finish(self, coordinator: Proc) -> dict[str, int]:
        """Wait for the coordinator to finish, then stop every party (as `testnet` does).

        Returns each process's exit code: a party told to stop leaves with 0.
        """
        codes = {coordinator.name: await self.exit_code(coordinator)}
        for proc in [*self.users, *self.provers]:
            if proc.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.send_signal(signal.SIGTERM)
            codes[proc.name] = await self.exit_code(proc)
        return codes

    def kill(self, proc: Proc) -> None:
        """SIGKILL the process and its workers: no goodbye, no clean disconnect."""
        os.killpg(proc.process.pid, signal.SIGKILL)

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.process.pid, signal.SIGKILL)
                await proc.process.wait()
            if proc.reader is not None:
                await asyncio.gather(proc.reader, return_exceptions=True)

    def report(self) -> dict[str, Any]:
        config = CoordinatorConfig(
            broker=self.url,
            params=self.config.params,
            genesis=self.plan.genesis,
            ledger=str(self.plan.ledger),
            rounds=self.config.rounds,
        )
        return summary_from_ledger(config, self.plan.coordinator)


@contextlib.asynccontextmanager
async def local_market(config: NetConfig, url: str, workdir: Path) -> AsyncIterator[LocalMarket]:
    market = LocalMarket(config, url, workdir)
    try:
        yield market
    finally:
        await market.close()


SLOW_PROOFS = msgspec.structs.replace(
    QUICK, difficulty=300, setup=8000, bid_window_ms=1000, prove_window_ms=6000
)
"""Proving a batch takes a couple of seconds: long enough to kill a prover in the middle."""


async def test_prover_killed_mid_prove_is_slashed_and_its_users_refunded(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """SIGKILL a proving prover: its will reaches the coordinator, it is slashed, users refunded."""
    config = NetConfig(provers=2, users=6, rounds=2, params=SLOW_PROOFS)
    async with local_market(config, broker.url, tmp_path) as market:
        await market.start_parties()
        coordinator = await market.start_coordinator()
        victim = await market.wait_line(market.provers, "prover.proving")
        market.kill(victim)
        key = next(p.public for p in market.plan.provers if p.name == victim.name)
        await market.wait_line([coordinator], "coordinator.prover_offline", prover=key)
        codes = await market.finish(coordinator)
    assert -signal.SIGKILL == codes.pop(victim.name)
    assert {0} == set(codes.values())
    report = market.report()
    assert_sound(report, 2)
    assert sum(r["slashed_provers"] for r in rounds_of(report)) >= 1
    assert sum(r["refunded_tasks"] for r in rounds_of(report)) >= 1


async def test_coordinator_killed_mid_round_resumes_from_its_ledger(
    embedded_broker: RunningBroker, tmp_path: Path
) -> None:
    """SIGKILL the coordinator after round 1 opens; restarted on its ledger it finishes.

    On the embedded broker; on Mosquitto, tests/test_network_faults.py kills it in each phase.
    """
    config = NetConfig(provers=2, users=6, rounds=4, params=QUICK)
    async with local_market(config, embedded_broker.url, tmp_path) as market:
        await market.start_parties()
        first = await market.start_coordinator()
        await market.wait_line([first], "round.progress", round=1)
        market.kill(first)
        assert -signal.SIGKILL == await market.exit_code(first)
        second = await market.start_coordinator("coordinator-restarted")
        started = await market.wait_line([second], "coordinator.started")
        codes = await market.finish(second)
    assert (started.find("coordinator.started") or {}).get("recorded", 0) > 0
    assert {0} == set(codes.values())
    assert_sound(market.report(), 4)


class BrokerProcess:
    """The embedded broker as an operator runs it: its own process, restarted as a process.

    Restarting amqtt inside a live event loop leaves the old connections open, which no
    real restart does; a process that exits closes every socket it had.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"mqtt://127.0.0.1:{port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "deploy.broker",
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(WAIT):
            line = await self.process.stdout.readline()
        assert line.startswith(b"ready "), line

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(WAIT):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def test_broker_restarted_mid_round_every_party_reconnects(
    tmp_path: Path, free_port: int
) -> None:
    """Restart the embedded broker (its own process) while round 1 takes bids; the market
    finishes and trades after it. Mosquitto's restarts are in tests/test_network_faults.py."""
    # rounds enough after the restart for parties backing off between reconnects, and a
    # whole epoch (4 rounds) after it for provers that must declare capacity again
    config = NetConfig(provers=2, users=6, rounds=10, params=QUICK)
    process = BrokerProcess(free_port)
    try:
        await process.start()
        async with local_market(config, process.url, tmp_path) as market:
            await market.start_parties()
            coordinator = await market.start_coordinator()
            await market.wait_line([coordinator], "round.progress", round=1, phase="bid")
            await process.restart()
            codes = await market.finish(coordinator)
    finally:
        await process.stop()
    assert {0} == set(codes.values())
    report = market.report()
    assert_sound(report, 10)
    assert any(r["allocated_tasks"] > 0 for r in rounds_of(report) if r["round"] >= 2)
