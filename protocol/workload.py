"""The proof workload: a sloth slow-timed hash standing in for a real ZK prover.

Proving a task is `difficulty` sequential modular square roots over a 256-bit prime;
checking it is the same number of squarings run backwards, so verifying is hundreds of
times cheaper than proving and no step can be parallelised. A batch also pays a setup
cost once, like a circuit setup that a real prover amortises over the tasks it proves.

One step of the chain is the sloth permutation rho followed by adding a constant:

- rho(x) is the square root of x whose parity is even when x is a quadratic residue,
  and otherwise the square root of -x whose parity is odd. Because p = 3 (mod 4), -1 is a
  non-residue, so exactly one of x and -x has a root and rho is a bijection whose inverse
  needs one squaring: an even y came from y^2, an odd y from -y^2.
- Adding a fixed constant after rho breaks the short cycles rho has on its own
  (rho(1) = p - 1 and rho(p - 1) = 1), which would let a prover shortcut long chains.
  The constant is a hash output, so it hides no chosen structure; adding 1 would not do
  (0 -> 1 -> 0 would become a cycle).

Everything here is a pure function of its arguments. The square roots are GMP's
(gmpy2.powmod): seven times faster than Python's own pow at this size, and proving is the
bulk of a market's CPU; the results are the same integers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import gmpy2

# The largest 256-bit prime; it is 3 mod 4, which gives square roots by one power.
P: Final = 2**256 - 189
PROOF_SIZE: Final = 32

_ROOT_EXPONENT: Final = (P + 1) // 4
_GMP_P: Final = gmpy2.mpz(P)
_GMP_ROOT_EXPONENT: Final = gmpy2.mpz(_ROOT_EXPONENT)
_TASK_DOMAIN: Final = b"proofmarket/sloth/task/v1"
_SETUP_DOMAIN: Final = b"proofmarket/sloth/setup/v1"

_STEP_CONSTANT: Final = (
    int.from_bytes(hashlib.sha512(b"proofmarket/sloth/step-constant/v1").digest(), "big") % P
)

# Cost of one step in modular multiplications, counted as square-and-multiply does them:
# one squaring per exponent bit after the first, one multiply per further set bit, and
# the squaring that tells a residue from a non-residue.
ROOT_MULMODS: Final = (_ROOT_EXPONENT.bit_length() - 1) + (_ROOT_EXPONENT.bit_count() - 1) + 1
SQUARE_MULMODS: Final = 1


@dataclass
class Tally:
    """Work done, for measuring cost by counting rather than by timing."""

    roots: int = 0
    squarings: int = 0

    @property
    def mulmods(self) -> int:
        """Modular multiplications the counted steps take."""
        return self.roots * ROOT_MULMODS + self.squarings * SQUARE_MULMODS


def _root_step(x: int) -> int:
    y = int(gmpy2.powmod(x, _GMP_ROOT_EXPONENT, _GMP_P))
    if y * y % P == x:
        root, parity = y, 0  # x is a residue: take its even root
    else:
        root, parity = y, 1  # y is a root of -x: take its odd root
    if root % 2 != parity:
        root = P - root
    return (root + _STEP_CONSTANT) % P


def _square_step(y: int) -> int:
    root = (y - _STEP_CONSTANT) % P
    square = root * root % P
    return square if root % 2 == 0 else (-square) % P


def task_element(task_input: bytes, *, difficulty: int) -> int:
    """The field element a task's chain starts from.

    The difficulty is hashed in so that a proof for one difficulty is never accepted
    for another.
    """
    digest = hashlib.sha512(
        _TASK_DOMAIN + difficulty.to_bytes(8, "big") + bytes(task_input)
    ).digest()
    # 512 bits reduced mod a 256-bit prime: the bias is far below 2^-250.
    return int.from_bytes(digest, "big") % P


def _check_difficulty(difficulty: int) -> None:
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 1:
        raise ValueError(f"difficulty must be an int >= 1, got {difficulty!r}")


def _batch_setup(task_inputs: Sequence[bytes], setup: int, tally: Tally | None) -> int:
    # The mock circuit setup: a sloth chain seeded by the whole batch, so it has to be
    # run afresh for every batch and cannot be precomputed across batches.
    hasher = hashlib.sha512(_SETUP_DOMAIN + len(task_inputs).to_bytes(8, "big"))
    for task_input in task_inputs:
        hasher.update(len(task_input).to_bytes(8, "big"))
        hasher.update(task_input)
    x = int.from_bytes(hasher.digest(), "big") % P
    for _ in range(setup):
        x = _root_step(x)
    if tally is not None:
        tally.roots += setup
    return x


def prove_batch(
    task_inputs: Sequence[bytes],
    *,
    difficulty: int,
    setup: int,
    tally: Tally | None = None,
) -> list[bytes]:
    """Prove every task of a batch: one setup, then `difficulty` square roots per task.

    Returns one 32-byte proof per task, in order. The cost is `setup + difficulty * n`
    square roots, so larger batches amortise the setup.
    """
    _check_difficulty(difficulty)
    if isinstance(setup, bool) or not isinstance(setup, int) or setup < 0:
        raise ValueError(f"setup must be an int >= 0, got {setup!r}")
    _batch_setup(task_inputs, setup, tally)
    proofs = []
    for task_input in task_inputs:
        x = task_element(task_input, difficulty=difficulty)
        for _ in range(difficulty):
            x = _root_step(x)
        proofs.append(x.to_bytes(PROOF_SIZE, "big"))
    if tally is not None:
        tally.roots += difficulty * len(task_inputs)
    return proofs


def prove(task_input: bytes, *, difficulty: int, setup: int = 0) -> bytes:
    """Prove a single task (a batch of one)."""
    return prove_batch([task_input], difficulty=difficulty, setup=setup)[0]


def _check_one(task_input: bytes, proof: bytes, difficulty: int, tally: Tally | None) -> bool:
    if not isinstance(proof, bytes | bytearray | memoryview) or len(proof) != PROOF_SIZE:
        return False
    y = int.from_bytes(proof, "big")
    if y >= P:
        return False
    for _ in range(difficulty):
        y = _square_step(y)
    if tally is not None:
        tally.squarings += difficulty
    return y == task_element(task_input, difficulty=difficulty)


def verify_batch(
    task_inputs: Sequence[bytes],
    proofs: Sequence[bytes],
    *,
    difficulty: int,
    tally: Tally | None = None,
) -> list[bool]:
    """Check each proof against its task: `difficulty` squarings per task.

    A malformed proof (wrong length, not below p, not bytes) is simply False. Sequences
    of different lengths are a caller's bug and raise ValueError.
    """
    _check_difficulty(difficulty)
    if len(task_inputs) != len(proofs):
        raise ValueError(f"{len(task_inputs)} task inputs but {len(proofs)} proofs")
    return [
        _check_one(task_input, proof, difficulty, tally)
        for task_input, proof in zip(task_inputs, proofs, strict=True)
    ]


def verify(task_input: bytes, proof: bytes, *, difficulty: int) -> bool:
    """Check one proof against its task."""
    return verify_batch([task_input], [proof], difficulty=difficulty)[0]


__all__ = [
    "PROOF_SIZE",
    "ROOT_MULMODS",
    "SQUARE_MULMODS",
    "P",
    "Tally",
    "prove",
    "prove_batch",
    "task_element",
    "verify",
    "verify_batch",
]
