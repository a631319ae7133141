"""`proofmarket bench hostile`: a flood of hostile input against a live testnet.

The same testnet (separate processes, one real broker, same seed) runs twice: once in
peace, once with an attacker sending `inputs` hostile inputs of every class
(deploy.hostile) during the first round. The coordinator's CPU time in the peaceful run is
the baseline, so the extra CPU per 1,000 hostile inputs is measured within one run of the
bench. The verdict fails when a round did not settle, an honest prover was slashed, a
process exited badly, or an input addressed back to the attacker went without its
specific reject (rejects sent to the abused victim are sealed to it, so only the victim
could check those; the test suite does).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from deploy.hostile import HostileInput, HostileTraffic
from deploy.testnet import Plan, Progress, TestnetConfig, run_testnet
from protocol import topics
from protocol.envelope import MAX_ENVELOPE_SIZE, open_envelope
from protocol.identity import Identity
from protocol.messages import Reject, RoundAnnouncement
from runtime.bus import Bus

FLIGHT = 200
"""Publishes awaiting the broker's acknowledgement at once."""
INPUTS_PER_S = 200
"""A flood rate even amqtt on a busy 2-core machine keeps up with: round 0's bid window
is sized so that the whole flood fits in it (amqtt took 10,000 at 345/s here)."""
SETTLE_S = 30.0
"""Bound on waiting for the last rejects once the flood is sent."""


@dataclass
class _Coordinator(Progress):
    """The live view, plus the coordinator's CPU time from its last log line."""

    cpu_s: float | None = None

    def on_line(self, entry: dict[str, object]) -> None:
        super().on_line(entry)
        cpu = entry.get("cpu_s")
        if entry.get("event") == "coordinator.stopped" and isinstance(cpu, int | float):
            self.cpu_s = float(cpu)


@dataclass
class _Attack:
    """What the attacker sent, and every reject it got back (ref, code), with times."""

    inputs: list[HostileInput] = field(default_factory=list)
    answers: set[tuple[bytes, str]] = field(default_factory=set)
    rejects: int = 0
    started: float = 0.0
    sent: float = 0.0
    last_reject: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def expected(self) -> set[tuple[bytes, str]]:
        return {(i.ref, i.code) for i in self.inputs if i.code and i.answer_to == self.me}

    me: str = ""


