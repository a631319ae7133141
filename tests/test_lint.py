"""Static checks as part of the suite: ruff and mypy --strict stay clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["protocol", "coordinator", "prover_node", "user_client", "deploy", "proofmarket"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_is_clean() -> None:
    """ruff finds nothing in the packages or the tests."""
    result = _run("ruff", "check", *PACKAGES, "tests")
    assert 0 == result.returncode, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy --strict (configured in pyproject.toml) finds nothing in the packages."""
    result = _run("mypy", *PACKAGES)
    assert 0 == result.returncode, result.stdout + result.stderr
