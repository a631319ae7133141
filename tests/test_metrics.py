"""Metrics and health endpoints: the server on its own, a real coordinator process over a
real broker scraped and checked against its ledger, and health failing when deaf.

Waits for a health state change poll the endpoint (the only way an operator sees it),
each poll bounded and the whole wait bounded; no wait is a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
from conftest import RunningBroker
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from test_network_processes import QUICK, WAIT, LocalMarket, Proc, local_market

from deploy.testnet import TestnetConfig as NetConfig  # not a test class
from protocol.identity import Identity
from prover_node.service import ProverConfig, run_prover
from runtime.metrics import MetricsServer, ledger_check, parse_listen

POLL_S = 0.1
ROOMY = msgspec.structs.replace(QUICK, bid_window_ms=2500)
"""Bid windows wide enough that a loaded machine's bids all get in: these tests count."""


async def get(url: str) -> tuple[int, bytes]:
    """One HTTP GET: the status code and the body."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def wait_status(url: str, status: int) -> bytes:
    """Poll `url` until it answers `status` (bounded by WAIT); the body it answered."""
    async with asyncio.timeout(WAIT):
        while True:
            with contextlib.suppress(OSError):
                code, body = await get(url)
                if code == status:
                    return body
            await asyncio.sleep(POLL_S)  # the polling interval, not a synchronisation


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


# -- the server --------------------------------------------------------------------------


def test_listen_addresses_parse_and_bad_ones_are_refused() -> None:
    """HOST:PORT and [v6]:PORT parse; a value without a port is refused."""
    assert ("127.0.0.1", 9100) == parse_listen("127.0.0.1:9100")
    assert ("::1", 0) == parse_listen("[::1]:0")
    with pytest.raises(ValueError):
        parse_listen("localhost")


async def test_server_answers_metrics_health_and_nothing_else() -> None:
    """/metrics has the registry, /health is 503 naming a failing check, others are 404."""
    registry = CollectorRegistry()
    Counter("demo_things", "Things", registry=registry).inc(3)
    reasons: dict[str, str | None] = {"broker": None}
    checks = {"broker": lambda: reasons["broker"]}
    async with MetricsServer(registry, checks, "127.0.0.1", 0) as server:
        base = f"http://127.0.0.1:{server.port}"
        code, body = await get(f"{base}/metrics")
        assert (200, 3.0) == (code, samples(body)[("demo_things_total", ())])
        assert (200, b'{"ok": true, "checks": {"broker": "ok"}}\n') == await get(f"{base}/health")
        reasons["broker"] = "down"
        assert (503, b'{"ok": false, "checks": {"broker": "down"}}\n') == await get(
            f"{base}/health"
        )
        assert 404 == (await get(f"{base}/other"))[0]


def test_ledger_check_fails_once_the_file_is_gone_or_replaced(tmp_path: Path) -> None:
    """A ledger in place passes; replaced by another file, or removed, it fails saying so."""
    path, other = tmp_path / "ledger.sqlite", tmp_path / "other"
    path.write_bytes(b"x")
    other.write_bytes(b"y")  # made while the ledger exists: another inode for certain
    check = ledger_check(str(path))
    assert check() is None
    other.replace(path)
    assert f"ledger {path} was replaced by another file" == check()
    path.unlink()
    assert f"ledger {path} is gone: No such file or directory" == check()


# -- a real coordinator process ------------------------------------------------------------


async def start_coordinator(market: LocalMarket, rounds: int) -> tuple[Proc, str]:
    """A coordinator serving metrics on a free port; its process and base URL."""
    plan = market.plan
    proc = await market.spawn(
        "coordinator",
        *("coordinator", "--broker", market.url, "--key", str(plan.coordinator_key)),
        *("--market", str(plan.market_file), "--genesis", str(plan.genesis_file)),
        *("--ledger", str(plan.ledger), "--rounds", str(rounds)),
        *("--start-delay-ms", "300", "--metrics", "127.0.0.1:0"),
    )
    await market.wait_line([proc], "coordinator.started")
    line = proc.find("metrics.serving")
    assert line is not None
    return proc, str(line["url"]).removesuffix("/metrics")


def value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.broker
@pytest.mark.slow
async def test_scraped_counters_match_the_coordinators_ledger(
    mosquitto: RunningBroker, tmp_path: Path
) -> None:
    """Once the users' last round settled, the scrape agrees with the ledger's report."""
    config = NetConfig(provers=2, users=6, rounds=3, params=ROOMY)
    async with local_market(config, mosquitto.url, tmp_path) as market:
        await market.start_parties()
        coordinator, base = await start_coordinator(market, rounds=1000)
        for number in range(config.rounds):  # the users bid in these rounds only
            await market.wait_line([coordinator], "round.progress", round=number, phase="settled")
        code, body = await get(f"{base}/metrics")
        coordinator.process.terminate()
        await market.exit_code(coordinator)
        report = market.report()
    assert 200 == code
    scrape = samples(body)
    rounds = [r for r in report["rounds"] if r["round"] < config.rounds]
    traded = [r for r in rounds if r["allocated_tasks"]]
    assert traded, "no round traded: the prices below would say nothing"
    p = "proofmarket_coordinator_"
    assert 18 == sum(r["tasks_bid"] for r in rounds)
    assert 18.0 == value(scrape, f"{p}inputs_accepted_total", kind="task_bid")
    assert sum(r["allocated_tasks"] for r in rounds) == value(scrape, f"{p}tasks_allocated_total")
    assert sum(r["proofs_valid"] for r in rounds) == value(
        scrape, f"{p}proofs_total", verdict="valid"
    )
    assert (0.0, 0.0) == (
        value(scrape, f"{p}proofs_total", verdict="invalid"),
        value(scrape, f"{p}proofs_total", verdict="late"),
    )
    assert len(report["slashed"]) == value(scrape, f"{p}slashes_total") == 0
    assert (traded[-1]["user_price"], traded[-1]["prover_price"]) == (
        value(scrape, f"{p}clearing_price", side="user"),
        value(scrape, f"{p}clearing_price", side="prover"),
    )
    assert len(traded) == value(scrape, f"{p}round_phase_seconds_count", phase="prove")
    assert value(scrape, f"{p}round_phase_seconds_count", phase="bid") >= config.rounds
    assert value(scrape, f"{p}record_seconds_count") >= 1
    assert value(scrape, f"{p}verify_seconds_count") >= 1
    assert 1.0 == value(scrape, f"{p}broker_connected")


@pytest.mark.broker
@pytest.mark.slow
async def test_coordinator_health_fails_while_the_broker_is_down(
    mosquitto: RunningBroker, tmp_path: Path
) -> None:
    """Health is 200 while connected, 503 naming the broker once it stops, 200 again after."""
    config = NetConfig(provers=1, users=1, rounds=2, params=QUICK)
    async with local_market(config, mosquitto.url, tmp_path) as market:
        await market.start_parties()
        _, base = await start_coordinator(market, rounds=1000)
        assert b'"ok": true' in await wait_status(f"{base}/health", 200)
        await mosquitto.server.stop()
        body = await wait_status(f"{base}/health", 503)
        assert b'"broker": "broker connection down' in body
        assert b'"ledger": "ok"' in body
        await mosquitto.server.start()
        await wait_status(f"{base}/health", 200)


# -- a real prover node --------------------------------------------------------------------


@pytest.mark.broker
async def test_prover_serves_its_counters_and_health_follows_the_broker(
    mosquitto: RunningBroker, free_port: int
) -> None:
    """A prover's scrape has its core's counters; its health fails while the broker is down."""
    identity = Identity.generate()
    config = ProverConfig(
        broker=mosquitto.url,
        coordinator=Identity.generate().public_hex,
        market="nettest",
        capacity=3,
        cost=5,
        metrics=f"127.0.0.1:{free_port}",
    )
    base = f"http://127.0.0.1:{free_port}"
    stop = asyncio.Event()
    node = asyncio.create_task(run_prover(identity, config, stop=stop))
    try:
        await wait_status(f"{base}/health", 200)
        code, body = await get(f"{base}/metrics")
        scrape = samples(body)
        assert (200, 0.0, 0.0) == (
            code,
            value(scrape, "proofmarket_prover_rounds_bid_total"),
            value(scrape, "proofmarket_prover_slashes_total"),
        )
        assert 1.0 == value(scrape, "proofmarket_prover_broker_connected")
        await mosquitto.server.stop()
        assert b'"broker": "broker connection down' in await wait_status(f"{base}/health", 503)
        await mosquitto.server.start()
        await wait_status(f"{base}/health", 200)
    finally:
        stop.set()
        async with asyncio.timeout(WAIT):
            await node
