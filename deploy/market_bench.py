"""`proofmarket bench market`: a real multi-process market of a given size, timed.

The market is a testnet (deploy/testnet.py): a coordinator, provers and user processes,
each its own OS process on the broker, with real signatures and encryption. Provers are
sized so that most task bids trade and the proving work is the least the workload has
(difficulty 1, no setup), and the prove window is sized from that work as measured on
this machine in the same run, so the figures are the market's, not the workload's. Read
from the coordinator's structured log, per round:

- `bids_per_s`: task bids accepted per second of the bid window they came in;
- `clear_ms`: from the bid deadline to the round's clearing sealed (its result and the
  assignments go first, before any user's notice);
- `assign_ms`: from the bid deadline to the last assignment handed to the broker, and
  `core_ms` the part of it the core's clearing took (`round.assigned` lines);
- `settle_ms`: from the bid deadline to the last batch of the round settled.

The baseline is the same market in memory (deploy/simulation.py): the same rules,
windows, parties and supply, every core on a simulated clock with no wire and no crypto,
each prover proving on a core of its own at the speed measured in this run, run in the
same command. `ratio` is the settled tasks per second of the
real market (from the first round's opening to the last round settled) over the
in-memory market's (the same span on its clock): what the wire and the crypto cost.
`schedule_ratio` is the scheduled time from the first opening to the last clearing over
the time it took: below 1, the rounds ran behind their schedule by that factor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import msgspec

from deploy.simulation import SimConfig, Simulation
from deploy.testnet import TestnetConfig, run_testnet
from protocol.workload import prove_batch

PROVE_MS_BASE = 2000
PROVE_MARGIN = 3
"""The prove window is PROVE_MS_BASE plus this many times the round's proving work spread
over the machine's cores: the provers share those cores with the market itself."""


def proving_ms_per_task() -> float:
    """What one task of the bench's workload (difficulty 1, no setup) takes to prove here."""
    inputs = [i.to_bytes(32, "big") for i in range(200)]
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        prove_batch(inputs, difficulty=1, setup=0)
        best = min(best, time.perf_counter() - began)
    return best * 1000 / len(inputs)


