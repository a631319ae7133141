"""Sans-IO events and effects shared by every role's pure core.

A core is `handle(event) -> list[effect]`. Events are values that happened (a message
arrived, time passed, work finished); effects are values the adapter must carry out, in
order. Cores never read a clock: time arrives as `now`, in integer milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from protocol.messages import Message


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An opened, signature-checked message from `sender` (hex Ed25519 public key).

    `ref` is the digest of the envelope it came in, used to reference it in receipts and
    rejects; `now` is the adapter's clock when the message was opened.
    """

    sender: str
    message: Message
    ref: bytes
    now: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has reached `now` (ms); deadlines at or before it may fire."""

    now: int


@dataclass(frozen=True, slots=True)
class Resumed:
    """A restarted service is back at `now`; its last record was written at `since`.

    The broker keeps no arrival times, so a coordinator stops the market's clock for the
    outage: every deadline after `since` moves `now - since` later (docs/market.md).
    """

    now: int
    since: int


class Publish(msgspec.Struct, frozen=True):
    """Send `message`: to one party (hex public key), or to everyone when `to` is None.

    A Struct, not a dataclass, because a clearing makes one for each task bid: a frozen
    dataclass takes 1.2 us to build, a Struct a tenth of that.
    """

    message: Message
    to: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """Durably record `event` before any later effect of the same step is carried out."""

    event: MessageReceived | Tick | Resumed


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Deliver a `Tick` no later than `at` (ms)."""

    at: int
