"""A participant's wallet: ask the coordinator what it holds, withdraw, or grant (faucet).

One request per run, over its own short broker connection: subscribe to the party's
outbox and the market's public channel, learn the round open for bids from the round
announcement (the broker retains it, so it comes at once), send one signed request sealed
to the coordinator, and wait, bounded, for the answer that quotes it: an `account_status`
or `withdrawal_receipt` naming the request's envelope, a `funding_notice` naming the
grant's nonce, or a `reject` naming the envelope.

The wallet logs in with the party's key as username but its own client id, so it never
takes over the session of a prover or user running under the same key, and it
unsubscribes before leaving, so the broker keeps no session queueing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from protocol import topics
from protocol.envelope import envelope_ref
from protocol.identity import Identity
from protocol.messages import (
    AccountStatus,
    FaucetGrant,
    FundingNotice,
    Message,
    Reject,
    RoundAnnouncement,
    StatusQuery,
    Withdrawal,
    WithdrawalReceipt,
)
from protocol.wire import Wire
from runtime.bus import Bus
from runtime.memory_bus import open_bus
from runtime.process import Clock, wall_ms

Answer = AccountStatus | WithdrawalReceipt | FundingNotice | Reject
Request = Callable[[int], Message]
"""Makes the request for the round open for bids."""


class WalletError(Exception):
    """The wallet got no answer: no round announced, or no reply within the bound."""


@dataclass(frozen=True, slots=True)
class WalletConfig:
    """Where the market is and how long to wait for it."""

    broker: str
    coordinator: str
    market: str
    password: str | None = None
    ca_file: str | None = None
    timeout_s: float = 15.0  # bound on each wait: the announcement, then the answer


def status_query(market: str) -> Request:
    return lambda round: StatusQuery(market=market, round=round)


def withdrawal(market: str, account: str, amount: int) -> Request:
    return lambda round: Withdrawal(market=market, round=round, account=account, amount=amount)  # type: ignore[arg-type]


def faucet_grant(market: str, to: str, account: str, amount: int, nonce: int) -> Request:
    return lambda _round: FaucetGrant(
        market=market,
        to=to,
        account=account,  # type: ignore[arg-type]
        amount=amount,
        nonce=nonce,
    )


def answers(message: Message, request: Message, ref: bytes) -> bool:
    """Whether `message` from the coordinator answers `request`, sent as envelope `ref`."""
    if isinstance(message, Reject | AccountStatus | WithdrawalReceipt):
        return message.ref == ref
    if isinstance(message, FundingNotice) and isinstance(request, FaucetGrant):
        return message.nonce == request.nonce
    return False


async def ask(
    identity: Identity, config: WalletConfig, request: Request, *, clock: Clock = wall_ms
) -> Answer:
    """Send one request for the round open for bids and return the coordinator's answer."""
    wire = Wire(identity, coordinator=config.coordinator, market=config.market)
    me = identity.public_hex
    subscriptions = topics.participant_subscriptions(config.market, me)
    async with open_bus(
        config.broker,
        client_id=f"wallet-{me}",
        username=me,
        password=config.password,
        ca_file=config.ca_file,
    ) as bus:
        await bus.subscribe(*subscriptions)
        try:
            return await _exchange(bus, wire, config, request, clock)
        finally:
            with contextlib.suppress(Exception):
                await bus.unsubscribe(*subscriptions)


async def _exchange(
    bus: Bus, wire: Wire, config: WalletConfig, request: Request, clock: Clock
) -> Answer:
    deliveries = bus.messages()
    sent: tuple[Message, bytes] | None = None
    try:
        async with asyncio.timeout(config.timeout_s) as bound:
            async for delivery in deliveries:
                opened = wire.open(delivery.topic, delivery.payload, now=clock())
                message = None if opened is None else opened[1].message
                if sent is None and isinstance(message, RoundAnnouncement):
                    # The newest round heard; a retained one is the round now open.
                    sent = await _send(bus, wire, request(message.round))
                    bound.reschedule(asyncio.get_running_loop().time() + config.timeout_s)
                elif sent is not None and message is not None and answers(message, *sent):
                    assert isinstance(message, Answer)
                    return message
    except TimeoutError:
        waited = "round announcement" if sent is None else "answer"
        raise WalletError(f"no {waited} from the coordinator in {config.timeout_s}s") from None
    raise WalletError("the broker connection closed before an answer came")


async def _send(bus: Bus, wire: Wire, message: Message) -> tuple[Message, bytes]:
    ((topic, payload),) = wire.seal(message, wire.coordinator)
    await bus.publish(topic, payload)
    return message, envelope_ref(payload)


def describe(answer: Answer) -> dict[str, object]:
    """The answer as plain data, for `--json` and for the lines a person reads."""
    import msgspec

    data = msgspec.to_builtins(answer)
    assert isinstance(data, dict)
    if "ref" in data:
        data["ref"] = answer.ref.hex()  # type: ignore[union-attr]
    return data


def status_lines(status: AccountStatus) -> list[str]:
    """A person's view of an account status."""
    epoch = f"epoch {status.epoch}"
    caps = ", ".join(f"epoch {c.epoch}: {c.capacity}" for c in status.capacities) or "none"
    lines = [
        f"market {status.market}, round {status.round} ({epoch})",
        f"balance  {status.balance}",
        f"escrow   {status.escrow}",
        f"deposit  {status.deposit} free, {status.locked} locked (capacity {caps})",
        f"open tasks {status.open_task_count}",
        *(f"  {t.task_id} round {t.round} fee {t.fee} {t.status}" for t in status.open_tasks),
    ]
    if status.open_batches:
        lines.append("open batches in rounds " + ", ".join(map(str, status.open_batches)))
    if status.faucet is not None:
        lines.append(f"faucet {status.faucet}")
    return lines


__all__ = [
    "Answer",
    "WalletConfig",
    "WalletError",
    "ask",
    "describe",
    "faucet_grant",
    "status_lines",
    "status_query",
    "withdrawal",
]
