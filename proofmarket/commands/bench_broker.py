"""The broker a benchmark runs on: a URL, or an embedded amqtt broker of its own."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

T = TypeVar("T")

broker_option = click.option(
    "--broker",
    default="embedded",
    show_default=True,
    help="An mqtt:// URL, or 'embedded' for an amqtt broker in a process of its own.",
)


async def on_broker(broker: str, bench: Callable[[str], Awaitable[T]]) -> T:
    """Run `bench(url)` on `broker`, starting (and stopping) the embedded one if asked."""
    if broker != "embedded":
        return await bench(broker)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy.broker", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode().split()
        if len(line) != 2 or line[0] != "ready":
            raise click.ClickException("the embedded broker did not start")
        return await bench(line[1])
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
