"""Money in and out of the market, as plans: withdrawals and faucet grants.

A withdrawal names the round open for bids (or one still remembered), so a replayed copy of
a paid withdrawal is always recognised; it pays out of a balance or a free deposit, never
out of deposit that capacity keeps locked. A faucet grant is signed by the genesis's faucet
key and named by a nonce: the same grant again credits nothing, another grant under a
taken nonce is refused.
"""

from __future__ import annotations

from typing import Literal

from coordinator.state import Refusal
from protocol.messages import FaucetGrant, Withdrawal
from protocol.rejects import RejectCode


def check_withdrawal(
    msg: Withdrawal, *, bidding: int, seen_rounds: int, free: int, locked: int
) -> None:
    """Raise Refusal unless `msg` may be paid from `free` (with `locked` beside it)."""
    if msg.round > bidding or msg.round <= bidding - seen_rounds:
        raise Refusal(RejectCode.WRONG_ROUND, f"withdrawals name the current round, {bidding}")
    if msg.amount < 1:
        raise Refusal(RejectCode.INVALID_AMOUNT, f"amount {msg.amount} is not positive")
    if free < msg.amount:
        if msg.account == "deposit" and free + locked >= msg.amount:
            raise Refusal(RejectCode.DEPOSIT_LOCKED, f"{free} free, {locked} locked by capacity")
        raise Refusal(RejectCode.INSUFFICIENT_FUNDS, f"{msg.account} {free} < {msg.amount}")


Grant = tuple[str, str, int]
"""A grant as remembered by its nonce: (to, account, amount)."""


def plan_grant(
    msg: FaucetGrant, sender: str, faucet: str | None, taken: Grant | None
) -> Literal["credit", "repeat"]:
    """Whether `msg` credits money or repeats a grant already taken; Refusal otherwise."""
    if faucet is None or sender != faucet:
        raise Refusal(RejectCode.NOT_FAUCET, "only the market's faucet key grants money")
    if taken == (msg.to, msg.account, msg.amount):
        return "repeat"
    if taken is not None:
        raise Refusal(RejectCode.DUPLICATE_GRANT, f"nonce {msg.nonce} names another grant")
    if msg.amount < 1:
        raise Refusal(RejectCode.INVALID_AMOUNT, f"amount {msg.amount} is not positive")
    return "credit"
