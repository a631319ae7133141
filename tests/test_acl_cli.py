"""`proofmarket deploy acl` writes broker files from a genesis file."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from deploy.passwd import read_password_file
from proofmarket.commands.deploy_cmd import deploy

C, P = "c" * 64, "a" * 64


def test_acl_command_writes_files(tmp_path: Path) -> None:
    """The command writes passwd, acl and credentials for every genesis party."""
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps({"market": "m1", "coordinator": C, "provers": {P: 5}}))
    result = CliRunner().invoke(
        deploy, ["acl", "--genesis", str(genesis), "--out", str(tmp_path / "o")]
    )
    assert 0 == result.exit_code, result.output
    assert sorted([C, P]) == sorted(read_password_file(tmp_path / "o" / "passwd"))
    assert f"user {C}" in (tmp_path / "o" / "acl").read_text()


def test_acl_command_refuses_bad_genesis(tmp_path: Path) -> None:
    """A malformed genesis exits non-zero with the reason and writes nothing."""
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps({"market": "m1", "coordinator": "nothex"}))
    result = CliRunner().invoke(
        deploy, ["acl", "--genesis", str(genesis), "--out", str(tmp_path / "o")]
    )
    assert (1, False) == (result.exit_code, (tmp_path / "o").exists())
    assert "coordinator" in result.output
