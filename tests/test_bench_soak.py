"""`proofmarket bench soak` at a tiny size: its JSON document and a verdict true to its figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import RunningBroker

from deploy.lab.plots import soak_curves, soak_series
from deploy.soak import RSS_SLOPE_MB, TIME_TOLERANCE, SoakConfig, run_soak, slope_per_1000
from deploy.soak_net import (
    NetSoakConfig,
    children_of,
    cpu_s,
    fit_start,
    rounds_for,
    rss_kb,
    run_net_soak,
)
from proofmarket.cli import cli


def test_slope_is_per_thousand_rounds() -> None:
    """A value growing 3 per round has a slope of 3,000 per 1,000 rounds; a flat one, 0."""
    assert 3000.0 == slope_per_1000([(r, 3.0 * r + 1) for r in range(10)])
    assert 0.0 == slope_per_1000([(r, 5.0) for r in range(10)])


def test_the_windows_compare_the_end_with_the_start_and_with_the_full_market() -> None:
    """`first_ms` is read after 100 rounds; `after_warmup` from the fitted rounds on."""
    from deploy.soak import _windows

    # 10 ms a round while filling (rounds 1-2,199), 20 ms once full.
    times = [0.010] * 2199 + [0.020] * 7801
    windows = _windows(times, 2200)
    assert (1000, 10.0, 20.0, 2.0) == tuple(
        windows[k] for k in ("window_rounds", "first_ms", "last_ms", "ratio")
    )
    assert {"from_round": 2200, "first_ms": 20.0, "ratio": 1.0} == windows["after_warmup"]
    # Too short for a window after the fitted start that stays clear of the last one.
    assert "after_warmup" not in _windows(times[:2500], 2200)


def test_the_windows_read_the_rounds_relative_to_the_reference_work() -> None:
    """Rounds 1.5x dearer on a machine 1.5x slower are flat relative to the reference."""
    from deploy.soak import _windows

    times = [0.020] * 5000 + [0.030] * 5000
    slower = [0.001] * 5000 + [0.0015] * 5000
    windows = _windows(times, 2200, slower)
    assert (1.5, 1.5, 1.0) == tuple(
        windows[k] for k in ("ratio", "reference_ratio", "relative_ratio")
    )
    assert (1.5, 1.0) == tuple(windows["after_warmup"][k] for k in ("ratio", "relative_ratio"))
    # The same rounds on a steady machine: a creep of 1.5x.
    assert 1.5 == _windows(times, 2200, [0.001] * 10000)["relative_ratio"]


def test_a_tiny_soak_reports_its_curves_restart_and_verdict() -> None:
    """Fields are all there, the restart starts from a snapshot, the verdict follows the figures."""
    config = SoakConfig(
        rounds=40, provers=2, users=6, samples=8, snapshot_every=100, bytecode_restart=False
    )
    result = run_soak(config)
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
    assert per_round["reference_first_ms"] > 0 and per_round["reference_last_ms"] > 0
    assert result["fit_from_round"] == per_round["after_warmup"]["from_round"]
    assert (rss["slope_per_1000"] <= RSS_SLOPE_MB) == verdict["rss_flat"]
    assert (True, True, True) == (honest["ok"], restart["same_state"], verdict["restart_ok"])
    assert restart["snapshot"] is not None and 0 < restart["replayed"] < 100
    assert restart["replayed"] + restart["snapshot"] == restart["records"]
    process = restart["process"]
    assert isinstance(process, dict)
    assert (0, restart["replayed"]) == (process["exit_code"], process["replayed"])
    assert process["exec_to_serving_s"] is not None and process["cpu_ms"] is not None
    samples = result["samples"]
    assert isinstance(samples, list) and len(samples) >= 8
    assert {"round", "cpu_ms", "wall_ms", "reference_ms", "rss_mb", "entries"} == set(samples[0])
    ok = all(v for k, v in verdict.items() if k != "ok")
    assert ok == verdict["ok"]


def test_the_command_prints_json_and_exits_by_its_verdict() -> None:
    """`bench soak --json` prints one document; the exit code is 0 exactly when it is ok."""
    args = ["bench", "soak", "--rounds", "12", "--provers", "1", "--users", "3", "--json"]
    args.append("--no-bytecode-restart")
    outcome = CliRunner().invoke(cli, args)
    document = json.loads(outcome.output.strip().splitlines()[-1])
    assert ("soak", 12) == (document["benchmark"], document["rounds"])
    assert (0 if document["verdict"]["ok"] else 1) == outcome.exit_code


def test_the_command_draws_its_curves(tmp_path: Path) -> None:
    """`--plot FILE` writes a PNG of the RSS and CPU-per-round curves."""
    picture = tmp_path / "soak.png"
    args = ["bench", "soak", "--rounds", "8", "--provers", "1", "--users", "2", "--json"]
    CliRunner().invoke(cli, [*args, "--no-bytecode-restart", "--plot", str(picture)])
    assert b"\x89PNG" == picture.read_bytes()[:4]


def test_broker_samples_draw_a_line_per_party(tmp_path: Path) -> None:
    """Broker-mode samples (per-party RSS and cumulative CPU) draw without a child's line."""
    samples = [
        {
            "round": r,
            "rss_mb": {"coordinator": 60.0 + r, "prover-0.child-7": 12.0},
            "cpu_s": {"coordinator": 0.05 * r},
        }
        for r in (0, 10, 20)
    ]
    soak_curves(tmp_path / "net.png", samples)
    assert {"coordinator": [60.0, 70.0, 80.0]} == soak_series(samples, "rss_mb")
    assert (tmp_path / "net.png").stat().st_size > 0


