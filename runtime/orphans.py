"""A worker process that leaves with the service that started it.

Kept apart from runtime.process (logging, signals, the event loop) so that a worker
process imports only this to watch its parent, and starts quickly.
"""

from __future__ import annotations

import os
import threading
import time

PARENT_WATCH_S = 0.5
"""How often a worker process checks that the service that started it is still there."""


def exit_with_parent(parent: int) -> None:
    """In a worker process: exit as soon as `parent` (the service's pid) is gone.

    A service killed outright (SIGKILL, OOM) cannot stop its pool, and a spawned worker
    holds both ends of its own task pipe, so it would wait for work for ever, keeping
    multiprocessing's resource tracker alive beside it. A daemon thread watches instead.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_S)  # a watchdog's period, not synchronisation
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
