"""A scenario over a real broker: the coordinator a real OS process, every message real
MQTT with real signatures and encryption.

The coordinator runs as `proofmarket coordinator` (launched with deploy/testnet.py's
machinery) on a ledger file, so a `coordinator_restart` event is a SIGKILL and a fresh
process that resumes from that ledger. The scripted participants are the same pure
cores as in memory, each behind the real prover or user service with a broker
connection of its own, in this process (one process per participant would only add
start-up time: the wire between them and the coordinator is what is under test). With
`broker = "embedded"` the broker is amqtt in a child process (`python -m deploy.broker`),
so a `broker_restart` event stops and starts it on the same port; a broker given by URL
cannot be restarted from here and such a scenario is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from coordinator.core import Coordinator
from coordinator.record_log import RecordLog, fold, read_meta
from coordinator.report import RoundTally, market_report
from coordinator.store import SqliteStore
from deploy.broker import free_port
from deploy.genesis import MarketGenesis, dump_genesis
from deploy.market import dump_market
from deploy.scenario.observe import Observer
from deploy.scenario.parties import ScriptedProver, ScriptedUser, make_parties
from deploy.scenario.plan import COORDINATOR, ScenarioPlan, make_plan
from deploy.scenario.result import RunResult, check, honest_problems
from deploy.scenario.spec import SUBSIDY, Scenario, ScenarioError
from deploy.testnet import Child, _command, _spawn, _stop
from protocol import topics
from protocol.wire import Wire
from prover_node.proving import warm_up
from prover_node.service import ProverService
from runtime.bus import Bus
from runtime.process import wall_ms
from user_client.core import UserFleet
from user_client.service import UserService

READY_S = 60.0  # a process start on a busy machine
SETTLE_S = 15.0  # after the coordinator exits, for the last notices to arrive


class BrokerProcess:
    """amqtt in a child process on a fixed port, so it can be restarted like a real one."""

    def __init__(self) -> None:
        self.port = free_port("127.0.0.1")
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "deploy.broker", "--port", str(self.port),
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.process.stdout is not None
        async with asyncio.timeout(READY_S):
            line = await self.process.stdout.readline()
        if not line.startswith(b"ready "):
            raise RuntimeError(f"the embedded broker did not start: {line!r}")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(READY_S):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@contextlib.asynccontextmanager
async def broker_for(url: str) -> AsyncIterator[BrokerProcess | str]:
    """`embedded`: a restartable broker process; anything else: that URL as given."""
    if url != "embedded":
        yield url
        return
    process = BrokerProcess()
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


class NetworkRun:
    """One scenario run over a broker: files, parties, coordinator process, events."""

    def __init__(self, plan: ScenarioPlan, url: str, workdir: Path) -> None:
        self.plan = plan
        self.url = url
        self.workdir = workdir
        self.changed = asyncio.Event()
        self.observer = Observer(plan.names, on_change=self.changed.set)
        self.parties = make_parties(
            plan.scenario, plan.keys, plan.coordinator.public_hex, self.observer
        )
        self.children: list[Child] = []
        self.stop = asyncio.Event()
        self._args = self._write_files()

    def _write_files(self) -> list[str]:
        plan, workdir = self.plan, self.workdir
        key_file = workdir / "coordinator.key"
        plan.coordinator.save(key_file, overwrite=True)
        (workdir / "market.toml").write_text(dump_market(plan.params))
        genesis = MarketGenesis(
            market=plan.params.market,
            coordinator=plan.coordinator.public_hex,
            provers=plan.genesis.deposits,
            users=plan.genesis.balances,
            faucet=plan.genesis.faucet,
        )
        (workdir / "genesis.json").write_text(dump_genesis(genesis))
        args = ["coordinator", "--broker", self.url, "--key", str(key_file)]
        args += [
            "--market",
            str(workdir / "market.toml"),
            "--genesis",
            str(workdir / "genesis.json"),
        ]
        args += ["--ledger", str(self.ledger), "--rounds", str(plan.scenario.rounds)]
        # Signatures checked inline (a scenario's few bids need no worker process to start
        # while round 0 runs), and a second for start-up work before round 0 opens.
        args += ["--verify-workers", "0", "--start-delay-ms", "1000"]
        return [*args, "--log-format", "json"]

    @property
    def ledger(self) -> Path:
        return self.workdir / "ledger.sqlite"

    async def start_coordinator(self, name: str) -> Child:
        child = await _spawn(name, _command(*self._args), self.workdir, "coordinator.started")
        self.children.append(child)
        return child

    async def serve(
        self, stack: contextlib.AsyncExitStack, pool: ProcessPoolExecutor
    ) -> list[asyncio.Task[None]]:
        """Connect and subscribe every participant; their services run as tasks."""
        tasks = []
        for name, party in self.parties.items():
            if name == SUBSIDY:
                continue  # it only pays VCG's deficit: it never sends or reads a message
            identity = self.plan.identities[name]
            wire = Wire(identity, coordinator=party.coordinator, market=party.market)
            bus = await stack.enter_async_context(
                Bus(self.url, client_id=identity.public_hex, username=identity.public_hex)
            )
            if isinstance(party, ScriptedProver):
                await bus.subscribe(*wire.subscriptions())
                service = ProverService(party, bus, wire, pool, clock=wall_ms)
                tasks.append(asyncio.create_task(service.run(self.stop), name=f"scenario:{name}"))
            else:
                key = identity.public_hex
                await bus.subscribe(topics.outbox(party.market, key), topics.public(party.market))
                tasks.append(self._user(name, party, key, wire, bus))
        return tasks

    def _user(
        self, name: str, party: ScriptedUser, key: str, wire: Wire, bus: Bus
    ) -> asyncio.Task[None]:
        fleet = UserFleet([key], party.coordinator, party.market, party.rng, 0, (0, 0))
        fleet.users[key] = party
        service = UserService(fleet, wire, {key: bus}, grace_ms=0, concurrency=16)
        return asyncio.create_task(service.run(self.stop), name=f"scenario:{name}")

    async def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until `done()` holds, waking on every observed message; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True


class BrokerRun:
    """A scenario over a broker, started and finished in two steps (the Python API waits
    on rounds in between); `run_on_broker` does both."""

    def __init__(self, scenario: Scenario, broker: str = "embedded", workdir: Path | None = None):
        if broker != "embedded" and any(e.kind == "broker_restart" for e in scenario.events):
            raise ScenarioError("events", "a broker_restart needs --broker embedded")
        self.plan = make_plan(scenario)
        self.broker = broker
        self.keep = workdir is not None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="proofmarket-scenario-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._events: asyncio.Task[Child] | None = None
        self.pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        self.run: NetworkRun | None = None

    @property
    def observer(self) -> Observer:
        assert self.run is not None, "start() first"
        return self.run.observer

    async def start(self) -> None:
        """Broker, participants connected and listening, then the coordinator process."""
        server = await self._stack.enter_async_context(broker_for(self.broker))
        url = server if isinstance(server, str) else server.url
        self.run = run = NetworkRun(self.plan, url, self.workdir)
        loop = asyncio.get_running_loop()
        # Start the workers before any prover listens: a prover warming up its pool after
        # the first announcement would bid late.
        await asyncio.gather(*(loop.run_in_executor(self.pool, warm_up) for _ in range(2)))
        self._tasks = await run.serve(self._stack, self.pool)
        coordinator = await run.start_coordinator("coordinator")
        self._events = asyncio.create_task(_events(run, server, coordinator))

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        assert self.run is not None, "start() first"
        return await self.run.wait_for(done, timeout)

    async def finish(self) -> RunResult:
        """Wait for the last round to settle, stop everything, and judge the run."""
        assert self.run is not None and self._events is not None, "start() first"
        run, scenario = self.run, self.plan.scenario
        problems: list[str] = []
        try:
            coordinator = await self._events
            rules = scenario.params
            budget = scenario.rounds * (rules.bid_window_ms + rules.prove_window_ms) / 1000
            try:
                async with asyncio.timeout(budget + READY_S):
                    await coordinator.process.wait()
            except TimeoutError:
                problems.append("the coordinator did not finish its rounds in time")
            if not await run.wait_for(lambda: run.observer.settled(scenario.rounds), SETTLE_S):
                problems.append("not every round's settlements reached its participants")
        finally:
            await self.close()
        codes = {c.name: c.process.returncode for c in run.children}
        bad = {name: code for name, code in codes.items() if code not in (0, -signal.SIGKILL)}
        if bad:
            problems.append(f"processes exited badly: {bad} (logs in {self.workdir})")
        result = _result(self.plan, run, problems)
        if result.ok and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            result.workdir = str(self.workdir)  # kept: the coordinator's logs, the ledger
        return result

    async def close(self) -> None:
        """Stop every process and participant (idempotent)."""
        if self.run is not None:
            self.run.stop.set()
            await _stop(self.run.children)
        if self._events is not None and not self._events.done():
            self._events.cancel()
        await asyncio.gather(
            *self._tasks, *([self._events] if self._events else []), return_exceptions=True
        )
        self._tasks = []
        await self._stack.aclose()
        self.pool.shutdown(wait=False, cancel_futures=True)


async def run_on_broker(
    scenario: Scenario, broker: str = "embedded", *, workdir: Path | None = None
) -> RunResult:
    """Play `scenario` over a real broker and check its expectations."""
    run = BrokerRun(scenario, broker, workdir)
    try:
        await run.start()
    except BaseException:
        await run.close()
        raise
    return await run.finish()


async def _events(run: NetworkRun, server: BrokerProcess | str, coordinator: Child) -> Child:
    """Carry out coordinator and broker restarts when their rounds are announced."""
    pending = sorted(
        (e.round, e.kind)
        for e in run.plan.scenario.events
        if e.kind in ("coordinator_restart", "broker_restart")
    )
    for number, kind in pending:
        announced = await run.wait_for(
            lambda n=number: run.observer.latest_round() >= n,  # type: ignore[misc]
            READY_S * 2,
        )
        if not announced or coordinator.process.returncode is not None:
            break
        # Halfway through the round's bid window: its bids are in and recorded by then,
        # and so are the proofs of the round before when the prove window is the shorter.
        # At the announcement itself a restart would race the bids and assignments that
        # go out with it: the recovery work's subject, not what the scenario asks for.
        await asyncio.sleep(run.plan.params.bid_window_ms / 2000)
        if kind == "coordinator_restart":
            with contextlib.suppress(ProcessLookupError):
                coordinator.process.send_signal(signal.SIGKILL)
            await coordinator.process.wait()
            coordinator = await run.start_coordinator(f"coordinator-{number}")
        elif isinstance(server, BrokerProcess):
            await server.restart()
    return coordinator


def _result(plan: ScenarioPlan, run: NetworkRun, problems: list[str]) -> RunResult:
    scenario = plan.scenario
    core, report = _fold_ledger(plan, run.ledger)
    names = {k: n for k, n in plan.names.items() if n != COORDINATOR}
    result = RunResult(
        scenario=scenario.name,
        mode="broker",
        rounds=run.observer.outcomes(scenario.rounds),
        balances={n: core.balance(k) for k, n in names.items()},
        deposits={p.name: core.deposit(plan.keys[p.name]) for p in scenario.provers},
        problems=[*problems, *honest_problems(report, plan.honest_provers, names, scenario.rounds)],
    )
    result.mismatches = check(scenario, result)
    return result


def _fold_ledger(plan: ScenarioPlan, ledger: Path) -> tuple[Coordinator, dict[str, object]]:
    """The coordinator rebuilt from its ledger, and the market report of the whole log."""
    meta = read_meta(str(ledger))
    log = RecordLog(SqliteStore(str(ledger)), meta)
    tally = RoundTally()
    signer = plan.coordinator.sign if plan.params.signed_ties else None
    try:
        folded = fold(
            log, rounds=plan.scenario.rounds, use_snapshot=False, observe=tally.note,
            keep_tail=False, tie_signer=signer,
        )  # fmt: skip
    finally:
        log.close()
    report = market_report(folded.core, tally)
    report["finished"] = folded.core.finished
    return folded.core, report
