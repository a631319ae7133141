"""What every long-running service shares: the market clock, stop signals, logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

Clock = Callable[[], int]
T = TypeVar("T")


def wall_ms() -> int:
    """Wall-clock time in integer milliseconds: deadlines are compared across machines."""
    return time.time_ns() // 1_000_000


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop`, so a service leaves through its normal exit path."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def run_service(main: Coroutine[Any, Any, T]) -> T:
    """Run a service's main coroutine; once it returns, the process is on its way out.

    The loop's SIGINT/SIGTERM handlers go with the loop, so a stop signal arriving
    while the process writes its summary and exits would otherwise kill it and turn a
    clean exit into -15. From here on such a signal is ignored.
    """
    try:
        return asyncio.run(main)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    """structlog to stderr: a readable console, or one JSON object per line."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


PARENT_WATCH_S = 0.5
"""How often a worker process checks that the service that started it is still there."""


def exit_with_parent(parent: int) -> None:
    """In a worker process: exit as soon as `parent` (the service's pid) is gone.

    A service killed outright (SIGKILL, OOM) cannot stop its pool, and a spawned worker
    holds both ends of its own task pipe, so it would wait for work for ever, keeping
    multiprocessing's resource tracker alive beside it. A daemon thread watches instead.
    """
    import os
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_S)  # a watchdog's period, not synchronisation
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
