"""The market's accounts: double-entry, integer, transfers that sum to zero.

Every unit of money sits in exactly one account. Money enters the market only by an
explicit funding entry (genesis, or a faucet) that moves it out of the `external`
account, and leaves only by a pay-out (a withdrawal) back into it. `external` is the one
account allowed below zero: its negated balance is funded minus withdrawn, so
`total() == funded() - withdrawn()` at all times, and the sum of every account including
`external` is always zero.

A transfer that would leave any other account negative raises `InsufficientFunds` and
changes nothing. `Accounts` is pure: no IO, no clock. (The durable "ledger" is the record
log, coordinator/record_log.py; these are the balances it folds into.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple


class AccountKind(StrEnum):
    """What an account holds; the owner says whose it is."""

    BALANCE = "balance"  # a party's spendable money (users pay from it, provers are paid into it)
    ESCROW = "escrow"  # a user's fees held for its open task bids
    DEPOSIT = "deposit"  # a prover's free (unlocked, withdrawable) deposit
    LOCKED = "locked"  # a prover's deposit locked behind its declared capacity
    TREASURY = "treasury"  # the market's surplus
    SLASHED = "slashed"  # forfeited deposits left after refunding affected users
    EXTERNAL = "external"  # where funding comes from and withdrawals go


class Account(NamedTuple):
    kind: AccountKind
    owner: str = ""


TREASURY = Account(AccountKind.TREASURY)
SLASHED = Account(AccountKind.SLASHED)
EXTERNAL = Account(AccountKind.EXTERNAL)


def balance_of(owner: str) -> Account:
    return Account(AccountKind.BALANCE, owner)


def escrow_of(owner: str) -> Account:
    return Account(AccountKind.ESCROW, owner)


def deposit_of(owner: str) -> Account:
    return Account(AccountKind.DEPOSIT, owner)


def locked_of(owner: str) -> Account:
    return Account(AccountKind.LOCKED, owner)


class AccountsError(ValueError):
    """A posting the ledger refuses; the ledger is unchanged."""


class InvalidAmount(AccountsError):
    """An amount that is not a positive integer (or a non-integer posting)."""


class UnbalancedTransfer(AccountsError):
    """Postings that do not sum to zero, or that touch `external` outside funding."""


class InsufficientFunds(AccountsError):
    """The transfer would take `account` below zero."""

    def __init__(self, account: Account, needed: int, available: int) -> None:
        super().__init__(f"{account.kind}:{account.owner or '-'} holds {available}, needs {needed}")
        self.account = account
        self.needed = needed
        self.available = available


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidAmount(f"amount must be a positive int, got {amount!r}")


class Accounts:
    """Integer balances per account; every change is a zero-sum set of postings."""

    __slots__ = ("_balances", "_funded", "_withdrawn")

    def __init__(self) -> None:
        self._balances: dict[Account, int] = {}
        self._funded = 0
        self._withdrawn = 0

    def balance(self, account: Account) -> int:
        return self._balances.get(account, 0)

    def accounts(self) -> Iterator[tuple[Account, int]]:
        """Every account with a non-zero balance."""
        return ((a, b) for a, b in self._balances.items() if b != 0)

    def funded(self) -> int:
        """All money ever brought into the market (genesis and faucet entries)."""
        return self._funded

    def withdrawn(self) -> int:
        """All money ever paid out of the market."""
        return self._withdrawn

    def total(self) -> int:
        """Sum of every account inside the market."""
        return sum(b for a, b in self._balances.items() if a.kind is not AccountKind.EXTERNAL)

    def conserved(self) -> bool:
        net = self._funded - self._withdrawn
        return self.total() == net == -self.balance(EXTERNAL)

    def fund(self, account: Account, amount: int) -> None:
        """Bring `amount` new money into `account` (genesis or a faucet entry)."""
        _check_amount(amount)
        if account.kind is AccountKind.EXTERNAL:
            raise UnbalancedTransfer("cannot fund the external account itself")
        if account.kind not in (AccountKind.BALANCE, AccountKind.DEPOSIT):
            raise UnbalancedTransfer(f"funding goes to a balance or a free deposit, not {account}")
        self._apply(((EXTERNAL, -amount), (account, amount)))
        self._funded += amount

    def withdraw(self, owner: str, amount: int) -> None:
        """Pay `amount` of a prover's free deposit out of the market."""
        self.pay_out(deposit_of(owner), amount)

    def pay_out(self, account: Account, amount: int) -> None:
        """Pay `amount` out of the market from a balance or a free deposit (never locked)."""
        _check_amount(amount)
        if account.kind not in (AccountKind.BALANCE, AccountKind.DEPOSIT):
            raise UnbalancedTransfer(f"only balances and free deposits are paid out, not {account}")
        self._apply(((account, -amount), (EXTERNAL, amount)))
        self._withdrawn += amount

    def move(self, source: Account, target: Account, amount: int) -> None:
        """Move `amount` (> 0) from one market account to another."""
        _check_amount(amount)
        self.transfer(((source, -amount), (target, amount)))

    def transfer(self, postings: Sequence[tuple[Account, int]]) -> None:
        """Apply zero-sum postings atomically between market accounts."""
        for account, amount in postings:
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise InvalidAmount(f"posting amount must be an int, got {amount!r}")
            if account.kind is AccountKind.EXTERNAL:
                raise UnbalancedTransfer("only fund() and withdraw() touch the external account")
        if sum(amount for _, amount in postings) != 0:
            raise UnbalancedTransfer(f"postings sum to {sum(a for _, a in postings)}, not 0")
        self._apply(postings)

    def _apply(self, postings: Sequence[tuple[Account, int]]) -> None:
        # Net per account first so that a chain through one account is judged as a whole,
        # then check everything before changing anything.
        net: dict[Account, int] = {}
        for account, amount in postings:
            net[account] = net.get(account, 0) + amount
        for account, delta in net.items():
            after = self._balances.get(account, 0) + delta
            if after < 0 and account.kind is not AccountKind.EXTERNAL:
                raise InsufficientFunds(account, -delta, self._balances.get(account, 0))
        for account, delta in net.items():
            if delta:
                after = self._balances.get(account, 0) + delta
                if after:
                    self._balances[account] = after
                else:
                    # Emptied accounts go, so the ledger grows with holders, not history.
                    del self._balances[account]

    def snapshot(self) -> Mapping[Account, int]:
        """A copy of every non-zero balance, for comparing ledgers."""
        return {a: b for a, b in self._balances.items() if b != 0}


def dump_accounts(ledger: Accounts) -> tuple[list[tuple[str, str, int]], int, int]:
    """Every non-zero balance as (kind, owner, amount), then funded and withdrawn."""
    balances = [(a.kind.value, a.owner, b) for a, b in ledger.accounts()]
    return balances, ledger.funded(), ledger.withdrawn()


def load_accounts(
    balances: Sequence[tuple[str, str, int]], funded: int, withdrawn: int
) -> Accounts:
    """The ledger `dump_accounts` wrote; refuses one that is negative or not conserved."""
    ledger = Accounts()
    for kind, owner, amount in balances:
        account = Account(AccountKind(kind), owner)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
            raise AccountsError(f"balance of {account} is {amount!r}")
        if amount < 0 and account.kind is not AccountKind.EXTERNAL:
            raise AccountsError(f"negative balance {account}: {amount}")
        if account in ledger._balances:
            raise AccountsError(f"account {account} appears twice")
        ledger._balances[account] = amount
    ledger._funded, ledger._withdrawn = funded, withdrawn
    if not ledger.conserved():
        raise AccountsError("the balances do not add up to funded minus withdrawn")
    return ledger
