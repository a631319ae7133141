"""`proofmarket bench ingest` runs end to end against a real broker and reports rates."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from conftest import RunningBroker


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "bulk"), [("live", 1), ("drain", 1), ("drain", 25)])
async def test_bench_ingest_reports_both_rates_and_their_ratio(
    broker: RunningBroker, mode: str, bulk: int
) -> None:
    """The JSON line carries the bid count, both rates and ratio of envelopes handled per s."""
    args = [
        "bench",
        "ingest",
        "--broker",
        broker.url_for("bench"),
        "--bids",
        "200",
        "--repeat",
        "1",
        "--mode",
        mode,
        "--verify-workers",
        "1",
        "--bulk",
        str(bulk),
        "--json",
    ]
    # The embedded broker runs in this event loop, so the child must be awaited, not blocked on.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proofmarket", *args, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(120):
        out, _ = await process.communicate()
    assert 0 == process.returncode
    result = json.loads(out.decode().strip().splitlines()[-1])
    keys = ["bids", "bulk", "envelopes", "bytes", "coordinator_per_s"]
    keys += ["coordinator_envelopes_per_s", "bare_per_s", "ratio", "verify_workers", "mode"]
    assert keys == list(result)
    assert (200, bulk, 200 // bulk, 1, mode) == (
        result["bids"],
        result["bulk"],
        result["envelopes"],
        result["verify_workers"],
        result["mode"],
    )
    assert result["coordinator_per_s"] > 0 and result["bare_per_s"] > 0
    envelopes_per_s = result["coordinator_envelopes_per_s"]
    assert abs(result["coordinator_per_s"] / bulk - envelopes_per_s) < 0.2
    # the rates are rounded to 0.1/s and the ratio to 0.001, so compare within that
    assert abs(envelopes_per_s / result["bare_per_s"] - result["ratio"]) < 0.01
