"""Status queries in the pure core: answered from state, never recorded, rationed per round."""

from __future__ import annotations

from test_coordinator_helpers import (
    BID_MS,
    COORD,
    FAUCET,
    MARKET,
    PROVERS,
    START,
    USERS,
    Market,
    genesis,
    params,
    published,
    reject_codes,
    replayed,
)

from coordinator.core import SEEN_ROUNDS, Coordinator
from coordinator.invariants import check_invariants
from coordinator.records import CoordinatorEffect
from coordinator.status import QUERIES_PER_PARTY, QueryRation
from protocol.events import Record
from protocol.messages import AccountStatus, EpochCapacity, OpenTask, StatusQuery

U0, U1 = USERS[0], USERS[1]
P0 = PROVERS[0]
NEWCOMER = "e" * 64


def ask(market: Market, who: str, round: int = 0, now: int = START) -> list[CoordinatorEffect]:
    return market.send(who, StatusQuery(market=MARKET, round=round), now)


def answer(effects: list[CoordinatorEffect]) -> AccountStatus:
    [publish] = published(effects, AccountStatus)
    assert isinstance(publish.message, AccountStatus)
    return publish.message


def opened() -> Market:
    market = Market(Coordinator(params(), genesis(faucet=FAUCET), COORD, START))
    market.tick(START)
    return market


def test_user_sees_balance_escrow_and_open_tasks() -> None:
    """A user's answer has its balance, escrow and each open task bid, to it alone."""
    market = opened()
    market.task_bid(U0, "a", 7)
    market.task_bid(U0, "b", 3)
    market.task_bid(U1, "other", 5)
    effects = ask(market, U0)
    [publish] = published(effects, AccountStatus)
    status = answer(effects)
    assert U0 == publish.to
    assert (0, 0, 90, 10, 0, 0) == (
        status.round,
        status.epoch,
        status.balance,
        status.escrow,
        status.deposit,
        status.locked,
    )
    expected = [OpenTask("a", 0, 7, "open"), OpenTask("b", 0, 3, "open")]
    assert (expected, 2, FAUCET) == (status.open_tasks, status.open_task_count, status.faucet)


def test_prover_sees_deposit_lock_capacity_and_open_batch() -> None:
    """A prover's answer has free and locked deposit, its epoch capacity and open batches."""
    market = opened()
    market.declare(P0, 2)
    market.declare(PROVERS[1], 2)
    market.cost_bid(P0, 1)
    market.cost_bid(PROVERS[1], 5)
    for i, fee in enumerate([9, 8, 7]):
        market.task_bid(USERS[i], f"t{i}", fee)
    market.tick(START + BID_MS)  # round 0 clears: P0 wins a batch; round 1 opens
    status = answer(ask(market, P0, round=1, now=START + BID_MS))
    assert (1, 0, 80, 20) == (status.round, status.epoch, status.deposit, status.locked)
    assert ([EpochCapacity(0, 2)], [0]) == (status.capacities, status.open_batches)


def test_query_changes_nothing_and_is_not_recorded() -> None:
    """A query is answered without a Record effect, and leaves the market's state as it was."""
    market = opened()
    market.task_bid(U0, "a", 7)
    before = market.coordinator.state()
    effects = ask(market, U0)
    assert [] == [e for e in effects if isinstance(e, Record)]
    assert before == market.coordinator.state()
    assert [] == check_invariants(market.coordinator)


def test_newcomer_funded_by_faucet_has_an_account() -> None:
    """A key the genesis never named gets an account from a faucet grant, and sees it."""
    market = opened()
    assert 0 == answer(ask(market, NEWCOMER)).balance
    market.grant(NEWCOMER, 40, nonce=1)
    market.grant(NEWCOMER, 25, nonce=2, account="deposit")
    status = answer(ask(market, NEWCOMER))
    assert (40, 25) == (status.balance, status.deposit)
    assert [] == reject_codes(market.task_bid(NEWCOMER, "mine", 10))


def test_queries_rationed_per_party_and_round() -> None:
    """Past QUERIES_PER_PARTY answers in a round a party gets too_many_queries; next round, more."""
    market = opened()
    for _ in range(QUERIES_PER_PARTY):
        answer(ask(market, U0))
    assert ["too_many_queries"] == reject_codes(ask(market, U0))
    assert [] == reject_codes(ask(market, U1))  # another party's ration is its own
    market.tick(START + BID_MS)
    assert 1 == answer(ask(market, U0, round=1, now=START + BID_MS)).round


def test_ration_caps_answers_per_round_in_all() -> None:
    """The ration's round total refuses a party that has had none once the round's are given."""
    ration = QueryRation(per_party=2, per_round=3)
    assert [None, None, None] == [ration.take(p, 0) for p in ("a", "a", "b")]
    assert ration.take("c", 0) is not None
    assert ration.take("c", 1) is None


def test_query_for_wrong_round_refused() -> None:
    """A query naming a round not open yet, or SEEN_ROUNDS behind, is wrong_round."""
    market = opened()
    assert ["wrong_round"] == reject_codes(ask(market, U0, round=1))
    market.tick(START + (SEEN_ROUNDS + 1) * BID_MS)
    assert ["wrong_round"] == reject_codes(ask(market, U0, round=0))


def test_query_for_another_market_refused() -> None:
    """A query naming another market is wrong_market and answers nothing."""
    market = opened()
    effects = market.send(U0, StatusQuery(market="other", round=0), START)
    assert (["wrong_market"], []) == (reject_codes(effects), published(effects, AccountStatus))


def test_restored_coordinator_equal_after_queries() -> None:
    """Replaying the record log of a market that was queried gives the same state."""
    market = opened()
    market.task_bid(U0, "a", 7)
    ask(market, U0)
    ask(market, P0)
    fresh = Coordinator(market.coordinator.params, market.coordinator.genesis, COORD, START)
    restored = replayed(fresh, market.recorded)
    assert market.coordinator.state() == restored.state()