# -- over a real broker --------------------------------------------------------------------


def test_proc_readings_of_this_process() -> None:
    """VmRSS and CPU time are read for a live process; a child is found under its parent."""
    assert (rss_kb(os.getpid()) or 0) > 0
    assert (cpu_s(os.getpid()) or 0.0) > 0.0
    assert os.getpid() in children_of(os.getppid())
    assert 1800 == rounds_for(30, 1000)


def test_broker_soak_fits_past_the_memory_horizon() -> None:
    """Slopes start past the 1,024-round task horizon when the run allows, else mid-run."""
    assert (1124, 300, 1124) == (fit_start(1800), fit_start(600), fit_start(50_000))


def test_broker_rates_carry_the_machine_reference_of_their_interval() -> None:
    """Each interval's rate has its CPU per round and the mean reference of its two samples."""
    from deploy.soak_net import _rates

    samples: list[dict[str, object]] = [
        {"round": r, "t_s": r, "cpu_s": {"coordinator": 0.1 * r}, "reference_ms": ms}
        for r, ms in ((10, 1.0), (20, 2.0))
    ]
    (rate,) = _rates(samples)
    assert (20, 1.5) == (rate["round"], rate["reference_ms"])
    assert 100.0 == pytest.approx(rate["cpu_ms"]["coordinator"])  # type: ignore[index]


def test_minutes_need_a_broker() -> None:
    """`--minutes` bounds a soak over a broker; in memory it is refused, not ignored."""
    outcome = CliRunner().invoke(cli, ["bench", "soak", "--rounds", "4", "--minutes", "1"])
    assert 2 == outcome.exit_code
    assert "needs --broker" in outcome.output


@pytest.mark.broker
@pytest.mark.slow
async def test_a_short_soak_over_mosquitto_samples_every_process(mosquitto: RunningBroker) -> None:
    """A few rounds over Mosquitto: every process sampled, market honest, restart timed."""
    config = NetSoakConfig(
        broker=mosquitto.url, rounds=5, provers=2, users=6, round_ms=2000, samples=6
    )
    result = await run_net_soak(config)
    rss, restart, verdict = result["rss_mb"], result["restart"], result["verdict"]
    assert isinstance(rss, dict) and isinstance(restart, dict) and isinstance(verdict, dict)
    assert {"coordinator", "prover-0", "prover-1", "user-0"} <= set(rss["slope_per_1000"])
    assert all(v > 0 for v in rss["first"].values())
    assert ([], True, True) == (result["problems"], verdict["honest_ok"], verdict["restart_ok"])
    assert 5 == result["market"]["rounds_settled"]  # type: ignore[index]
    assert 0 == restart["exit_code"]
    # Too short a run for a periodic snapshot; its clean stop filed one of every record.
    assert (restart["records"], 0) == (restart["snapshot"], restart["replayed"])
    flat = all(s <= RSS_SLOPE_MB for s in rss["slope_per_1000"].values())
    assert flat == verdict["rss_flat"]
    assert all(v for k, v in verdict.items() if k != "ok") == verdict["ok"]
    assert {0} == set(result["exit_codes"].values())  # type: ignore[attr-defined]
    assert all(s["reference_ms"] > 0 for s in result["samples"])  # type: ignore[attr-defined]
