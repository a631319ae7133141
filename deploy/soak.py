"""The soak benchmark: a long market in one process, its cost per round sampled as it ages.

Every core runs as in `proofmarket sim`; the coordinator's records go to a real record
log (SQLite in a temporary directory by default, one durable write per round, with
snapshots), so the end of the run can time a restart on the whole history. Sampled
every few rounds: the time the round took, the process's resident memory, and how many
entries each party's working state holds. Slopes are fitted (least squares, per 1,000
rounds) over the rounds after the parties' memory horizons have filled (WARMUP_ROUNDS,
or the second half of a shorter run).

After every round the soak also times a fixed piece of work (`reference_cpu`): on a
shared machine the CPU time a round takes follows what else runs beside it (caches,
memory bandwidth, the hypervisor), by 20-30% over a few minutes, and the reference
moves with it. The windows of rounds are also given relative to the reference in the
same rounds (`relative_ratio`); the verdict still reads the raw ratio.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from coordinator.record_log import SNAPSHOT_EVERY, RecordLog, fold, open_record_log
from coordinator.records import CoordinatorEvent, encode_record
from coordinator.report import RoundTally
from coordinator.retention import KEEP_ALL, Retention, archive_dir
from deploy.simulation import SimConfig, Simulation
from deploy.soak_restart import soak_identity, time_restarts, write_run_files
from protocol.workload import prove_batch

WARMUP_ROUNDS: Final = 2200
"""Rounds before the slopes are fitted: twice the longest memory horizon (1,024 rounds),
so every party's windows have filled and the allocator has settled."""
TIME_TOLERANCE: Final = 1.25
"""The last window's median round may take this many times the first's and still be flat."""
RSS_SLOPE_MB: Final = 2.0
"""Most resident-memory growth per 1,000 rounds that still counts as flat."""
_REFERENCE_INPUTS: Final = tuple(bytes([i]) * 32 for i in range(4))


def reference_cpu() -> float:
    """CPU seconds a fixed piece of work takes now (about 1 ms): the machine's speed.

    The same mix as a round, on a small scale: proving (big-integer arithmetic), a table
    built and sorted (allocation, hashing, the interpreter). Nothing is kept.
    """
    # The collector stays out of it: what the market left in the young generation
    # would otherwise be scanned on the reference's time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        started = time.process_time()
        prove_batch(_REFERENCE_INPUTS, difficulty=1, setup=1)
        table = {i: (i, str(i)) for i in range(4000)}
        sorted(table.values(), reverse=True)
        return time.process_time() - started
    finally:
        if collecting:
            gc.enable()


@dataclass(frozen=True, slots=True)
class SoakConfig:
    rounds: int
    provers: int = 8
    users: int = 100
    seed: int = 0
    samples: int = 100  # how many points of the curves are kept
    ledger: str | None = None  # a SQLite file; None: one in a temporary directory
    snapshot_every: int = SNAPSHOT_EVERY
    compare_full_replay: bool = False
    retention: Retention = KEEP_ALL
    exec_restart: bool = True  # also time a `proofmarket coordinator` process restarting
    bytecode_restart: bool = True  # and once more with compiled bytecode (compiles first)


def rss_mb() -> float:
    """This process's resident memory now, in MB (the peak where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def slope_per_1000(points: list[tuple[int, float]]) -> float:
    """The least-squares slope of (round, value) points, per 1,000 rounds (0 if too few)."""
    if len(points) < 2:
        return 0.0
    xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _entries(market: Simulation) -> dict[str, int]:
    return {
        "coordinator": sum(market.coordinator.size().values()),
        "provers": sum(sum(p.size().values()) for p in market.provers.values()),
        "users": sum(sum(u.size().values()) for u in market.users.values()),
    }


def run_soak(config: SoakConfig) -> dict[str, object]:
    """Run the soak and return its JSON document (docs/deploy.md, "proofmarket bench soak")."""
    if config.rounds < 4:
        raise ValueError("a soak needs at least 4 rounds")
    with tempfile.TemporaryDirectory(prefix="proofmarket-soak-") as scratch:
        ledger = config.ledger or str(Path(scratch) / "ledger.sqlite")
        return _soak(config, ledger, Path(scratch))


def _soak(config: SoakConfig, ledger: str, scratch: Path) -> dict[str, object]:
    sim = SimConfig(
        rounds=config.rounds, provers=config.provers, users=config.users, seed=config.seed
    )
    pending: list[bytes] = []

    def record(event: CoordinatorEvent) -> None:
        pending.append(encode_record(event))

    identity = soak_identity(config.seed)
    market = Simulation(
        sim,
        tally=RoundTally(keep_rounds=64),
        on_record=record,
        coordinator_key=identity.public_hex,
    )
    c = market.coordinator
    log = open_record_log(
        ledger,
        key=c.key,
        params=c.params,
        genesis=c.genesis,
        start_ms=c.start_ms,
        snapshot_every=config.snapshot_every,
        retention=config.retention,
    )
    try:
        log.attach(c)
        curves, samples = _drive(market, log, pending, config)
        restart = _restart(log, config, market)
    finally:
        log.close()
    if config.exec_restart:
        genesis = c.genesis
        files = write_run_files(
            scratch, identity, c.params, dict(genesis.balances), dict(genesis.deposits)
        )
        cache = scratch / "pycache" if config.bytecode_restart else None
        restart["process"] = asyncio.run(time_restarts(files, ledger, config.rounds, cache))
    return _document(config, market, curves, samples, restart, ledger)


Curves = tuple[list[float], list[float], list[float]]
"""Per round: CPU time, wall time, and the reference work's CPU time right after it."""


