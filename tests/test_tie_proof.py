"""Unpredictable ties: the tie seed is the hash of the coordinator's signature over the
market and round, published as ClearingResult.tie_proof and checkable by anyone after."""

from __future__ import annotations

import msgspec
import pytest
from test_coordinator_helpers import MARKET, PROVERS, START, USERS, Market, genesis, params

from coordinator.core import Coordinator
from protocol.events import Publish
from protocol.identity import Identity
from protocol.mechanism import ProverBid, TaskBid, get_mechanism
from protocol.messages import ClearingResult
from protocol.tie_proof import check_tie_proof, plain_seed, tie_message

SIGNER = Identity.from_seed(bytes(range(32)))
BID_DEADLINE = START + 100


def clear_tied_round(signed: bool) -> tuple[ClearingResult, dict[str, tuple[str, ...]]]:
    """Round 0 with four equal fees and two equal provers: every choice is a tie."""
    rules = params(signed_ties=signed)
    core = Coordinator(rules, genesis(), SIGNER.public_hex, START, tie_signer=SIGNER.sign)
    market = Market(core)
    market.tick(START)
    for prover in PROVERS[:2]:
        market.declare(prover, 1)
        market.cost_bid(prover, 1)
    for i, user in enumerate(USERS):
        market.task_bid(user, f"t{i}", 7)
    effects = market.tick(BID_DEADLINE)
    [result] = [
        e.message
        for e in effects
        if isinstance(e, Publish) and isinstance(e.message, ClearingResult)
    ]
    winners = {
        e.to: tuple(t.task_id for t in e.message.tasks)  # type: ignore[attr-defined]
        for e in effects
        if isinstance(e, Publish) and type(e.message).__name__ == "Assignment"
    }
    return result, winners  # type: ignore[return-value]


def test_signed_ties_publish_a_proof_anyone_can_check() -> None:
    """The published proof verifies under the coordinator's key, and the clearing is the
    mechanism's on the seed it stands for."""
    result, winners = clear_tied_round(signed=True)
    assert result.tie_proof is not None
    seed = check_tie_proof(SIGNER.public_hex, MARKET, 0, result.tie_proof)
    assert SIGNER.sign(tie_message(MARKET, 0)) == result.tie_proof
    tasks = [TaskBid(f"t{i}", 7) for i in range(4)]
    provers = [ProverBid(p, 1, 1) for p in PROVERS[:2]]
    expected = get_mechanism("prooph").clear(tasks, provers, seed=seed)
    assert {p: len(b) for p, b in expected.assignments.items()} == {
        p: len(b) for p, b in winners.items()
    }
    assert set(expected.assignments) == set(winners)


def test_a_forged_or_misplaced_proof_is_refused() -> None:
    """A proof for another round, or from another key, does not check."""
    result, _ = clear_tied_round(signed=True)
    assert result.tie_proof is not None
    with pytest.raises(ValueError, match="round 1"):
        check_tie_proof(SIGNER.public_hex, MARKET, 1, result.tie_proof)
    other = Identity.from_seed(bytes(32))
    with pytest.raises(ValueError):
        check_tie_proof(other.public_hex, MARKET, 0, result.tie_proof)


def test_plain_markets_keep_the_public_seed_and_the_old_wire() -> None:
    """Without signed_ties there is no proof, the seed is market/round, and the encoded
    result carries no tie_proof key (an older decoder reads it)."""
    result, _ = clear_tied_round(signed=False)
    assert result.tie_proof is None
    assert b"test/0" == plain_seed(MARKET, 0)
    fields = msgspec.msgpack.decode(msgspec.msgpack.encode(result))
    assert "tie_proof" not in fields
    assert 1 == fields["v"]


def test_signed_ties_need_the_signer() -> None:
    """A signed-ties market cannot be cleared (or replayed) without the coordinator's key."""
    with pytest.raises(ValueError, match="tie signer"):
        Coordinator(params(signed_ties=True), genesis(), SIGNER.public_hex, START)
