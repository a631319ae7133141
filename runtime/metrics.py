"""Prometheus metrics and a health endpoint, served from a service's own event loop.

`MetricsServer` answers two paths over HTTP/1.1 (one request per connection):

- `GET /metrics`: the service's registry in Prometheus' text format;
- `GET /health`: 200 and `{"ok": true, "checks": {...}}` while every check passes, 503
  and the failing checks' reasons otherwise.

It runs in the service's event loop, not in a thread, so every figure is read between
two of the loop's steps (no torn reads of the service's state) and a loop stalled for
seconds shows as a slow scrape rather than a healthy one. Each service gets a registry
of its own, so two services in one test process never share a counter.

The checks here are the ones every service shares: the bus is connected with every
subscription granted (the bus sets `connected` only once it has resubscribed), and a
ledger file is still there to write to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

if TYPE_CHECKING:  # the client is imported when metrics are served: a start without is quicker
    from prometheus_client import CollectorRegistry

Check = Callable[[], str | None]
"""A health check: None while fine, else why not."""

REQUEST_TIMEOUT_S: Final = 5.0
"""A client that has not sent its request head by then is dropped."""
MAX_REQUEST_HEAD: Final = 8192


class MetricsAddressError(ValueError):
    """A --metrics value that is not HOST:PORT."""


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[v6]:PORT` too; port 0 picks a free one) as a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsAddressError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


class _Connected(Protocol):
    @property
    def connected(self) -> bool: ...


def bus_check(bus: _Connected, subscribed: Callable[[], bool]) -> Check:
    """Fails while the broker connection is down or the service has not subscribed yet."""

    def check() -> str | None:
        if not subscribed():
            return "not subscribed yet"
        if not bus.connected:
            return "broker connection down (every subscription is renewed on reconnect)"
        return None

    return check


def ledger_check(path: str) -> Check:
    """Fails once the ledger file at `path` cannot take another write.

    That is: the file is gone or replaced (writes would go to a file nobody will read
    again), its directory or file is not writable to this process (SQLite writes its
    write-ahead log beside it), its file system is mounted read-only, or it is full.
    """
    target = Path(path)
    try:
        inode = target.stat().st_ino
    except OSError:
        inode = None

    def check() -> str | None:
        try:
            now = target.stat().st_ino
        except OSError as exc:
            return f"ledger {path} is gone: {exc.strerror}"
        if inode is not None and now != inode:
            return f"ledger {path} was replaced by another file"
        for where in (target, target.parent):
            if not os.access(where, os.W_OK):
                return f"{where} is not writable"
        fs = os.statvfs(target.parent)
        if fs.f_flag & os.ST_RDONLY:
            return f"{target.parent} is on a read-only file system"
        if fs.f_bavail == 0:
            return f"{target.parent} has no free space"
        return None

    return check


class MetricsServer:
    """Serves `registry` at /metrics and `checks` at /health on `host:port`."""

    def __init__(
        self, registry: CollectorRegistry, checks: Mapping[str, Check], host: str, port: int
    ) -> None:
        self.registry = registry
        self.checks = dict(checks)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_REQUEST_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]  # the real one, for port 0

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def health(self) -> tuple[bool, dict[str, str]]:
        """Whether every check passes, and each check's state ("ok" or its reason)."""
        states = {name: check() or "ok" for name, check in self.checks.items()}
        return all(state == "ok" for state in states.values()), states

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
            status, content_type, body = self._answer(method, path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
            pass  # a client that went away or spoke no HTTP gets nothing more
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/health":
            ok, states = self.health()
            body = json.dumps({"ok": ok, "checks": states}).encode() + b"\n"
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        return "404 Not Found", "text/plain", b"/metrics or /health\n"


@contextlib.asynccontextmanager
async def serving(
    listen: str | None,
    registry: CollectorRegistry | None,
    checks: Mapping[str, Check],
    log: Any,
) -> AsyncIterator[None]:
    """Serve `registry` and `checks` on `listen` (HOST:PORT) for the block, if both given."""
    if listen is None or registry is None:
        yield
        return
    host, port = parse_listen(listen)
    async with MetricsServer(registry, checks, host, port) as server:
        log.info("metrics.serving", url=f"http://{host}:{server.port}/metrics")
        yield


def _request_line(head: bytes) -> tuple[str, str]:
    """Method and path (query dropped) of an HTTP request head; ValueError if malformed."""
    words = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request line")
    return words[0], words[1].split("?", 1)[0]
