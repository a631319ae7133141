"""The soak benchmark over a real broker: one OS process per party, sampled as it ages.

The market is the testnet's (deploy/testnet.py: throwaway keys, genesis and market file,
provers and one user process of many identities, then the coordinator), run for a fixed
number of rounds of `round_ms` each. Every few seconds the launcher reads, for every
process it started and their children (signature and proving workers), the resident memory
(`VmRSS` in /proc/<pid>/status) and the CPU time used so far (/proc/<pid>/stat), and the
round the coordinator last reported. From consecutive samples come each process's CPU
time per round and the wall time per round; slopes per 1,000 rounds are fitted as in the
in-memory soak (deploy/soak.py). At the end the coordinator is started again on its
ledger, and its restart is timed: the fold of the record log it logs, and the process's
time from exec to serving (taking inputs), with its parts as it logs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import msgspec

from coordinator.report import honest_losses
from coordinator.service import CoordinatorConfig, summary_from_ledger
from deploy.market import load_market
from deploy.soak import RSS_SLOPE_MB, TIME_TOLERANCE, reference_cpu, slope_per_1000
from deploy.testnet import (
    READY_TIMEOUT_S,
    Child,
    Plan,
    Progress,
    TestnetConfig,
    TestnetError,
    _broker,
    _command,
    _launch,
    _spawn,
    _stop,
    make_plan,
)
from protocol.identity import Identity
from user_client.core import RETAIN_ROUNDS

FIT_MARGIN: Final = 100
"""Rounds past the memory horizon before fitting, and at least this many fitted."""
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_KB: Final = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True, slots=True)
class NetSoakConfig:
    """What to launch: the testnet's market, `rounds` rounds of `round_ms` (the bid window)."""

    broker: str
    rounds: int
    provers: int = 8
    users: int = 100
    round_ms: int = 1000
    prove_window_ms: int = 2000
    samples: int = 100
    seed: int = 1
    workdir: Path | None = None

    def testnet(self, workdir: Path) -> TestnetConfig:
        base = TestnetConfig()
        params = msgspec.structs.replace(
            base.params, bid_window_ms=self.round_ms, prove_window_ms=self.prove_window_ms
        )
        return replace(
            base,
            provers=self.provers,
            users=self.users,
            rounds=self.rounds,
            broker=self.broker,
            seed=self.seed,
            workdir=workdir,
            params=params,
        )