@dataclasses.dataclass(frozen=True, slots=True)
class MarketBenchConfig:
    broker: str
    tasks_per_round: int
    rounds: int = 3
    users: int = 100  # identities, each bidding tasks_per_round / users in one bulk
    user_processes: int = 1
    provers: int = 8
    seed: int = 1
    proving_ms_per_task: float = 0.2  # measured by the command (proving_ms_per_task)
    bid_window_ms: int | None = None  # None: sized for the load (TestnetConfig.sized)

    def prove_window_ms(self) -> int:
        work = self.tasks_per_round * self.proving_ms_per_task / (os.cpu_count() or 1)
        return PROVE_MS_BASE + math.ceil(PROVE_MARGIN * work)

    @property
    def tasks_per_user(self) -> int:
        return -(-self.tasks_per_round // self.users)

    @property
    def capacity(self) -> int:
        return -(-self.tasks_per_round * 5 // (4 * self.provers))  # supply 1.25x demand

    def testnet(self, workdir: Path) -> TestnetConfig:
        tasks_per_user, capacity = self.tasks_per_user, self.capacity
        base = TestnetConfig()
        params = msgspec.structs.replace(
            base.params,
            market="bench-market",
            difficulty=1,
            setup=0,
            prove_window_ms=self.prove_window_ms(),
        )
        if self.bid_window_ms is not None:
            params = msgspec.structs.replace(params, bid_window_ms=self.bid_window_ms)
        testnet = TestnetConfig(
            provers=self.provers,
            users=self.users,
            rounds=self.rounds,
            broker=self.broker,
            tasks_per_user=tasks_per_user,
            user_processes=self.user_processes,
            prover_capacity=capacity,
            seed=self.seed,
            workdir=workdir,
            params=params,
        )
        return testnet if self.bid_window_ms is not None else testnet.sized()


async def run_market_bench(
    config: MarketBenchConfig, workdir: Path | None = None
) -> dict[str, object]:
    """Run the market; the figures and the honest-party verdict. Its keys, ledger and logs
    stay in `workdir` when given (else a temporary directory)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-market-")))
        testnet = config.testnet(workdir)
        report = await run_testnet(testnet)
        timings = round_timings(workdir / "coordinator.log")
        assigned = {
            int(_int(a.get("round"))): a
            for a in _lines(workdir / "coordinator.log", "round.assigned")
        }
        stopped = _last(workdir / "coordinator.log", "coordinator.stopped")
    rows = [r for r in report["rounds"] if isinstance(r, dict)]  # type: ignore[attr-defined]
    settled = sum(_int(r.get("proofs_valid")) for r in rows)
    span = float(timings["span_s"]) or 1.0  # type: ignore[arg-type]
    in_memory = in_memory_baseline(config, testnet)
    in_memory_rate = float(in_memory["settled_tasks"]) / float(in_memory["span_s"])  # type: ignore[arg-type]
    settled_per_s = settled / span
    scheduled = config.rounds * testnet.params.bid_window_ms / 1000
    clearing_span = float(timings["clearing_span_s"]) or scheduled  # type: ignore[arg-type]
    bids = [int(r.get("tasks_bid", 0)) for r in rows]
    window_s = testnet.params.bid_window_ms / 1000
    return {
        "tasks_per_round": config.tasks_per_round,
        "rounds": config.rounds,
        "bid_window_ms": testnet.params.bid_window_ms,
        "prove_window_ms": testnet.params.prove_window_ms,
        "tasks_bid": bids,
        "bids_per_s": round(statistics.median(bids) / window_s, 1) if bids else 0.0,
        "proving_ms_per_task": round(config.proving_ms_per_task, 4),
        "clear_ms": timings["clear_ms"],
        "assign_ms": [_int(assigned[n].get("after_deadline_ms")) for n in sorted(assigned)],
        "core_ms": [_int(assigned[n].get("core_ms")) for n in sorted(assigned)],
        "settle_ms": timings["settle_ms"],
        "honest_slashes": len(report.get("slashed", [])),  # type: ignore[arg-type]
        "coordinator_max_rss_mb": round(_int(stopped.get("max_rss_kb")) / 1024, 1),
        "settled_tasks": settled,
        "settled_per_s": round(settled_per_s, 1),
        "in_memory": in_memory,
        "ratio": round(settled_per_s / in_memory_rate, 3) if in_memory_rate else 0.0,
        "clearing_span_s": round(clearing_span, 3),
        "scheduled_span_s": round(scheduled, 3),
        "schedule_ratio": round(scheduled / clearing_span, 3),
        "problems": report["problems"],
        "ok": report["ok"],
    }


def in_memory_baseline(config: MarketBenchConfig, testnet: TestnetConfig) -> dict[str, object]:
    """The same market in memory: its settled tasks, and per second of its simulated clock
    from the first round's opening to the last round settled."""
    params = testnet.params
    sim = Simulation(
        SimConfig(
            rounds=config.rounds,
            provers=config.provers,
            users=config.users,
            seed=config.seed,
            tasks_per_round=config.tasks_per_user,
            capacity_range=(config.capacity, config.capacity),
            fee_range=(1, params.p_max),
            # The testnet's provers ask 5 + (17 i) mod (p_max / 2): the same spread.
            cost_range=(5, 5 + max(1, params.p_max // 2) - 1),
            p_max=params.p_max,
            epoch_rounds=params.epoch_rounds,
            capacity_factor=params.capacity_factor,
            difficulty=params.difficulty,
            setup=params.setup,
            bid_window_ms=params.bid_window_ms,
            prove_window_ms=params.prove_window_ms,
            # Each prover on a core of its own, at the speed measured in this run.
            proving_us_per_task=max(1, math.ceil(config.proving_ms_per_task * 1000)),
            mechanism=params.mechanism,
            market=params.market,
        )
    )
    sim.run()
    result = sim.finish()
    rows = result.report["rounds"]
    assert isinstance(rows, list)
    settled = sum(_int(r.get("proofs_valid")) for r in rows if isinstance(r, dict))
    opened_ms = params.bid_window_ms  # the simulation opens round 0 one bid window in
    span_s = (sim.now - opened_ms) / 1000 or 1.0
    return {
        "settled_tasks": settled,
        "span_s": round(span_s, 3),
        "settled_per_s": round(settled / span_s, 1),
    }


def round_timings(log: Path) -> dict[str, object]:
    """Per round, ms from its bid deadline to its clearing and to its last settlement."""
    deadline: dict[int, float] = {}
    opened: dict[int, float] = {}
    cleared: dict[int, float] = {}
    settled: dict[int, float] = {}
    for entry in _lines(log, "round.progress"):
        number, phase = entry.get("round"), entry.get("phase")
        if not isinstance(number, int):
            continue
        at = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()
        if phase == "bid":
            opened.setdefault(number, at)
            deadline.setdefault(number, _int(entry.get("bid_deadline")) / 1000)
        elif phase in ("prove", "settled"):
            cleared.setdefault(number, at)
        if phase == "settled":
            settled[number] = at
    rounds = sorted(n for n in deadline if n in cleared and n in settled)
    span = max(settled.values()) - min(opened.values()) if rounds else 0.0
    clearing_span = max(cleared[n] for n in rounds) - min(opened.values()) if rounds else 0.0
    return {
        "clearing_span_s": clearing_span,
        "clear_ms": [round((cleared[n] - deadline[n]) * 1000) for n in rounds],
        "settle_ms": [round((settled[n] - deadline[n]) * 1000) for n in rounds],
        "span_s": span,
    }


def _lines(log: Path, event: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            entry = json.loads(line)
            if entry.get("event") == event:
                out.append(entry)
    return out


def _last(log: Path, event: str) -> dict[str, object]:
    found = _lines(log, event)
    return found[-1] if found else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
