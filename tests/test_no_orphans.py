"""A service killed outright leaves no process behind: its workers follow it out.

The coordinator's signature workers and the prover's proving workers are spawned
processes; a SIGKILL to the service alone (not its process group) used to leave them,
and multiprocessing's resource tracker beside them, running for ever.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from prover_node.proving import warm_up
from prover_node.service import _stop_pool

WAIT = 30.0
SERVICE = """
import asyncio, sys
from coordinator.verifier import open_verifier
from concurrent.futures import ProcessPoolExecutor
import multiprocessing, os
from runtime.process import exit_with_parent
from prover_node.proving import warm_up

async def main():
    verifier = await open_verifier(1)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))
    await asyncio.get_running_loop().run_in_executor(pool, warm_up)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def children_of(parent: int) -> list[int]:
    """Every live process whose parent is `parent` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a live process (an exited one waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def gone(pid: int) -> None:
    """Return once process `pid` has exited (a pidfd becomes readable then)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    exited = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, exited.set)
    try:
        await exited.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds")
async def test_workers_exit_when_their_service_is_killed() -> None:
    """SIGKILL the service process alone: its verify and proving workers exit on their own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVICE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(WAIT):
            assert b"ready\n" == await process.stdout.readline()
        workers = children_of(process.pid)
        assert len(workers) >= 2  # a verify worker, a proving worker (and a resource tracker)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(gone(pid) for pid in workers))
    assert [] == [pid for pid in workers if running(pid)]


def _set_and_sleep(started: Any, seconds: float) -> None:
    started.set()
    time.sleep(seconds)


def test_stopped_proving_pool_has_no_thread_left_for_the_exit_hook() -> None:
    """_stop_pool, mid-batch, terminates the worker and returns with the manager thread ended.

    Python 3.11's exit hook wakes a pool's manager thread without its lock; a thread
    still closing its pipe then made a prover told to stop print an EBADF traceback.
    """
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(warm_up).result(timeout=WAIT)
    with multiprocessing.get_context("spawn").Manager() as sync:
        started = sync.Event()
        pool.submit(_set_and_sleep, started, WAIT)  # a batch still proving as the node stops
        assert started.wait(timeout=WAIT)
    manager = getattr(pool, "_executor_manager_thread", None)
    assert isinstance(manager, threading.Thread)
    _stop_pool(pool)
    assert not manager.is_alive()
