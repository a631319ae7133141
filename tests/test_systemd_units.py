"""The shipped systemd units start: each ExecStart is a command line the CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from proofmarket.cli import cli

UNITS = sorted((Path(__file__).parent.parent / "deploy" / "systemd").glob("*.service"))
ENVIRONMENT = {
    "PROOFMARKET_BROKER": "mqtts://key@broker.example:8883",
    "PROOFMARKET_CA_FILE": "/etc/proofmarket/ca.crt",
    "PROOFMARKET_MARKET": "m1",
    "PROOFMARKET_COORDINATOR": "c" * 64,
    "PROOFMARKET_CAPACITY": "4",
    "PROOFMARKET_COST": "5",
    "PROOFMARKET_WORKERS": "2",
    "PROOFMARKET_TASKS": "2",
    "PROOFMARKET_FEE_RANGE": "1:100",
    "PROOFMARKET_IDENTITIES": "10",
}


def exec_start(unit: Path) -> list[str]:
    """The unit's ExecStart as systemd would run it for instance `m1`."""
    text = unit.read_text().replace("\\\n", " ")
    (line,) = [li for li in text.splitlines() if li.startswith("ExecStart=")]
    line = line.removeprefix("ExecStart=").replace("%i", "m1")
    line = re.sub(r"\$\{(\w+)\}", lambda m: ENVIRONMENT[m.group(1)], line)
    return shlex.split(line)


def test_there_are_units_to_check() -> None:
    """The coordinator and prover units ship."""
    names = {unit.name for unit in UNITS}
    assert {"proofmarket-coordinator@.service", "proofmarket-prover@.service"} <= names


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_command_line_parses_with_every_required_option(unit: Path, tmp_path: Path) -> None:
    """The CLI parses each unit's command line: no required option is missing."""
    argv = []
    for arg in exec_start(unit):
        if arg.startswith("/etc/proofmarket/"):  # the files an operator puts there
            arg = str(tmp_path / arg.removeprefix("/etc/proofmarket/"))
            Path(arg).parent.mkdir(parents=True, exist_ok=True)
            Path(arg).touch()
        argv.append(arg)
    assert argv[0].endswith("/proofmarket")
    command = cli.get_command(click.Context(cli), argv[1])
    assert isinstance(command, click.Command)
    context = command.make_context(argv[1], argv[2:])  # raises on a missing option
    assert "m1" in " ".join(str(v) for v in context.params.values())