def bench_config(inputs: int, broker: str, seed: int) -> TestnetConfig:
    """A lively testnet whose round 0 stays open for the whole flood."""
    base = TestnetConfig()
    window = max(3_000, 1_000 * inputs // INPUTS_PER_S)
    params = msgspec.structs.replace(base.params, market="hostile", bid_window_ms=window)
    return TestnetConfig(provers=3, users=20, rounds=2, broker=broker, seed=seed, params=params)


async def run_hostile_bench(inputs: int, broker: str, seed: int = 1) -> dict[str, Any]:
    """Both runs on `broker` (an mqtt:// URL) and the figures; `ok` is the verdict."""
    config = bench_config(inputs, broker, seed)
    peaceful = _Coordinator()
    base = await run_testnet(config, progress=peaceful)
    attacked = _Coordinator()
    attack = _Attack()
    tasks: list[asyncio.Task[None]] = []

    def on_started(plan: Plan) -> None:
        tasks.append(asyncio.create_task(_attack(plan, broker, inputs, seed, attack)))

    report = await run_testnet(config, progress=attacked, on_started=on_started)
    for task in tasks:
        await task
    return _figures(inputs, base, peaceful, report, attacked, attack)


async def _attack(plan: Plan, url: str, count: int, seed: int, attack: _Attack) -> None:
    """Wait for round 0, flood it, and collect the rejects (bounded)."""
    attacker = Identity.from_seed(random.Random(seed).randbytes(32))
    attack.me = attacker.public_hex
    market = plan_market(plan)
    big = 2 * MAX_ENVELOPE_SIZE  # the attacker's own bus must let an oversized input out
    key = attacker.public_hex
    async with Bus(url, client_id=key, username=key, max_payload=big) as bus:
        await bus.subscribe(topics.outbox(market, attacker.public_hex), topics.public(market))
        announced: list[RoundAnnouncement] = []
        listen = asyncio.create_task(
            _listen(bus, attacker, plan.coordinator, market, attack, announced)
        )
        try:
            async with asyncio.timeout(SETTLE_S):
                while not announced:
                    attack.changed.clear()
                    await attack.changed.wait()
            first = announced[0]
            traffic = HostileTraffic(
                attacker,
                plan.provers[0].public,
                plan.coordinator,
                market,
                first.round,
                first.params.p_max,
                random.Random(seed),
                funded=False,
            )
            attack.inputs = list(traffic.inputs(count))
            attack.started = time.monotonic()
            for start in range(0, count, FLIGHT):
                chunk = attack.inputs[start : start + FLIGHT]
                await asyncio.gather(*(bus.publish(i.topic, i.payload) for i in chunk))
            attack.sent = time.monotonic()
            expected = attack.expected
            async with asyncio.timeout(SETTLE_S):
                while not expected <= attack.answers:
                    attack.changed.clear()
                    await attack.changed.wait()
        except TimeoutError:
            pass  # the figures say what was missing
        finally:
            listen.cancel()


async def _listen(
    bus: Bus,
    attacker: Identity,
    coordinator: str,
    market: str,
    attack: _Attack,
    announced: list[RoundAnnouncement],
) -> None:
    public = topics.public(market)
    async for delivery in bus.messages():
        reader = None if delivery.topic == public else attacker
        opened = open_envelope(reader, delivery.payload, market=market)
        message = opened.message
        if isinstance(message, RoundAnnouncement) and opened.sender != coordinator:
            # Retained on the broker by the peaceful run's coordinator (same market name):
            # its round is no round of this market's.
            continue
        if isinstance(message, RoundAnnouncement):
            announced.append(message)
        elif isinstance(message, Reject):
            attack.answers.add((message.ref, message.code))
            attack.rejects += 1
            attack.last_reject = time.monotonic()
        attack.changed.set()


def plan_market(plan: Plan) -> str:
    return plan.market_file.read_text().split('market = "', 1)[1].split('"', 1)[0]


def _figures(
    inputs: int,
    base: dict[str, Any],
    peaceful: _Coordinator,
    report: dict[str, Any],
    attacked: _Coordinator,
    attack: _Attack,
) -> dict[str, Any]:
    missing = Counter(
        i.kind
        for i in attack.inputs
        if i.code and i.answer_to == attack.me and (i.ref, i.code) not in attack.answers
    )
    sending = max(attack.sent - attack.started, 1e-9)
    answering = max(attack.last_reject - attack.started, 1e-9)
    extra_cpu = None
    if attacked.cpu_s is not None and peaceful.cpu_s is not None:
        extra_cpu = round((attacked.cpu_s - peaceful.cpu_s) * 1_000_000 / inputs, 1)
    slashed = sum(int(r["slashed_provers"]) for r in report["rounds"])
    problems: list[str] = []
    for name, run in (("peaceful", base), ("attacked", report)):
        problems.extend(f"{name} run: {problem}" for problem in run["problems"])
    if missing:
        problems.append(f"inputs without their reject: {dict(missing)}")
    return {
        "inputs": inputs,
        "classes": len({i.kind for i in attack.inputs}),
        "inputs_per_s": round(inputs / sending),
        "rejects": attack.rejects,
        "rejects_per_s": round(attack.rejects / answering),
        "coordinator_cpu_s": {"peaceful": peaceful.cpu_s, "attacked": attacked.cpu_s},
        "coordinator_cpu_ms_per_1000_inputs": extra_cpu,
        "honest_slashes": slashed,
        "unanswered": dict(missing),
        "traded_tasks": sum(int(r["allocated_tasks"]) for r in report["rounds"]),
        "ok": not problems,
        "problems": problems,
    }
