"""Where the coordinator checks signatures: in its event loop, or in worker processes.

Ed25519 verification is the largest single cost of taking in a bid (about 65 µs of
CPU each), and it needs nothing from the coordinator's state. So a batch's signatures
can be checked in another process, on another core, while the event loop goes on
reading the broker. Processes, not threads: PyNaCl gives back the GIL only inside the
C call, so a verifying thread and the event loop take turns instead of overlapping.

Both verifiers answer the same question, ``signatures_valid(items)``, so what the
coordinator decides never depends on which one it runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
from collections.abc import Sequence
from typing import Protocol

from coordinator.verify_worker import worker_setup
from protocol.envelope import signatures_valid

MIN_OFFLOAD = 16
"""Smaller batches are checked in the loop: the trip to a worker costs about as much."""


class SignatureVerifier(Protocol):
    """Checks ``(signed_message, sender key)`` pairs; answers in order."""

    async def verify(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]: ...

    def close(self) -> None: ...


class InlineVerifier:
    """Checks signatures in the calling event loop."""

    workers = 0

    async def verify(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        return signatures_valid(items)

    def spawn(self) -> None:
        """Nothing to spawn: signatures are checked in the loop."""

    async def start(self) -> None:
        """Nothing to start: signatures are checked in the loop."""

    def close(self) -> None:
        pass


class PoolVerifier:
    """Checks signatures in ``workers`` spawned processes, a batch split among them."""

    def __init__(self, workers: int, *, min_offload: int = MIN_OFFLOAD) -> None:
        if workers < 1:
            raise ValueError("a pool verifier needs at least one worker")
        self.workers = workers
        self.min_offload = min_offload
        # spawn, not fork: the coordinator has threads (the broker client's), and a
        # forked child could inherit one of their locks held
        self._pool = concurrent.futures.ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker_setup,
            initargs=(os.getpid(),),
        )
        self._warming: list[concurrent.futures.Future[list[bool]]] = []

    def spawn(self) -> None:
        """Start every worker process now, without waiting for it to be ready.

        A coordinator calls this first thing, so the workers' start overlaps its own
        imports and the fold of its record log; `start` then waits for them.
        """
        if not self._warming:
            self._warming = [self._pool.submit(signatures_valid, ()) for _ in range(self.workers)]

    async def start(self) -> None:
        """Wait until every worker is up, so the first busy batch does not wait for a spawn."""
        self.spawn()
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self._warming))

    async def verify(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        if len(items) < self.min_offload:
            return signatures_valid(items)
        loop = asyncio.get_running_loop()
        size = -(-len(items) // self.workers)
        chunks = [list(items[at : at + size]) for at in range(0, len(items), size)]
        answers = await asyncio.gather(
            *(loop.run_in_executor(self._pool, signatures_valid, chunk) for chunk in chunks)
        )
        return [valid for answer in answers for valid in answer]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """One worker when this process may run on a second core, else none."""
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return 1 if cores > 1 else 0


def new_verifier(workers: int) -> InlineVerifier | PoolVerifier:
    """A verifier not started yet: inline for 0 workers, else a pool of that many."""
    return InlineVerifier() if workers == 0 else PoolVerifier(workers)


async def open_verifier(workers: int) -> SignatureVerifier:
    """A started verifier: inline for 0 workers, else a pool of that many."""
    verifier = new_verifier(workers)
    try:
        await verifier.start()
    except BaseException:
        verifier.close()
        raise
    return verifier
