"""`proofmarket bench soak` at a tiny size: its JSON document and a verdict true to its figures."""

from __future__ import annotations

import json

from click.testing import CliRunner

from deploy.soak import RSS_SLOPE_MB, TIME_TOLERANCE, SoakConfig, run_soak, slope_per_1000
from proofmarket.cli import cli


def test_slope_is_per_thousand_rounds() -> None:
    """A value growing 3 per round has a slope of 3,000 per 1,000 rounds; a flat one, 0."""
    assert 3000.0 == slope_per_1000([(r, 3.0 * r + 1) for r in range(10)])
    assert 0.0 == slope_per_1000([(r, 5.0) for r in range(10)])


def test_a_tiny_soak_reports_its_curves_restart_and_verdict() -> None:
    """Fields are all there, the restart starts from a snapshot, the verdict follows the figures."""
    result = run_soak(SoakConfig(rounds=40, provers=2, users=6, samples=8, snapshot_every=100))
    assert {
        "per_round",
        "per_round_wall",
        "rss_mb",
        "entries",
        "restart",
        "store",
        "verdict",
    } <= set(result)
    per_round, rss, restart = result["per_round"], result["rss_mb"], result["restart"]
    verdict, honest = result["verdict"], result["honest"]
    assert isinstance(per_round, dict) and isinstance(rss, dict) and isinstance(restart, dict)
    assert isinstance(verdict, dict) and isinstance(honest, dict)
    assert (per_round["ratio"] <= TIME_TOLERANCE) == verdict["time_flat"]
    assert (rss["slope_per_1000"] <= RSS_SLOPE_MB) == verdict["rss_flat"]
    assert (True, True, True) == (honest["ok"], restart["same_state"], verdict["restart_ok"])
    assert restart["snapshot"] is not None and 0 < restart["replayed"] < 100
    assert restart["replayed"] + restart["snapshot"] == restart["records"]
    samples = result["samples"]
    assert isinstance(samples, list) and len(samples) >= 8
    assert {"round", "cpu_ms", "wall_ms", "rss_mb", "entries"} == set(samples[0])
    ok = all(v for k, v in verdict.items() if k != "ok")
    assert ok == verdict["ok"]


def test_the_command_prints_json_and_exits_by_its_verdict() -> None:
    """`bench soak --json` prints one document; the exit code is 0 exactly when it is ok."""
    args = ["bench", "soak", "--rounds", "12", "--provers", "1", "--users", "3", "--json"]
    outcome = CliRunner().invoke(cli, args)
    document = json.loads(outcome.output.strip().splitlines()[-1])
    assert ("soak", 12) == (document["benchmark"], document["rounds"])
    assert (0 if document["verdict"]["ok"] else 1) == outcome.exit_code
