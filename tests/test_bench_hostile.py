"""`proofmarket bench hostile` at a tiny size: its figures and its verdict."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_bench_hostile_answers_every_input_and_slashes_nobody() -> None:
    """A small flood against a live testnet: every reply received, no honest slash, exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "proofmarket", "bench", "hostile", "--inputs", "100", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {"inputs": 100, "classes": 18, "honest_slashes": 0, "unanswered": {}, "ok": True}
    assert expected == {k: figures[k] for k in expected}
    assert figures["rejects"] > 0
    assert figures["traded_tasks"] > 0
    assert figures["coordinator_cpu_s"]["attacked"] > 0
