"""Fault injection: one market of separate processes on Mosquitto through every fault in turn.

Four honest provers and two load-generating user processes trade for ROUNDS rounds while
the coordinator is SIGKILLed in each phase of a round (bidding, just cleared, settling)
and restarted on its ledger, a prover is SIGKILLed and restarted, and the broker is
restarted twice (SIGTERM while it takes bids, SIGKILL just after a clearing). Each fault
is timed by a process's own log lines, never by a sleep. Only the killed process goes:
its workers must follow it out.

At the end the ledger must show a sound market (money conserved, invariants, every round
settled, no honest prover slashed, no accepted task left open, trading after each
fault), every participant's own report must equal what the ledger says it got, no
process may be left behind, and no log may hold a traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import RunningBroker
from test_network_processes import QUICK, WAIT, LocalMarket, Proc, assert_sound, rounds_of
from test_no_orphans import gone, running

from coordinator.core import Coordinator
from coordinator.record_log import RecordLog, read_meta
from coordinator.records import decode_record
from coordinator.report import honest_losses
from coordinator.store import SqliteStore
from deploy.broker import MosquittoBroker
from deploy.testnet import TestnetConfig as NetConfig  # not a test class
from protocol.events import Publish
from protocol.messages import BidReceipt, BidReceipts, FailureRules, Notices, SettlementNotice

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROUNDS = 22
FAULTY = msgspec.structs.replace(
    QUICK,
    market="faulttest",
    bid_window_ms=1500,
    prove_window_ms=4000,
    epoch_rounds=4,
    failures=FailureRules(will_grace_ms=3000),
)
"""Windows with room for a loaded 2-core machine: a fault costs time, never a deadline.
The reconnect grace is shorter than the prove window, so a will's rescue can come first
and every prover that comes back must call it off in time."""
CONFIG = NetConfig(
    provers=4, users=8, user_processes=2, tasks_per_user=2, rounds=ROUNDS, params=FAULTY
)
# The rounds at which each fault strikes, in order; trading must resume within RESUME.
BID, CLEAR, SETTLE, PROVER, BROKER_TERM, BROKER_KILL = 3, 6, 9, 12, 15, 18
RESUME = 3
USER_FIELDS = (
    *("bids_accepted", "charged", "charged_total", "refunded", "refunded_total"),
    *("released", "released_total", "rescued", "compensated"),
)
PROVER_FIELDS = ("payments", "paid_total", "slashes", "slashed_total", "penalties")
COUNTERS = {"paid": "payments", "slashed": "slashes", "penalty": "penalties"}
"""The prover's names for its settlement outcomes (a user's are the outcomes' own)."""


class FaultMarket(LocalMarket):
    """A LocalMarket that kills one process alone (not its group) and starts it again."""

    def __init__(self, url: str, workdir: Path) -> None:
        super().__init__(CONFIG, url, workdir)
        self.groups: list[int] = []

    async def spawn(self, name: str, *args: str) -> Proc:
        proc = await super().spawn(name, *args)
        self.groups.append(proc.process.pid)  # its own session: pid == process group
        return proc

    async def crash(self, proc: Proc) -> None:
        """SIGKILL the service process only, as the OOM killer would; its workers remain."""
        assert len(members([proc.process.pid])) > 1, f"{proc.name} has no workers to leave"
        os.kill(proc.process.pid, signal.SIGKILL)
        assert -signal.SIGKILL == await self.exit_code(proc)

    async def wait_for(
        self, proc: Proc, event: str, match: Callable[[dict[str, Any]], bool]
    ) -> None:
        """Until `proc` logs `event` with a line `match` accepts; fails if it exits first."""
        async with asyncio.timeout(WAIT):
            while not any(line.get("event") == event and match(line) for line in proc.lines):
                if proc.log_done:
                    raise AssertionError(f"{proc.name} exited without a matching {event}")
                self.activity.clear()
                await self.activity.wait()

    async def restart_prover(self, proc: Proc) -> Proc:
        plan = next(p for p in self.plan.provers if p.name == proc.name)
        await self.crash(proc)
        again = await self.spawn(
            f"{proc.name}-restarted",
            *("prover", "--broker", self.url, "--coordinator", self.plan.coordinator),
            *("--market", FAULTY.market, "--key", str(plan.key_file)),
            *("--capacity", str(plan.capacity), "--cost", str(plan.cost)),
        )
        self.provers[self.provers.index(proc)] = again
        await self.wait_line([again], "prover.started")
        return again