def rounds_for(minutes: float, round_ms: int) -> int:
    """How many rounds of `round_ms` fill `minutes`."""
    return max(4, int(minutes * 60_000 // round_ms))


# -- /proc ---------------------------------------------------------------------------


def rss_kb(pid: int) -> int | None:
    """A process's resident memory in kB (VmRSS), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; everything after its ')' is fixed.
    return text[text.rindex(")") + 2 :].split()


def cpu_s(pid: int) -> float | None:
    """User plus system CPU time a process has used, in seconds."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_by_parent() -> dict[int, list[int]]:
    """Every live process's children, by parent pid (one pass over /proc)."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                found.setdefault(int(fields[1]), []).append(int(entry.name))
    return {parent: sorted(pids) for parent, pids in found.items()}


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (signature and proving workers)."""
    return children_by_parent().get(pid, [])


# -- the run -------------------------------------------------------------------------


@dataclass
class RoundWatch(Progress):
    """The live view reduced to the newest round reported and the rejects sent, by code."""

    latest: int = -1
    rows: dict[int, dict[str, object]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    def on_line(self, entry: dict[str, object]) -> None:
        number, event = entry.get("round"), entry.get("event")
        if event == "round.progress" and isinstance(number, int):
            self.latest = max(self.latest, number)
        elif event == "coordinator.rejected":
            code = str(entry.get("code"))
            self.rejected[code] = self.rejected.get(code, 0) + 1


REFERENCE_TRIES: Final = 5
"""Reference works timed at each sample (their median is kept): a few ms of the launcher's."""


@dataclass
class Sampler:
    """Samples RSS and CPU time of every party's process and its children until told to stop."""

    processes: dict[str, int]
    watch: RoundWatch
    keep: Path | None = None  # each sample is also appended here, one JSON line, as taken
    samples: list[dict[str, object]] = field(default_factory=list)

    def take(self) -> None:
        pids = dict(self.processes)
        children = children_by_parent()
        for name, parent in self.processes.items():
            # The coordinator's signature workers, the provers' proving workers, and
            # each pool's resource tracker; named by pid, since some come and go.
            for pid in children.get(parent, []):
                pids[f"{name}.child-{pid}"] = pid
        rss = {name: rss_kb(pid) for name, pid in pids.items()}
        cpu = {name: cpu_s(pid) for name, pid in pids.items()}
        sample: dict[str, object] = {
            "round": self.watch.latest,
            "t_s": round(time.monotonic(), 3),
            "rss_mb": {n: round(v / 1024, 2) for n, v in rss.items() if v is not None},
            "cpu_s": {n: round(v, 3) for n, v in cpu.items() if v is not None},
            # The machine's speed now, as the launcher's own CPU time for a fixed work.
            "reference_ms": round(
                statistics.median(reference_cpu() for _ in range(REFERENCE_TRIES)) * 1000, 4
            ),
        }
        self.samples.append(sample)
        if self.keep is not None:
            # A run that fails later (say, at the restart) keeps its curves.
            with self.keep.open("a") as out:
                out.write(json.dumps(sample) + "\n")

    async def run(self, every_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.take()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await stop.wait()


async def run_net_soak(config: NetSoakConfig) -> dict[str, object]:
    """Run the networked soak and return its JSON document (see docs/deploy.md)."""
    if config.rounds < 4:
        raise ValueError("a soak needs at least 4 rounds")
    if config.workdir is not None:
        return await _soak(config, config.workdir)
    with tempfile.TemporaryDirectory(prefix="proofmarket-soak-") as scratch:
        return await _soak(config, Path(scratch))


async def _soak(config: NetSoakConfig, workdir: Path) -> dict[str, object]:
    testnet = config.testnet(workdir)
    plan = make_plan(testnet, workdir)
    watch = RoundWatch()
    children: list[Child] = []
    started = time.monotonic()
    async with _broker(config.broker) as url:
        try:
            coordinator = await _launch(testnet, plan, url, children, watch)
            sampler = Sampler(
                {c.name: c.process.pid for c in children}, watch, workdir / "samples.jsonl"
            )
            every = max(1.0, config.rounds * config.round_ms / 1000 / config.samples)
            stop = asyncio.Event()
            sampling = asyncio.create_task(sampler.run(every, stop))
            budget = (config.rounds * config.round_ms + config.prove_window_ms) / 1000
            try:
                async with asyncio.timeout(budget + READY_TIMEOUT_S):
                    await coordinator.process.wait()
            except TimeoutError:
                raise TestnetError("the coordinator did not finish its rounds in time") from None
            finally:
                stop.set()
                await sampling
        finally:
            await _stop(children)
        wall = time.monotonic() - started
        restart = await _restart(testnet, plan, url)
    codes = {c.name: c.process.returncode for c in children}
    report = _report(testnet, plan) | {"rejected": watch.rejected}
    return _document(config, sampler.samples, restart, report, codes, wall)


async def _restart(testnet: TestnetConfig, plan: Plan, url: str) -> dict[str, object]:
    """Start the coordinator again on the finished market's ledger; time it to serving.

    Serving is its `coordinator.serving` line: folded, subscribed, verifier up, about to
    take inputs. The parts are the fold (`coordinator.restored`) and its own laps.
    """
    lines: list[dict[str, object]] = []
    args = ["--broker", url, "--key", str(plan.coordinator_key), "--market", str(plan.market_file)]
    args += ["--genesis", str(plan.genesis_file), "--ledger", str(plan.ledger)]
    args += ["--rounds", str(testnet.rounds), "--log-format", "json"]
    began = time.monotonic()
    child = await _spawn(
        "coordinator-restart",
        _command("coordinator", *args),
        plan.workdir,
        "coordinator.serving",
        lines.append,
    )
    ready_s: float | None = None
    ready = asyncio.create_task(child.ready.wait())
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            # Listening, or dead before it got there (its log says why).
            await asyncio.wait(
                {ready, asyncio.create_task(child.process.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if child.ready.is_set():
                ready_s = time.monotonic() - began
            await child.process.wait()
    except TimeoutError:
        pass  # reported below as a restart that did not finish
    finally:
        ready.cancel()
        await _stop([child])
    restored = next((e for e in lines if e.get("event") == "coordinator.restored"), {})
    serving = next((e for e in lines if e.get("event") == "coordinator.serving"), {})
    return {
        "records": restored.get("records"),
        "snapshot": restored.get("snapshot"),
        "replayed": restored.get("replayed"),
        "fold_ms": restored.get("ms"),
        "exec_to_serving_s": None if ready_s is None else round(ready_s, 3),
        "cpu_ms": serving.get("cpu_ms"),
        "startup_ms": serving.get("startup_ms"),
        "exit_code": child.process.returncode,
        "log": None if ready_s is not None else str(child.log_path),
    }


def _report(testnet: TestnetConfig, plan: Plan) -> dict[str, object]:
    report = summary_from_ledger(
        CoordinatorConfig(
            broker="unused",
            params=load_market(plan.market_file),
            genesis=plan.genesis,
            ledger=str(plan.ledger),
            rounds=testnet.rounds,
        ),
        plan.coordinator,
        Identity.load(plan.coordinator_key).sign,
    )
    honest = [p.public for p in plan.provers if p.fault == "none"]
    problems = honest_losses(report, honest)
    settled = [r for r in report["rounds"] if isinstance(r, dict)]  # type: ignore[attr-defined]
    if len(settled) != testnet.rounds:
        problems.insert(0, f"{len(settled)} of {testnet.rounds} rounds settled")
    return {
        "problems": problems,
        "rounds_settled": len(settled),
        "tasks_bid": sum(int(r.get("tasks_bid") or 0) for r in settled),
        "slashed": len(report.get("slashed", [])),  # type: ignore[arg-type]
    }


# -- the document --------------------------------------------------------------------


def fit_start(rounds: int) -> int:
    """The first round the slopes are fitted from: past the parties' longest horizon.

    Settled tasks and batches leave at once, but a task whose settlement is lost stays
    open for RETAIN_ROUNDS rounds, so a market that loses some grows until then; the
    coordinator also warms up over its first few hundred rounds. A run too short to pass
    it is fitted over its second half.
    """
    past = RETAIN_ROUNDS + FIT_MARGIN
    return past if past < rounds - FIT_MARGIN else rounds // 2


def _rates(samples: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per interval between samples: wall ms per round and each process's CPU ms per round."""
    rates = []
    for a, b in itertools.pairwise(samples):
        ra, rb = _num(a["round"]), _num(b["round"])
        if rb <= ra or ra < 0:
            continue
        rounds = rb - ra
        cpu_a, cpu_b = _dict(a["cpu_s"]), _dict(b["cpu_s"])
        cpu = {n: (cpu_b[n] - cpu_a[n]) * 1000 / rounds for n in cpu_b if n in cpu_a}
        wall = (_num(b["t_s"]) - _num(a["t_s"])) * 1000 / rounds
        rate: dict[str, object] = {"round": rb, "wall_ms": wall, "cpu_ms": cpu}
        if "reference_ms" in a and "reference_ms" in b:
            rate["reference_ms"] = (_num(a["reference_ms"]) + _num(b["reference_ms"])) / 2
        rates.append(rate)
    return rates


def _slopes(points: list[dict[str, object]], key: str, fit_from: int) -> dict[str, float]:
    fitted = [s for s in points if _num(s["round"]) >= fit_from]
    names = sorted({n for s in fitted for n in _dict(s[key])})
    return {
        n: round(
            slope_per_1000(
                [(int(_num(s["round"])), _dict(s[key])[n]) for s in fitted if n in _dict(s[key])]
            ),
            3,
        )
        for n in names
    }


def _window_ratio(
    rates: list[dict[str, object]], pick: Callable[[dict[str, object]], float]
) -> dict[str, object]:
    """Median of the first quarter of the intervals after warm-up against the last quarter."""
    values = [pick(r) for r in rates]
    if len(values) < 4:
        return {"first": None, "last": None, "ratio": None}
    width = len(values) // 4
    first = statistics.median(values[:width])
    last = statistics.median(values[-width:])
    return {
        "first": round(first, 3),
        "last": round(last, 3),
        "ratio": round(last / first, 3) if first else None,
    }


def _document(
    config: NetSoakConfig,
    samples: list[dict[str, object]],
    restart: dict[str, object],
    report: dict[str, object],
    codes: dict[str, int | None],
    wall_s: float,
) -> dict[str, object]:
    live = [s for s in samples if _num(s["round"]) >= 0]
    fit_from = fit_start(config.rounds)
    rates = _rates(live)
    fitted_rates = [r for r in rates if _num(r["round"]) >= fit_from]
    rss_slopes = _slopes(live, "rss_mb", fit_from)
    cpu_slopes = _slopes(rates, "cpu_ms", fit_from)
    coordinator_cpu = _window_ratio(
        fitted_rates, lambda r: _dict(r["cpu_ms"]).get("coordinator", 0.0)
    )
    wall = _window_ratio(fitted_rates, lambda r: _num(r["wall_ms"]))
    if fitted_rates and all("reference_ms" in r for r in fitted_rates):
        # Reported beside the ratio, not judged by it: how the machine's speed moved
        # over the same intervals, and the coordinator's CPU per round relative to it.
        machine = _window_ratio(fitted_rates, lambda r: _num(r["reference_ms"]))
        relative = _window_ratio(
            fitted_rates,
            lambda r: (
                _dict(r["cpu_ms"]).get("coordinator", 0.0) / max(_num(r["reference_ms"]), 1e-6)
            ),
        )
        coordinator_cpu = coordinator_cpu | {
            "reference_ratio": machine["ratio"],
            "relative_ratio": relative["ratio"],
        }
    problems = list(_list(report["problems"]))
    crashed = {n: c for n, c in codes.items() if c != 0}
    if crashed:
        problems.append(f"processes exited badly: {crashed}")
    ratio = coordinator_cpu["ratio"]
    verdict = {
        "rss_flat": all(s <= RSS_SLOPE_MB for s in rss_slopes.values()),
        "time_flat": isinstance(ratio, float) and ratio <= TIME_TOLERANCE,
        "honest_ok": not problems,
        "restart_ok": restart["exit_code"] == 0,
    }
    verdict["ok"] = all(verdict.values())
    first, last = (live[0], live[-1]) if live else ({"rss_mb": {}}, {"rss_mb": {}})
    return {
        "benchmark": "soak",
        "mode": "broker",
        "broker": config.broker,
        "rounds": config.rounds,
        "round_ms": config.round_ms,
        "provers": config.provers,
        "users": config.users,
        "wall_s": round(wall_s, 1),
        "fit_from_round": fit_from,
        "rss_mb": {
            "first": first["rss_mb"],
            "last": last["rss_mb"],
            "slope_per_1000": rss_slopes,
        },
        "cpu_ms_per_round": {
            "slope_per_1000": cpu_slopes,
            "coordinator": coordinator_cpu,
        },
        "wall_ms_per_round": wall,
        "restart": restart,
        "market": report,
        "exit_codes": codes,
        "problems": problems,
        "verdict": verdict,
        "samples": samples,
    }


def _num(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def _dict(value: object) -> dict[str, float]:
    assert isinstance(value, dict)
    return value


def _list(value: object) -> list[str]:
    assert isinstance(value, list)
    return value
