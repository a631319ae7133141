"""The project's own promises: README commands, CI script, packaging."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run takes its test command from the README rather than keeping its own copy."""
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^pip install .*pytest.*$", readme, flags=re.MULTILINE)
    assert 1 == len(commands)
    assert 'grep -E "^pip install .*pytest" README.md' in (ROOT / ".ci/run").read_text()


def test_every_package_ships_py_typed() -> None:
    """Each top-level package carries a py.typed marker for type checkers."""
    packages = ["protocol", "coordinator", "prover_node", "user_client", "deploy", "proofmarket"]
    missing = [p for p in packages if not (ROOT / p / "py.typed").exists()]
    assert [] == missing


def test_console_script_lists_subcommands() -> None:
    """`proofmarket --help` names every subcommand of the design."""
    out = subprocess.run(
        [sys.executable, "-m", "proofmarket", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ["clear", "bench", "keygen", "sim", "testnet", "coordinator", "prover", "user"]:
        assert name in out