def progress(
    number: int, check: Callable[[dict[str, Any]], bool]
) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("round") == number and check(line)


def in_phase(phase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("phase") == phase


async def inject_faults(market: FaultMarket, broker: MosquittoBroker) -> tuple[Proc, list[Proc]]:
    """Every fault in turn; the coordinator running at the end, and each killed prover's lives."""
    coordinator = await market.start_coordinator()
    phases = [
        (BID, in_phase("bid")),
        (CLEAR, in_phase("prove")),  # cleared, nothing proven yet
        (SETTLE, lambda line: line.get("proofs_valid", 0) > 0),  # some batches settled
    ]
    for number, check in phases:
        await market.wait_for(coordinator, "round.progress", progress(number, check))
        await market.crash(coordinator)
        coordinator = await market.start_coordinator(f"coordinator-{number}")
    # A prover between batches: paid for its round, assigned none after it yet.
    victim = await idle_prover(market, PROVER)
    restarted = await market.restart_prover(victim)
    # SIGTERM as bids come in; SIGKILL just after a clearing, with assignments in flight.
    for number, phase, kill in ((BROKER_TERM, "bid", False), (BROKER_KILL, "prove", True)):
        await market.wait_for(coordinator, "round.progress", progress(number, in_phase(phase)))
        await broker.restart(kill=kill)
    return coordinator, [victim, restarted]


async def idle_prover(market: FaultMarket, number: int) -> Proc:
    def idle(proc: Proc) -> bool:
        paid = [line["round"] for line in proc.lines if line.get("event") == "prover.paid"]
        assigned = [line["round"] for line in proc.lines if line.get("event") == "prover.assigned"]
        return bool(paid) and max(paid) >= number and max(paid) == max(assigned)

    async with asyncio.timeout(WAIT):
        while not any(idle(p) for p in market.provers):
            market.activity.clear()
            await market.activity.wait()
    return next(p for p in market.provers if idle(p))


@dataclass
class LedgerView:
    """What the ledger sent each party once, counted and summed, and who was slashed when."""

    parties: dict[str, Counter[str]] = field(default_factory=dict)
    slashed: dict[str, set[int]] = field(default_factory=dict)

    def note(self, to: str, message: object) -> None:
        counts = self.parties.setdefault(to, Counter())
        if isinstance(message, Notices):
            for notice in message.notices:
                self.note(to, notice)
        elif isinstance(message, BidReceipt):
            counts["bids_accepted"] += 1
        elif isinstance(message, BidReceipts):
            counts["bids_accepted"] += len(message.receipts)
        elif isinstance(message, SettlementNotice):
            counts[COUNTERS.get(message.outcome, message.outcome)] += 1
            counts[f"{message.outcome}_total"] += message.amount
            if message.outcome == "slashed":
                self.slashed.setdefault(to, set()).add(message.round)


def read_ledger(market: FaultMarket) -> LedgerView:
    """Replay the whole ledger, noting every message it sends to one party."""
    ledger = str(market.plan.ledger)
    meta = read_meta(ledger)
    log = RecordLog(SqliteStore(ledger), meta)
    core = Coordinator(meta.params, meta.genesis, meta.key, meta.start_ms, rounds=ROUNDS)
    view = LedgerView()
    try:
        for record in log.replay(0):
            for effect in core.handle(decode_record(record)):
                if isinstance(effect, Publish) and effect.to is not None:
                    view.note(effect.to, effect.message)
    finally:
        log.close()
    return view


def reported(proc: Proc, event: str, fields: tuple[str, ...]) -> dict[str, int]:
    stopped = proc.find(event)
    assert stopped is not None, f"{proc.name} logged no summary"
    return {f: stopped[f] for f in fields}


def first_life(proc: Proc) -> Counter[str]:
    """A SIGKILLed prover's settlements, from its log lines (one per round: copies are resends)."""
    counts: Counter[str] = Counter()
    seen = set()
    for line in proc.lines:
        outcome = str(line.get("event")).removeprefix("prover.")
        if outcome in COUNTERS and (outcome, line["round"]) not in seen:
            seen.add((outcome, line["round"]))
            counts[COUNTERS[outcome]] += 1
            counts[f"{outcome}_total"] += line["amount"]
    return counts


def assert_reports_equal_ledger(market: FaultMarket, view: LedgerView, lives: list[Proc]) -> None:
    """Each user process and prover reports exactly what the ledger sent it."""
    for user, proc in zip(market.plan.users, market.users, strict=True):
        ledger = sum((view.parties.get(k, Counter()) for k in user.identities), Counter())
        reports = reported(proc, "user.stopped", USER_FIELDS)
        assert {f: ledger[f] for f in USER_FIELDS} == reports, proc.name
        closed = reports["charged"] + reports["refunded"] + reports["released"]
        assert (reports["bids_accepted"], None) == (closed, proc.find("user.unsettled_at_exit"))
    killed, restarted = lives
    for prover in market.plan.provers:
        ledger = view.parties.get(prover.public, Counter())
        proc = next(p for p in market.provers if p.name.startswith(prover.name))
        mine = Counter(reported(proc, "prover.stopped", PROVER_FIELDS))
        if proc is restarted:
            mine += first_life(killed)
        assert {f: ledger[f] for f in PROVER_FIELDS} == {f: mine[f] for f in PROVER_FIELDS}


def undeliverable(market: FaultMarket, killed: Proc, restarted: Proc, victim: str) -> set[int]:
    """Rounds the killed prover truly could not deliver: won before its will was taken,
    their assignment seen by neither life, or by the restarted one only too late.

    A will keeps an offline prover out of every clearing after it. A batch won before it
    waits for the prover through the reconnect grace (`will_grace_ms`), and a prover back
    within it gets the assignment its broker session kept and proves it: a batch it saw
    in time and still lost, or one won after its will, fails this test.
    """
    back = (restarted.find("prover.started") or {})["timestamp"]
    coordinators = [p for p in market.procs.values() if p.name.startswith("coordinator")]
    wills = [
        line["timestamp"]
        for proc in coordinators
        for line in proc.lines
        if line.get("event") == "coordinator.prover_offline"
        and line.get("prover") == victim
        and line.get("taken")
    ]
    until = min([back, *wills])
    late = {line["round"] for line in restarted.lines if line.get("code") == "late_proof"}
    seen = assigned(killed) | (assigned(restarted) - late)
    cleared: dict[int, str] = {}
    for proc in coordinators:
        for line in proc.lines:
            if line.get("event") == "round.progress" and line.get("phase") != "bid":
                cleared[line["round"]] = min(cleared.get(line["round"], until), line["timestamp"])
    return {number for number, at in cleared.items() if at < until and number not in seen}


def assigned(proc: Proc) -> set[int]:
    return {line["round"] for line in proc.lines if line.get("event") == "prover.assigned"}


def assert_market_sound(report: dict[str, Any], honest: list[str]) -> None:
    """Sound, nobody honest lost anything, and trading resumed after every fault."""
    assert_sound(report, ROUNDS)
    assert [] == honest_losses(report, honest)
    traded = {r["round"] for r in rounds_of(report) if r["proofs_valid"] > 0}
    for fault in (BID, CLEAR, SETTLE, PROVER, BROKER_TERM, BROKER_KILL):
        assert traded & set(range(fault + 1, fault + 1 + RESUME)), f"no trade after {fault}"


def members(groups: list[int]) -> list[int]:
    """The live processes (zombies aside) of the process groups `groups`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups and running(int(stat.parent.name)):
            found.append(int(stat.parent.name))
    return found


async def assert_nothing_left(market: FaultMarket) -> None:
    """Every process of every group the market started has exited (workers included)."""
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(gone(pid) for pid in members(market.groups)))
    assert [] == members(market.groups)


def tracebacks(workdir: Path) -> dict[str, int]:
    logs = {log.name: log.read_text().count("Traceback") for log in workdir.glob("*.log")}
    return {name: count for name, count in logs.items() if count}


async def test_market_survives_every_fault(mosquitto: RunningBroker, tmp_path: Path) -> None:
    """Coordinator killed in each phase, a prover and the broker restarted: nobody honest loses."""
    assert isinstance(mosquitto.server, MosquittoBroker)
    market = FaultMarket(mosquitto.url, tmp_path)
    try:
        await market.start_parties()
        coordinator, lives = await inject_faults(market, mosquitto.server)
        codes = await market.finish(coordinator)
        await assert_nothing_left(market)
    finally:
        await market.close()
    assert {0} == set(codes.values()), codes
    assert {} == tracebacks(tmp_path)
    killed, restarted = lives
    victim = next(p.public for p in market.plan.provers if p.name == killed.name)
    honest = [p.public for p in market.plan.provers if p.public != victim]
    assert_market_sound(market.report(), honest)
    view = read_ledger(market)
    assert view.slashed.get(victim, set()) <= undeliverable(market, killed, restarted, victim)
    assert_reports_equal_ledger(market, view, lives)
