"""What every long-running service shares: the market clock, stop signals, logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from runtime.orphans import PARENT_WATCH_S as PARENT_WATCH_S
from runtime.orphans import exit_with_parent as exit_with_parent

Clock = Callable[[], int]
T = TypeVar("T")


def wall_ms() -> int:
    """Wall-clock time in integer milliseconds: deadlines are compared across machines."""
    return time.time_ns() // 1_000_000


def since_exec_ms() -> int | None:
    """Milliseconds since this process was started, to the kernel's tick; None off Linux.

    A service's own figure for how long it took to be ready, imports included: the
    kernel's start time of the process (/proc/self/stat, in ticks since boot) against
    the boot clock now.
    """
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime; the split starts at field 3
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return round((boot - ticks / os.sysconf("SC_CLK_TCK")) * 1000)


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
