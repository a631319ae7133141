"""The double-entry ledger: zero-sum postings, explicit funding, no negative balances."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.accounts import (
    EXTERNAL,
    TREASURY,
    Accounts,
    InsufficientFunds,
    InvalidAmount,
    UnbalancedTransfer,
    balance_of,
    deposit_of,
    escrow_of,
    locked_of,
)


def test_funding_is_the_only_way_money_enters() -> None:
    """Funding raises total and funded together; the external account mirrors it."""
    ledger = Accounts()
    ledger.fund(balance_of("u"), 100)
    ledger.fund(deposit_of("p"), 50)
    assert 150 == ledger.total()
    assert 150 == ledger.funded()
    assert -150 == ledger.balance(EXTERNAL)
    assert ledger.conserved()


def test_move_keeps_total() -> None:
    """A move between market accounts changes balances but not the total."""
    ledger = Accounts()
    ledger.fund(balance_of("u"), 100)
    ledger.move(balance_of("u"), escrow_of("u"), 30)
    assert (70, 30, 100) == (
        ledger.balance(balance_of("u")),
        ledger.balance(escrow_of("u")),
        ledger.total(),
    )


def test_overdraw_raises_and_changes_nothing() -> None:
    """A transfer that would go negative raises InsufficientFunds and leaves balances alone."""
    ledger = Accounts()
    ledger.fund(balance_of("u"), 10)
    before = dict(ledger.snapshot())
    with pytest.raises(InsufficientFunds) as info:
        ledger.transfer(((balance_of("u"), -11), (TREASURY, 11)))
    assert (11, 10) == (info.value.needed, info.value.available)
    assert before == dict(ledger.snapshot())


def test_unbalanced_postings_refused() -> None:
    """Postings that do not sum to zero are refused."""
    ledger = Accounts()
    ledger.fund(balance_of("u"), 10)
    with pytest.raises(UnbalancedTransfer):
        ledger.transfer(((balance_of("u"), -5), (TREASURY, 4)))
    assert 10 == ledger.balance(balance_of("u"))


def test_external_only_through_fund_and_withdraw() -> None:
    """A plain transfer may not create money by drawing on the external account."""
    ledger = Accounts()
    with pytest.raises(UnbalancedTransfer):
        ledger.transfer(((EXTERNAL, -5), (TREASURY, 5)))
    assert 0 == ledger.total()


@pytest.mark.parametrize("amount", [0, -1, True, 1.5])
def test_amounts_must_be_positive_ints(amount: object) -> None:
    """Zero, negative, bool and float amounts are refused."""
    ledger = Accounts()
    with pytest.raises(InvalidAmount):
        ledger.fund(balance_of("u"), amount)  # type: ignore[arg-type]
    assert 0 == ledger.funded()


def test_free_deposit_withdrawable_locked_not() -> None:
    """A prover withdraws its free deposit; locked deposit cannot be withdrawn."""
    ledger = Accounts()
    ledger.fund(deposit_of("p"), 100)
    ledger.move(deposit_of("p"), locked_of("p"), 60)
    with pytest.raises(InsufficientFunds):
        ledger.withdraw("p", 41)
    ledger.withdraw("p", 40)
    assert (0, 60, 60, 100, 40) == (
        ledger.balance(deposit_of("p")),
        ledger.balance(locked_of("p")),
        ledger.total(),
        ledger.funded(),
        ledger.withdrawn(),
    )
    assert ledger.conserved()


def test_balance_paid_out_escrow_and_locked_not() -> None:
    """A balance can be paid out; escrow and locked deposit never leave the market directly."""
    ledger = Accounts()
    ledger.fund(balance_of("u"), 50)
    ledger.move(balance_of("u"), escrow_of("u"), 20)
    ledger.pay_out(balance_of("u"), 30)
    for account in (escrow_of("u"), locked_of("u"), TREASURY):
        with pytest.raises(UnbalancedTransfer):
            ledger.pay_out(account, 1)
    with pytest.raises(InsufficientFunds):
        ledger.pay_out(balance_of("u"), 1)
    assert (0, 20, 50, 30, True) == (
        ledger.balance(balance_of("u")),
        ledger.balance(escrow_of("u")),
        ledger.funded(),
        ledger.withdrawn(),
        ledger.conserved(),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(-5, 60))))
def test_random_moves_conserve_and_never_go_negative(moves: list[tuple[int, int, int]]) -> None:
    """Any sequence of moves, accepted or refused, keeps total == funded and balances >= 0."""
    ledger = Accounts()
    accounts = [balance_of("a"), balance_of("b"), escrow_of("a"), TREASURY]
    ledger.fund(accounts[0], 100)
    for src, dst, amount in moves:
        with contextlib.suppress(InsufficientFunds, InvalidAmount):
            ledger.move(accounts[src], accounts[dst], amount)
        assert ledger.conserved()
        assert all(ledger.balance(a) >= 0 for a in accounts)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["fund", "move", "pay_out"]),
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(-5, 60),
        )
    )
)
def test_random_funding_and_pay_outs_conserve(
    steps: list[tuple[str, int, int, int]],
) -> None:
    """Funding, moves and pay-outs in any order keep total == funded - withdrawn, none negative."""
    ledger = Accounts()
    accounts = [balance_of("a"), deposit_of("b"), escrow_of("a"), TREASURY]
    for op, src, dst, amount in steps:
        with contextlib.suppress(InsufficientFunds, InvalidAmount, UnbalancedTransfer):
            if op == "fund":
                ledger.fund(accounts[src], amount)
            elif op == "pay_out":
                ledger.pay_out(accounts[src], amount)
            else:
                ledger.move(accounts[src], accounts[dst], amount)
        assert ledger.conserved()
        assert ledger.total() == ledger.funded() - ledger.withdrawn()
        assert all(ledger.balance(a) >= 0 for a in accounts)
