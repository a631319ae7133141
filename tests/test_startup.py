"""How a coordinator starts and stops: its age is known, its worker spawns early, and a
clean stop leaves nothing to replay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import msgspec
from structlog.testing import capture_logs

from coordinator.service import CoordinatorConfig, run_coordinator
from coordinator.state import OpeningBalances
from coordinator.verifier import InlineVerifier, new_verifier
from deploy.market import DEFAULT_MARKET
from protocol.identity import Identity
from runtime.process import since_exec_ms


def test_a_process_knows_how_long_since_it_was_started() -> None:
    """A new process reads its own age from the kernel: a whole number of ms, never negative."""
    code = "from runtime.process import since_exec_ms; print(since_exec_ms())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = int(out.stdout)
    assert (True, True) == (child >= 0, (since_exec_ms() or 0) >= 0)


def test_a_verifier_spawned_before_the_loop_answers_as_the_inline_one() -> None:
    """Spawned outside any event loop (as the CLI does first thing), the pool then starts
    and checks signatures exactly as the inline verifier does."""
    signer = Identity.from_seed(b"\x42" * 32)
    signed = signer.sign(b"bid") + b"bid"
    items = [(signed, signer.public_key.raw)] * 20 + [
        (b"\x00" * 64 + b"bid", signer.public_key.raw)
    ]
    pool = new_verifier(1)
    pool.spawn()

    async def check() -> tuple[list[bool], list[bool]]:
        await pool.start()
        return await InlineVerifier().verify(items), await pool.verify(items)

    try:
        inline, pooled = asyncio.run(check())
    finally:
        pool.close()
    assert inline == pooled
    assert [True] * 20 + [False] == pooled


async def test_a_clean_stop_leaves_a_snapshot_so_the_next_start_replays_nothing(
    tmp_path: Path,
) -> None:
    """A coordinator that finishes (or is stopped) files a snapshot of every record it
    wrote, though none was due; started again, it loads it and replays no record."""
    params = msgspec.structs.replace(
        DEFAULT_MARKET, market="stop", bid_window_ms=150, prove_window_ms=150
    )
    config = CoordinatorConfig(
        broker="memory://clean-stop",
        params=params,
        genesis=OpeningBalances(),
        ledger=str(tmp_path / "ledger.sqlite"),
        rounds=2,
        start_delay_ms=50,
        snapshot_every=1_000_000,
    )
    identity = Identity.from_seed(b"\x43" * 32)
    async with asyncio.timeout(30):
        first = await run_coordinator(identity, config)
    with capture_logs() as logs:
        async with asyncio.timeout(30):
            again = await run_coordinator(identity, config)
    [restored] = [e for e in logs if e["event"] == "coordinator.restored"]
    assert (restored["records"], 0) == (restored["snapshot"], restored["replayed"])
    assert (True, first.state()) == (restored["records"] > 0, again.state())
