"""Money in and out of the market, as plans: withdrawals and faucet grants.

A withdrawal names the round open for bids (or one still remembered), so a replayed copy of
a paid withdrawal is always recognised; it pays out of a balance or a free deposit, never
out of deposit that capacity keeps locked. A faucet grant is signed by the genesis's faucet
key and named by a nonce: the same grant again credits nothing, another grant under a
taken nonce is refused.
"""

from __future__ import annotations

from typing import Literal

from coordinator.accounts import Account, Accounts, balance_of, deposit_of
from coordinator.state import OpeningBalances, Refusal
from protocol.messages import FaucetGrant, FundsAccount, Withdrawal
from protocol.rejects import RejectCode


def opening_accounts(genesis: OpeningBalances) -> Accounts:
    """The ledger a market starts from: the genesis's balances and free deposits."""
    accounts = Accounts()
    for owner, amount in sorted(genesis.balances.items()):
        if amount:
            accounts.fund(balance_of(owner), amount)
    for owner, amount in sorted(genesis.deposits.items()):
        if amount:
            accounts.fund(deposit_of(owner), amount)
    return accounts


def funds_account(owner: str, which: FundsAccount) -> Account:
    """The account of `owner`'s that a withdrawal or a grant names."""
    return balance_of(owner) if which == "balance" else deposit_of(owner)


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
