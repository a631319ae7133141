"""`proofmarket bench market` runs a real market of a given size and times its rounds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.market_bench import MarketBenchConfig, in_memory_baseline, round_timings


def test_round_timings_are_read_from_the_coordinators_log(tmp_path: Path) -> None:
    """Deadline to clearing and to settled, per round, from its round.progress lines."""
    lines = [
        {"round": 0, "phase": "bid", "bid_deadline": 1_000_000, "t": "00:16:40.000"},
        {"round": 0, "phase": "prove", "t": "00:16:40.250"},
        {"round": 1, "phase": "bid", "bid_deadline": 1_001_000, "t": "00:16:40.251"},
        {"round": 0, "phase": "settled", "t": "00:16:41.500"},
        {"round": 1, "phase": "settled", "t": "00:16:41.100"},
    ]
    log = tmp_path / "coordinator.log"
    log.write_text(
        "".join(
            json.dumps(
                {
                    **{k: v for k, v in line.items() if k != "t"},
                    "event": "round.progress",
                    "timestamp": f"1970-01-01T{line['t']}Z",
                }
            )
            + "\n"
            for line in lines
        )
    )
    timings = round_timings(log)
    assert ([250, 100], [1500, 100]) == (timings["clear_ms"], timings["settle_ms"])


def test_the_in_memory_baseline_is_the_same_market_on_a_simulated_clock(tmp_path: Path) -> None:
    """The baseline trades the bench's market in memory: tasks settled over its rounds' span."""
    config = MarketBenchConfig(broker="embedded", tasks_per_round=40, users=4, provers=2, rounds=2)
    testnet = config.testnet(tmp_path)
    baseline = in_memory_baseline(config, testnet)
    window_s = testnet.params.bid_window_ms / 1000
    settled, span = baseline["settled_tasks"], baseline["span_s"]
    assert isinstance(settled, int) and isinstance(span, float)
    assert 0 < settled <= config.rounds * config.tasks_per_round
    assert config.rounds * window_s <= span
    assert round(settled / span, 1) == baseline["settled_per_s"]


@pytest.mark.slow
@pytest.mark.broker
def test_a_small_market_bench_trades_every_round_and_says_so() -> None:
    """300 task bids a round from 10 users: all in, nobody slashed, figures and exit 0."""
    command = ["bench", "market", "--tasks-per-round", "300", "--users", "10", "--rounds", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "proofmarket", *command, "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert 0 == done.returncode, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert ([300, 300], 0, True, [], 2, 2) == (
        result["tasks_bid"],
        result["honest_slashes"],
        result["ok"],
        result["problems"],
        len(result["clear_ms"]),
        len(result["assign_ms"]),  # each clearing's round.assigned line was read
    )
    assert 0 < result["ratio"] and 0 < result["coordinator_max_rss_mb"]
    assert 0 < result["schedule_ratio"] and 0 < result["in_memory"]["settled_tasks"]
