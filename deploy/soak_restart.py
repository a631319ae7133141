"""The soak's restart as an operator sees it: a new `proofmarket coordinator` process.

The in-memory soak's coordinator has a real key; at the end of the run the launcher
writes what the command needs beside the ledger (key, market and genesis files) and
starts it on the finished market's ledger, on an in-memory broker (`memory://`, so no
broker is needed). Its restart time is from exec to its `coordinator.serving` line:
imports, key and files read, verifier started, broker connected, record log folded,
subscribed, and the intake about to run. The lines on the way give the parts: when
each arrived (the launcher's clock) and the figures the coordinator logs itself (the
fold's time, and its own time since exec and CPU).

It is timed twice: as this environment runs Python, and with the bytecode compiled, as
a pip-installed coordinator has it (a machine that sets PYTHONDONTWRITEBYTECODE, as
the development machine does, compiles every proofmarket module at every start).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Final

from deploy.genesis import MarketGenesis, dump_genesis
from deploy.market import dump_market
from protocol.identity import Identity
from protocol.messages import MarketParams

READY_TIMEOUT_S: Final = 120.0
"""Longest a restart may take before it counts as failed."""
MILESTONES: Final = ("coordinator.restored", "coordinator.started", "coordinator.serving")


def soak_identity(seed: int) -> Identity:
    """The soak coordinator's key: the same for the same seed, so runs compare."""
    return Identity.from_seed(hashlib.sha256(f"proofmarket-soak/{seed}".encode()).digest())


def write_run_files(
    workdir: Path,
    identity: Identity,
    params: MarketParams,
    balances: dict[str, int],
    deposits: dict[str, int],
) -> tuple[Path, Path, Path]:
    """Key, market and genesis files for a coordinator process: their paths."""
    key, market, genesis = (workdir / n for n in ("coordinator.key", "market.toml", "genesis.json"))
    identity.save(key, overwrite=True)
    market.write_text(dump_market(params))
    funded = MarketGenesis(
        market=params.market, coordinator=identity.public_hex, provers=deposits, users=balances
    )
    genesis.write_text(dump_genesis(funded))
    return key, market, genesis


async def time_restarts(
    files: tuple[Path, Path, Path], ledger: str, rounds: int, cache: Path | None
) -> dict[str, object]:
    """The restart as this environment runs it; with a `cache` directory, also with
    bytecode compiled into it (`bytecode`)."""
    plain = await time_restart(files, ledger, rounds)
    if cache is None:
        return plain
    cached = dict(os.environ, PYTHONPYCACHEPREFIX=str(cache))
    cached.pop("PYTHONDONTWRITEBYTECODE", None)
    await time_restart(files, ledger, rounds, env=cached)  # compiles; not timed
    return plain | {"bytecode": await time_restart(files, ledger, rounds, env=cached)}


async def time_restart(
    files: tuple[Path, Path, Path],
    ledger: str,
    rounds: int,
    env: dict[str, str] | None = None,
) -> dict[str, object]:
    """Start `proofmarket coordinator` on `ledger`; time it from exec to taking inputs."""
    key, market, genesis = files
    args = ["coordinator", "--broker", "memory://soak-restart", "--key", str(key)]
    args += ["--market", str(market), "--genesis", str(genesis), "--ledger", ledger]
    args += ["--rounds", str(rounds), "--log-format", "json"]
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proofmarket",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    seen: dict[str, tuple[float, dict[str, object]]] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await _follow(process, began, seen)
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
    return _restart_figures(seen, process.returncode)


async def _follow(
    process: asyncio.subprocess.Process,
    began: float,
    seen: dict[str, tuple[float, dict[str, object]]],
) -> None:
    """Read the process's JSON log to its end, stamping each milestone as it arrives."""
    assert process.stderr is not None
    async for line in process.stderr:
        at = time.monotonic() - began
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event = entry.get("event") if isinstance(entry, dict) else None
        if event in MILESTONES and event not in seen:
            seen[event] = (at, entry)


def _restart_figures(
    seen: dict[str, tuple[float, dict[str, object]]], exit_code: int | None
) -> dict[str, object]:
    def at(event: str) -> float | None:
        return round(seen[event][0], 3) if event in seen else None

    restored = seen.get("coordinator.restored", (0.0, {}))[1]
    serving = seen.get("coordinator.serving", (0.0, {}))[1]
    return {
        "exec_to_serving_s": at("coordinator.serving"),
        "exec_to_restored_s": at("coordinator.restored"),
        "exec_to_started_s": at("coordinator.started"),
        "fold_ms": restored.get("ms"),
        "replayed": restored.get("replayed"),
        "since_exec_ms": serving.get("since_exec_ms"),
        "cpu_ms": serving.get("cpu_ms"),
        "startup_ms": serving.get("startup_ms"),
        "exit_code": exit_code,
    }
