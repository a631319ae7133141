"""The record log's codec: each recorded event as MessagePack bytes, and back."""

from __future__ import annotations

from typing import TypeAlias

import msgspec

from protocol.events import MessageReceived, Publish, Record, Resumed, Tick, WakeAt
from protocol.messages import Message

CoordinatorEvent: TypeAlias = MessageReceived | Tick | Resumed
CoordinatorEffect: TypeAlias = Publish | Record | WakeAt


class _RecordedMessage(msgspec.Struct, frozen=True, tag="message", array_like=True):
    sender: str
    message: Message
    ref: bytes
    now: int


class _RecordedTick(msgspec.Struct, frozen=True, tag="tick", array_like=True):
    now: int


class _RecordedResume(msgspec.Struct, frozen=True, tag="resumed", array_like=True):
    now: int
    since: int


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(_RecordedMessage | _RecordedTick | _RecordedResume)


def encode_record(event: CoordinatorEvent) -> bytes:
    """A recorded event as MessagePack bytes, for the record log."""
    if isinstance(event, Tick):
        return _record_encoder.encode(_RecordedTick(event.now))
    if isinstance(event, Resumed):
        return _record_encoder.encode(_RecordedResume(event.now, event.since))
    return _record_encoder.encode(
        _RecordedMessage(event.sender, event.message, event.ref, event.now)
    )


def decode_record(data: bytes) -> CoordinatorEvent:
    """The event `encode_record` wrote."""
    record = _record_decoder.decode(data)
    if isinstance(record, _RecordedTick):
        return Tick(record.now)
    if isinstance(record, _RecordedResume):
        return Resumed(record.now, record.since)
    return MessageReceived(record.sender, record.message, record.ref, record.now)
