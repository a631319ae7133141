"""What a signature-checking worker process runs first: kept small, so it starts fast.

A spawned worker imports the module of its initializer; this one needs nothing of the
coordinator (no event loop, no logging), so a restarting coordinator's worker is ready
while the coordinator still folds its record log.
"""

from __future__ import annotations

import signal

from runtime.orphans import exit_with_parent


def worker_setup(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the coordinator decides when its workers
    # stop (it shuts the pool down on its way out), so they ignore it. A coordinator that
    # was killed cannot, so they also leave when it is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)
