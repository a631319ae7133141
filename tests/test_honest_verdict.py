"""A run's verdict is what honest parties got: any honest loss fails it, with the reason."""

from __future__ import annotations

from typing import Any

from coordinator.report import honest_losses

HONEST = "a" * 64
FAULTY = "b" * 64


def report(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "finished": True,
        "invariants_ok": True,
        "slashed": [],
        "open_tasks": 0,
        "rounds": [{"round": 0, "tasks_bid": 4}, {"round": 1, "tasks_bid": 3}],
    }
    return {**base, **changes}


def test_a_clean_run_has_no_problems() -> None:
    """Every round took bids and settled, nobody honest was slashed: no problem."""
    assert [] == honest_losses(report(), [HONEST])


def test_a_slashed_faulty_prover_is_no_problem() -> None:
    """Slashing a prover that was faulty on purpose is the market working."""
    assert [] == honest_losses(report(slashed=[FAULTY]), [HONEST])


def test_a_slashed_honest_prover_fails_the_run() -> None:
    """An honest prover slashed is named in the verdict."""
    assert [f"honest prover {HONEST[:12]} was slashed"] == honest_losses(
        report(slashed=[HONEST, FAULTY]), [HONEST]
    )


def test_open_tasks_and_rounds_without_bids_fail_the_run() -> None:
    """Accepted bids left open, and a round whose every honest bid was refused, fail it."""
    rounds = [{"round": 0, "tasks_bid": 1000}, {"round": 1, "tasks_bid": 0}]
    expected = [
        "3 accepted task bids were left open",
        "round 1 took no task bid from its honest users",
    ]
    assert expected == honest_losses(report(open_tasks=3, rounds=rounds), [HONEST])


def test_an_unfinished_market_fails_the_run() -> None:
    """A market that did not finish, or broke an invariant, fails."""
    problems = honest_losses(report(finished=False), [HONEST])
    assert ["the market did not finish its rounds with its invariants intact"] == problems


def test_rounds_without_bids_are_fine_when_no_user_bid() -> None:
    """A market with no users takes no bids, and that is nobody's loss."""
    rounds = [{"round": 0, "tasks_bid": 0}]
    assert [] == honest_losses(report(rounds=rounds), [HONEST], users_bid=False)
