"""The sloth proof workload: round trips, rejections and relative cost."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import workload
from protocol.workload import (
    PROOF_SIZE,
    ROOT_MULMODS,
    P,
    Tally,
    prove,
    prove_batch,
    verify,
    verify_batch,
)

KNOWN_PROOF = "1d6887c899b818848f2204a7f80f5d652cb762b09e1a2b3a46a5addba1026158"
INPUTS = [b"", b"task-0", b"task-1", bytes(range(256)), b"\xff" * 4096]


def _is_probable_prime(n: int, rounds: int = 40) -> bool:
    if n < 2:
        return False
    for small in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % small == 0:
            return n == small
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    rng = random.Random(1234)  # fixed bases: the test is deterministic
    for _ in range(rounds):
        a = rng.randrange(2, n - 1)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_modulus_is_a_256_bit_prime_congruent_to_3_mod_4() -> None:
    """p is a 256-bit prime with p = 3 (mod 4), which the square-root formula needs."""
    assert 256 == P.bit_length()
    assert 3 == P % 4
    assert _is_probable_prime(P)


def test_miller_rabin_rejects_composites() -> None:
    """The primality check used above can fail: it rejects composites near p."""
    assert not _is_probable_prime(P + 2)
    assert not _is_probable_prime((2**127 - 1) * (2**61 - 1))


def test_round_trip() -> None:
    """Proofs from prove_batch verify at the same difficulty."""
    proofs = prove_batch(INPUTS, difficulty=5, setup=3)
    assert [True] * len(INPUTS) == verify_batch(INPUTS, proofs, difficulty=5)
    assert all(PROOF_SIZE == len(proof) for proof in proofs)


@settings(max_examples=25, deadline=None)
@given(task_input=st.binary(max_size=64), difficulty=st.integers(min_value=1, max_value=8))
def test_round_trip_any_input(task_input: bytes, difficulty: int) -> None:
    """Any input proves and verifies at any difficulty."""
    assert verify(task_input, prove(task_input, difficulty=difficulty), difficulty=difficulty)


@settings(max_examples=25, deadline=None)
@given(bit=st.integers(min_value=0, max_value=8 * PROOF_SIZE - 1))
def test_corrupted_proof_fails(bit: int) -> None:
    """Flipping any single bit of a proof makes it fail."""
    proof = prove(b"task", difficulty=4)
    corrupted = (int.from_bytes(proof, "big") ^ (1 << bit)).to_bytes(PROOF_SIZE, "big")
    assert not verify(b"task", corrupted, difficulty=4)


def test_proof_for_another_task_fails() -> None:
    """A valid proof for one task does not verify for another."""
    assert not verify(b"task-b", prove(b"task-a", difficulty=4), difficulty=4)


@pytest.mark.parametrize("claimed", [1, 3, 5, 8])
def test_wrong_difficulty_fails(claimed: int) -> None:
    """A proof made at difficulty 4 fails when checked at any other difficulty."""
    assert not verify(b"task", prove(b"task", difficulty=4), difficulty=claimed)


@pytest.mark.parametrize(
    "proof",
    [
        b"",
        b"\x00" * (PROOF_SIZE - 1),
        b"\x00" * (PROOF_SIZE + 1),
        P.to_bytes(PROOF_SIZE, "big"),
        (2**256 - 1).to_bytes(PROOF_SIZE, "big"),
        "not bytes",
        None,
    ],
)
def test_malformed_proof_is_false_not_an_error(proof: object) -> None:
    """Wrong length, a value >= p or a non-bytes proof is False, never an exception."""
    assert [False] == verify_batch([b"task"], [proof], difficulty=3)  # type: ignore[list-item]


def test_batch_equals_per_task() -> None:
    """Proving a batch gives the same proofs as proving each task alone."""
    batch = prove_batch(INPUTS, difficulty=6, setup=4)
    assert [prove(task_input, difficulty=6) for task_input in INPUTS] == batch


def test_deterministic() -> None:
    """The same inputs always give the same proofs."""
    first = prove_batch(INPUTS, difficulty=6, setup=2)
    assert first == prove_batch(list(INPUTS), difficulty=6, setup=2)


def test_distinct_inputs_give_distinct_proofs() -> None:
    """Different tasks get different proofs."""
    proofs = prove_batch(INPUTS, difficulty=3, setup=0)
    assert len(INPUTS) == len(set(proofs))


def test_step_is_a_permutation_with_inverse() -> None:
    """Each square-root step is undone by one squaring step, including at 0 and p - 1."""
    rng = random.Random(7)
    for x in [0, 1, 2, P - 1, P - 2, *(rng.randrange(P) for _ in range(50))]:
        assert x == workload._square_step(workload._root_step(x))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=P - 1))
def test_gmp_square_root_is_pythons(x: int) -> None:
    """The step's GMP power gives the very integer Python's pow gives, so proofs match."""
    y = pow(x, (P + 1) // 4, P)
    root = y if (y * y % P == x) == (y % 2 == 0) else P - y
    assert (root + workload._STEP_CONSTANT) % P == workload._root_step(x)


def test_known_proof_is_unchanged() -> None:
    """A proof computed before GMP did the roots still comes out the same."""
    assert KNOWN_PROOF == prove(b"task-0", difficulty=3, setup=2).hex()


@pytest.mark.parametrize("start", [0, 1, P - 1])
def test_no_short_cycle_at_small_points(start: int) -> None:
    """The chain does not fall into short cycles like {1, p - 1} of bare sloth roots."""
    seen = set()
    x = start
    for _ in range(20):
        seen.add(x)
        x = workload._root_step(x)
    assert 20 == len(seen)


def test_verify_is_far_cheaper_than_prove() -> None:
    """Verifying costs k squarings per task, proving k square roots plus the setup."""
    proving, checking = Tally(), Tally()
    proofs = prove_batch(INPUTS, difficulty=20, setup=10, tally=proving)
    verify_batch(INPUTS, proofs, difficulty=20, tally=checking)
    assert 10 + 20 * len(INPUTS) == proving.roots
    assert 20 * len(INPUTS) == checking.squarings
    assert 0 == checking.roots
    assert 100 * checking.mulmods < proving.mulmods
    assert ROOT_MULMODS > 100


def test_setup_is_paid_once_per_batch() -> None:
    """The setup cost is charged once per batch, not once per task."""
    one, many = Tally(), Tally()
    prove_batch(INPUTS[:1], difficulty=2, setup=7, tally=one)
    prove_batch(INPUTS, difficulty=2, setup=7, tally=many)
    assert 7 + 2 == one.roots
    assert 7 + 2 * len(INPUTS) == many.roots


@pytest.mark.parametrize("difficulty", [0, -1, True])
def test_bad_difficulty_raises(difficulty: int) -> None:
    """A difficulty below one (or a bool) is refused."""
    with pytest.raises(ValueError, match="difficulty"):
        prove_batch([b"x"], difficulty=difficulty, setup=0)
    with pytest.raises(ValueError, match="difficulty"):
        verify_batch([b"x"], [b"\x00" * 32], difficulty=difficulty)


def test_negative_setup_raises() -> None:
    """A negative setup is refused."""
    with pytest.raises(ValueError, match="setup"):
        prove_batch([b"x"], difficulty=1, setup=-1)


def test_mismatched_lengths_raise() -> None:
    """verify_batch refuses different numbers of inputs and proofs."""
    with pytest.raises(ValueError, match="proofs"):
        verify_batch([b"a", b"b"], [b"\x00" * 32], difficulty=1)


def test_empty_batch() -> None:
    """An empty batch gives no proofs and no verdicts."""
    assert [] == prove_batch([], difficulty=3, setup=2)
    assert [] == verify_batch([], [], difficulty=3)
