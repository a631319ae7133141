"""Bounded fuzzing of every decoder of outside input, and the crashes it ever found."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_targets import TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.envelope import seal
from protocol.identity import Identity
from protocol.messages import TaskBidMessage

CORPUS = Path(__file__).parent / "fuzz_corpus"
SENDER = Identity.from_seed(b"\x72" * 32)
READER = Identity.from_seed(b"\x71" * 32)
VALID = seal(
    SENDER,
    TaskBidMessage(market="fuzz", round=1, task_id="t", fee=5, task_input=b"in"),
    "fuzz",
    READER.public_key,
    seq=1,
    nonce=bytes(24),
)


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """`seed` with bytes flipped, cut, or spliced: inputs that get past the first checks."""

    def apply(edits: list[tuple[int, int]], cut: int | None) -> bytes:
        data = bytearray(seed)
        for at, value in edits:
            data[at % len(data)] = value
        return bytes(data[:cut] if cut is not None else data)

    return st.builds(
        apply,
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
        st.none() | st.integers(0, len(seed)),
    )


INPUTS = st.binary(max_size=2_048) | mutated(VALID)


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=INPUTS)
def test_decoder_never_raises_anything_but_its_refusal(name: str, data: bytes) -> None:
    """Arbitrary and mutated bytes get a value or the decoder's own refusal, never a crash."""
    TARGETS[name](data)


def corpus() -> list[tuple[str, Path]]:
    return sorted(
        (case.parent.name, case) for case in CORPUS.glob("*/*") if case.parent.name in TARGETS
    )


@pytest.mark.parametrize(("name", "case"), corpus(), ids=lambda v: getattr(v, "name", v))
def test_every_kept_crash_stays_fixed(name: str, case: Path) -> None:
    """Each input a fuzzer ever crashed a decoder with is refused cleanly now."""
    TARGETS[name](case.read_bytes())


def test_the_corpus_covers_the_known_crashes() -> None:
    """The kept cases include the deep-nesting crashes found in body, genesis and market files."""
    assert {"body", "genesis_file", "market_file"} <= {name for name, _ in corpus()}