def _drive(
    market: Simulation, log: RecordLog, pending: list[bytes], config: SoakConfig
) -> tuple[Curves, list[dict[str, object]]]:
    """Run round by round, one durable write each; per-round CPU and wall times, samples.

    CPU time is what the verdict reads: on a shared machine the wall clock also counts
    the time other processes had the core. After each round the reference work is timed
    (outside the round's own times).
    """
    every = max(1, config.rounds // config.samples)
    times: list[float] = []
    wall: list[float] = []
    reference: list[float] = []
    samples: list[dict[str, object]] = []
    while not market.done:
        started, cpu = time.perf_counter(), time.process_time()
        market.run_round()
        if pending:
            log.append_many(pending, published=len(log) + len(pending) - 1)
            pending.clear()
        times.append(time.process_time() - cpu)
        wall.append(time.perf_counter() - started)
        reference.append(reference_cpu())
        if len(times) % every == 0 or market.done:
            samples.append(
                {
                    "round": len(times),
                    "cpu_ms": round(times[-1] * 1000, 3),
                    "wall_ms": round(wall[-1] * 1000, 3),
                    "reference_ms": round(reference[-1] * 1000, 4),
                    "rss_mb": round(rss_mb(), 2),
                    "entries": _entries(market),
                }
            )
    return (times, wall, reference), samples


def _restart(log: RecordLog, config: SoakConfig, market: Simulation) -> dict[str, object]:
    """Time a restart on the whole history; check it rebuilds the state the run ended in."""
    folded = fold(log, rounds=config.rounds, keep_tail=False)
    restart: dict[str, object] = {
        "records": len(log),
        "live_records": len(log) - log.first(),
        "snapshot": folded.snapshot,
        "replayed": len(log) - (folded.snapshot or 0),
        "seconds": round(folded.seconds, 4),
        "same_state": folded.core.state() == market.coordinator.state(),
    }
    if config.compare_full_replay:
        full = fold(log, rounds=config.rounds, use_snapshot=False, keep_tail=False)
        restart["full_replay_seconds"] = round(full.seconds, 4)
        restart["full_same_state"] = full.core.state() == folded.core.state()
    return restart


def _windows(
    times: list[float], fit_from: int, reference: list[float] | None = None
) -> dict[str, object]:
    """Median per-round time (CPU or wall) of the first window after warm-up and the last.

    The first window starts after a short warm-up (100 rounds), while the parties'
    memory horizons are still filling; `after_warmup` compares the last window with the
    first one from round `fit_from` on (where the slopes are fitted), when they do not
    overlap: the figure for "as fast at the end as once the market was full". With the
    `reference` work's times, each ratio also comes relative to the reference's ratio
    over the same rounds (`relative_ratio`): above 1, the rounds got dearer than the
    machine got slower.
    """
    n = len(times)
    width = min(1000, max(1, n // 4))
    warmup = min(100, n // 10)
    first_rounds = slice(warmup, warmup + width)
    last_rounds = slice(n - width, n)
    windows: dict[str, object] = {
        "window_rounds": width,
        "warmup_rounds": warmup,
    } | _compare(times, reference, first_rounds, last_rounds)
    windows["mean_ms"] = round(statistics.fmean(times) * 1000, 3)
    start = max(fit_from - 1, 0)  # round `fit_from` is times[fit_from - 1]
    if start + width <= n - width:
        full = _compare(times, reference, slice(start, start + width), last_rounds)
        full.pop("last_ms")
        full.pop("reference_last_ms", None)
        windows["after_warmup"] = {"from_round": start + 1} | full
    return windows


def _compare(
    times: list[float], reference: list[float] | None, first: slice, last: slice
) -> dict[str, object]:
    """Medians of two windows of `times`, their ratio, and the same of the reference."""
    a, b = statistics.median(times[first]), statistics.median(times[last])
    ratio = b / a if a else None
    figures: dict[str, object] = {
        "first_ms": round(a * 1000, 3),
        "last_ms": round(b * 1000, 3),
        "ratio": round(ratio, 3) if ratio is not None else None,
    }
    if reference:
        ra, rb = statistics.median(reference[first]), statistics.median(reference[last])
        machine = rb / ra if ra else None
        figures |= {
            "reference_first_ms": round(ra * 1000, 4),
            "reference_last_ms": round(rb * 1000, 4),
            "reference_ratio": round(machine, 3) if machine is not None else None,
            "relative_ratio": (
                round(ratio / machine, 3) if ratio is not None and machine else None
            ),
        }
    return figures


def _honest(market: Simulation) -> dict[str, object]:
    """The honest-parties standard: nobody slashed, every accepted bid settled, none refused."""
    slashed = sum(p.stats.slashes for p in market.provers.values())
    summary = [u.summary for u in market.users.values()]
    left_open = sum(u.open_tasks for u in market.users.values())
    refused = sum(s.bids_rejected for s in summary)
    report = market.finish().report
    return {
        "invariants_ok": report["invariants_ok"],
        "honest_provers_slashed": slashed,
        "tasks_left_open": left_open,
        "task_bids_refused": refused,
        "ok": bool(report["invariants_ok"]) and slashed == left_open == refused == 0,
    }


def _archive_bytes(ledger: str) -> int:
    directory = archive_dir(ledger)
    return sum(p.stat().st_size for p in directory.glob("*")) if directory.exists() else 0


def _store_bytes(ledger: str) -> int:
    return sum(os.path.getsize(path) for path in (ledger, f"{ledger}-wal") if os.path.exists(path))


def _document(
    config: SoakConfig,
    market: Simulation,
    curves: Curves,
    samples: list[dict[str, object]],
    restart: dict[str, object],
    ledger: str,
) -> dict[str, object]:
    times, wall, reference = curves
    fit_from = min(WARMUP_ROUNDS, len(times) // 2)
    fitted = [s for s in samples if _int(s["round"]) >= fit_from]
    per_round = _windows(times, fit_from, reference)
    rss_slope = slope_per_1000([(_int(s["round"]), _float(s["rss_mb"])) for s in fitted])
    parties = ("coordinator", "provers", "users")
    entry_slopes = {
        party: round(slope_per_1000([(_int(s["round"]), _entry(s, party)) for s in fitted]), 3)
        for party in parties
    }
    # Entries swing with the phase of the round a sample lands in; flat means growing by
    # less than 1% of what is held per 1,000 rounds.
    entry_means = {p: statistics.fmean(_entry(s, p) for s in fitted or samples) for p in parties}
    honest = _honest(market)
    store = _store_bytes(ledger)
    ratio = per_round["ratio"]
    verdict = {
        "time_flat": isinstance(ratio, float) and ratio <= TIME_TOLERANCE,
        "rss_flat": rss_slope <= RSS_SLOPE_MB,
        "entries_flat": all(entry_slopes[p] <= 1 + 0.01 * entry_means[p] for p in parties),
        "honest_ok": honest["ok"],
        "restart_ok": restart["same_state"] and _process_ok(restart),
    }
    verdict["ok"] = all(verdict.values())
    return {
        "benchmark": "soak",
        "mode": "memory",
        "rounds": config.rounds,
        "provers": config.provers,
        "users": config.users,
        "seed": config.seed,
        "fit_from_round": fit_from,
        "per_round": per_round
        | {"slope_ms_per_1000": round(slope_per_1000(_ms_points(times, fit_from)), 4)},
        "per_round_wall": _windows(wall, fit_from)
        | {"slope_ms_per_1000": round(slope_per_1000(_ms_points(wall, fit_from)), 4)},
        "rss_mb": {
            "first": samples[0]["rss_mb"],
            "last": samples[-1]["rss_mb"],
            "slope_per_1000": round(rss_slope, 3),
        },
        "entries": {"last": samples[-1]["entries"], "slope_per_1000": entry_slopes},
        "restart": restart,
        "store": {
            "records": restart["records"],
            "live_records": restart["live_records"],
            "bytes": store,
            "bytes_per_round": round(store / max(1, len(times))),
            "archive_bytes": _archive_bytes(ledger),
            "retention": config.retention.mode,
            "audit_rounds": config.retention.audit_rounds,
        },
        "honest": honest,
        "verdict": verdict,
        "samples": samples,
    }


def _process_ok(restart: dict[str, object]) -> bool:
    """The coordinator process restarted on the ledger and exited 0 (when it was run)."""
    process = restart.get("process")
    return not isinstance(process, dict) or process.get("exit_code") == 0


def _ms_points(times: list[float], fit_from: int) -> list[tuple[int, float]]:
    return [(i + 1, t * 1000) for i, t in enumerate(times) if i + 1 >= fit_from]


def _entry(sample: dict[str, object], party: str) -> float:
    entries = sample["entries"]
    assert isinstance(entries, dict)
    return float(entries[party])


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _float(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)
