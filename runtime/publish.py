"""Publishing that outlasts a broker outage."""

from __future__ import annotations

import asyncio

import structlog

from runtime.bus import Bus, BusAuthError, BusError, PayloadTooLargeError


async def publish_retrying(
    bus: Bus,
    topic: str,
    payload: bytes,
    *,
    stopping: asyncio.Event,
    log: structlog.typing.FilteringBoundLogger,
) -> bool:
    """Publish, retrying through broker outages until acknowledged or told to stop.

    A lost proof submission costs a prover its deposit, so a broker that is away for
    longer than one publish timeout is waited out rather than treated as fatal. Returns
    whether the broker acknowledged the message.
    """
    attempt = 0
    while True:
        try:
            await bus.publish(topic, payload)
            return True
        except PayloadTooLargeError as exc:
            log.error("publish.too_large", topic=topic, error=str(exc))
            return False
        except BusAuthError:
            raise
        except BusError as exc:
            attempt += 1
            log.warning("publish.retrying", topic=topic, attempt=attempt, error=str(exc))
            if stopping.is_set():
                return False
