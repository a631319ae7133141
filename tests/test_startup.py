"""How a coordinator starts: its time since exec is known, and its worker spawns early."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from coordinator.verifier import InlineVerifier, new_verifier
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
