"""A local market of separate OS processes over one broker, from keys to a settled report.

The launcher makes throwaway keys, a genesis and a market file, starts the broker
(embedded amqtt in this process unless a URL is given), then the prover and user
processes, waits until each has subscribed, and only then starts the coordinator, so no
party misses round 0. It follows the coordinator's JSON log for the live table, and at
the end reads the coordinator's ledger to report exactly what `proofmarket sim` reports
for an in-memory market.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from coordinator.report import honest_losses
from coordinator.service import CoordinatorConfig, summary_from_ledger
from coordinator.state import OpeningBalances
from deploy.broker import EmbeddedBroker, MosquittoBroker, mosquitto_binary
from deploy.genesis import MarketGenesis, dump_genesis
from deploy.market import DEFAULT_MARKET, dump_market, load_market
from protocol.identity import Identity
from protocol.messages import TASK_BIDS_MAX, MarketParams
from user_client.identities import fleet_identities

FAULTS = ("drop", "corrupt", "late")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


BASE_BID_WINDOW_MS = 1000
SEND_MS_PER_ENVELOPE = 3
"""What one user process takes to sign, seal and send an envelope of task bids on this
2-core machine (1,000 single bids took it 1.1 to 2.2 s beside a busy coordinator), with room."""
TASKS_PER_MS = 5
"""Task bids a bulk envelope adds per ms, from drawing them to the coordinator's receipt."""
EMBEDDED_MS_PER_BID = 10
"""What a single task bid's messages (bid, receipt, user receipt, settlement) cost the
embedded amqtt broker, which carries about 400 messages a second here; in a bulk the bid
and its receipt are shared, so a task costs half of that and each envelope the rest."""


class TestnetError(RuntimeError):
    """The testnet could not start, or a process it started failed."""


@dataclass(frozen=True, slots=True)
class TestnetConfig:
    """What to launch. Defaults give a lively market that settles within half a minute."""

    provers: int = 3
    users: int = 20
    rounds: int = 5
    broker: str = "embedded"
    faulty_provers: int = 0
    tasks_per_user: int = 1
    user_processes: int = 1
    prover_capacity: int | None = None  # every prover's; None: a spread of 3, 5 and 7
    seed: int = 1
    workdir: Path | None = None
    params: MarketParams = field(
        default_factory=lambda: msgspec.structs.replace(
            DEFAULT_MARKET,
            market="testnet",
            difficulty=40,
            setup=400,
            bid_window_ms=1000,
            prove_window_ms=2000,
            epoch_rounds=4,
        )
    )

    @property
    def bids_per_process(self) -> int:
        """Task bids each user process sends every round."""
        return -(-self.users * self.tasks_per_user // self.user_processes)

    @property
    def envelopes_per_process(self) -> int:
        """Envelopes each user process signs every round: one per identity and bulk."""
        identities = -(-self.users // self.user_processes)
        return identities * -(-self.tasks_per_user // TASK_BIDS_MAX)

    def bid_window_needed(self) -> int:
        """A bid window (ms) in which each user process gets its bids in, with room.

        The embedded broker carries a few hundred messages a second, so a testnet on it
        paces its rounds by what the broker can carry, not by the users.
        """
        if broker_kind(self.broker) == "embedded":
            if self.tasks_per_user == 1:
                return BASE_BID_WINDOW_MS + EMBEDDED_MS_PER_BID * self.users
            envelopes = self.envelopes_per_process * self.user_processes
            per_task = EMBEDDED_MS_PER_BID // 2
            return BASE_BID_WINDOW_MS + per_task * (envelopes + self.users * self.tasks_per_user)
        sending = SEND_MS_PER_ENVELOPE * self.envelopes_per_process
        if self.tasks_per_user > 1:
            sending += self.bids_per_process // TASKS_PER_MS
        return BASE_BID_WINDOW_MS + sending

    def sized(self) -> TestnetConfig:
        """This config with a bid window long enough for the load it launches."""
        window = max(self.params.bid_window_ms, self.bid_window_needed())
        params = msgspec.structs.replace(self.params, bid_window_ms=window)
        return dataclasses.replace(self, params=params)

    def window_warnings(self) -> list[str]:
        """What the market's windows will not fit, for a testnet whose windows were chosen."""
        needed = self.bid_window_needed()
        if self.params.bid_window_ms >= needed:
            return []
        return [
            f"bid window {self.params.bid_window_ms} ms is short for {self.bids_per_process} "
            f"bids per user process (about {needed} ms); raise bid_window_ms in the market "
            "file or add --user-processes"
        ]

    def check(self) -> None:
        if self.provers < 1 or self.users < 1 or self.rounds < 1:
            raise TestnetError("a testnet needs at least one prover, one user and one round")
        if not 0 <= self.faulty_provers <= self.provers:
            raise TestnetError("--faulty-provers must be between 0 and --provers")
        if not 1 <= self.user_processes <= self.users:
            raise TestnetError("user processes must be between 1 and the number of users")


@dataclass(frozen=True, slots=True)
class ProverPlan:
    name: str
    key_file: Path
    public: str
    capacity: int
    cost: int
    fault: str


@dataclass(frozen=True, slots=True)
class UserPlan:
    name: str
    key_file: Path
    identities: list[str]


@dataclass(frozen=True, slots=True)
class Plan:
    """Every file and party of one testnet, written to `workdir`."""

    workdir: Path
    coordinator_key: Path
    coordinator: str
    market_file: Path
    genesis_file: Path
    ledger: Path
    genesis: OpeningBalances
    provers: list[ProverPlan]
    users: list[UserPlan]


def make_plan(config: TestnetConfig, workdir: Path) -> Plan:
    """Keys, genesis and market file for `config`: funded so nobody runs short."""
    config.check()
    params = config.params
    workdir.mkdir(parents=True, exist_ok=True)

    def new_key(name: str) -> tuple[Path, Identity]:
        path = workdir / f"{name}.key"
        identity = Identity.generate()
        identity.save(path, overwrite=True)
        return path, identity

    coordinator_key, coordinator = new_key("coordinator")
    provers = []
    for i in range(config.provers):
        path, identity = new_key(f"prover-{i}")
        # A spread of capacities and costs, so clearing has a real supply curve.
        capacity = config.prover_capacity or 3 + (i % 3) * 2
        cost = 5 + (17 * i) % max(1, params.p_max // 2)
        fault = FAULTS[i % len(FAULTS)] if i < config.faulty_provers else "none"
        provers.append(ProverPlan(f"prover-{i}", path, identity.public_hex, capacity, cost, fault))
    users = []
    shares = [config.users // config.user_processes] * config.user_processes
    for i in range(config.users % config.user_processes):
        shares[i] += 1
    for i, count in enumerate(shares):
        path, identity = new_key(f"user-{i}")
        keys = [u.public_hex for u in fleet_identities(identity, count)]
        users.append(UserPlan(f"user-{i}", path, keys))
    # Users can pay P_max on every bid of every round; provers can lock P_max x capacity
    # through an epoch change by the factor m, twice over.
    balance = params.p_max * config.tasks_per_user * (config.rounds + 1)
    balances = {key: balance for u in users for key in u.identities}
    if params.mechanism == "vcg" and params.subsidy_account is None:
        # VCG's deficit is paid from this account: enough for every fee of every round twice.
        _, subsidy = new_key("subsidy")
        params = msgspec.structs.replace(params, subsidy_account=subsidy.public_hex)
        balances[subsidy.public_hex] = 2 * balance * len(balances)
    genesis = OpeningBalances(
        balances=balances,
        deposits={
            p.public: 2 * params.p_max * p.capacity * params.capacity_factor for p in provers
        },
    )
    market_file = workdir / "market.toml"
    market_file.write_text(dump_market(params))
    genesis_file = workdir / "genesis.json"
    genesis_file.write_text(
        dump_genesis(
            MarketGenesis(
                market=params.market,
                coordinator=coordinator.public_hex,
                provers=genesis.deposits,
                users=genesis.balances,
            )
        )
    )
    return Plan(
        workdir,
        coordinator_key,
        coordinator.public_hex,
        market_file,
        genesis_file,
        workdir / "ledger.sqlite",
        genesis,
        provers,
        users,
    )


@dataclass
class Child:
    """One OS process of the testnet, its JSON log followed line by line."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "proofmarket", *args]


async def _spawn(
    name: str,
    args: list[str],
    workdir: Path,
    ready_event: str | None,
    on_line: Callable[[dict[str, object]], None] | None = None,
) -> Child:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C at the terminal reaches the launcher only
    )
    child = Child(name, process, workdir / f"{name}.log")

    async def follow() -> None:
        assert process.stderr is not None
        with child.log_path.open("wb") as log:
            async for line in process.stderr:
                log.write(line)
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict):
                    continue
                if entry.get("event") == ready_event:
                    child.ready.set()
                if on_line is not None:
                    on_line(entry)

    child.reader = asyncio.create_task(follow(), name=f"testnet:{name}")
    return child


async def _stop(children: list[Child]) -> None:
    """SIGTERM everyone still running; SIGKILL whoever does not leave in time."""
    for child in children:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    for child in children:
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await child.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            await child.process.wait()
        if child.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await child.reader


def broker_kind(url: str) -> str:
    """What `url` names: 'mosquitto' or 'embedded' (started here), or 'url' (given)."""
    if url == "auto":
        return "mosquitto" if mosquitto_binary() is not None else "embedded"
    return url if url in ("embedded", "mosquitto") else "url"


@contextlib.asynccontextmanager
async def _broker(url: str) -> AsyncIterator[str]:
    kind = broker_kind(url)
    if kind == "url":
        yield url
    elif kind == "mosquitto":
        async with MosquittoBroker() as mosquitto:
            yield mosquitto.url
    else:
        async with EmbeddedBroker() as embedded:
            yield embedded.url


@dataclass
class Progress:
    """The live view: one row per round, folded from the coordinator's log."""

    rows: dict[int, dict[str, object]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_line(self, entry: dict[str, object]) -> None:
        if entry.get("event") == "round.progress" and isinstance(entry.get("round"), int):
            number = entry["round"]
            assert isinstance(number, int)
            self.rows[number] = {k: v for k, v in entry.items() if k not in _LOG_KEYS}
            self.changed.set()


_LOG_KEYS = frozenset({"event", "level", "timestamp", "market", "logger"})


async def run_testnet(
    config: TestnetConfig,
    *,
    progress: Progress | None = None,
    on_started: Callable[[Plan], None] | None = None,
) -> dict[str, object]:
    """Launch, run `config.rounds` rounds, stop everything; the market report plus wall time."""
    config.check()
    started = time.monotonic()
    progress = progress or Progress()
    # A throwaway directory is removed after a clean run and kept, with every process's
    # log, after a failed one.
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="proofmarket-testnet-"))
    ok = False
    try:
        plan = make_plan(config, workdir)
        children: list[Child] = []
        async with _broker(config.broker) as url:
            try:
                coordinator = await _launch(config, plan, url, children, progress)
                if on_started is not None:
                    on_started(plan)
                budget = config.rounds * (
                    config.params.bid_window_ms + config.params.prove_window_ms
                )
                try:
                    async with asyncio.timeout(budget / 1000 + READY_TIMEOUT_S):
                        await coordinator.process.wait()
                except TimeoutError:
                    raise TestnetError(
                        "the coordinator did not finish its rounds in time"
                    ) from None
            finally:
                await _stop(children)
        report = summary_from_ledger(
            CoordinatorConfig(
                broker=url,
                params=load_market(plan.market_file),  # the plan's (vcg: with its subsidy)
                genesis=plan.genesis,
                ledger=str(plan.ledger),
                rounds=config.rounds,
            ),
            plan.coordinator,
            Identity.load(plan.coordinator_key).sign,  # signed ties replay with the key
        )
        settled = [r for r in report["rounds"] if isinstance(r, dict)]  # type: ignore[attr-defined]
        report["all_rounds_settled"] = (
            bool(report.get("finished")) and len(settled) == config.rounds
        )
        report["processes"] = {c.name: c.process.returncode for c in children}
        report["wall_s"] = round(time.monotonic() - started, 3)
        honest = [p.public for p in plan.provers if p.fault == "none"]
        problems = honest_losses(report, honest)
        if not report["all_rounds_settled"]:
            problems.insert(0, "not every round settled")
        crashed = {name: code for name, code in report["processes"].items() if code != 0}  # type: ignore[attr-defined]
        if crashed:
            problems.append(f"processes exited badly: {crashed}")
        report["problems"] = problems
        report["ok"] = ok = not problems
        if config.workdir is not None or not ok:
            report["workdir"] = str(workdir)
    finally:
        if config.workdir is None and ok:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


async def _launch(
    config: TestnetConfig, plan: Plan, url: str, children: list[Child], progress: Progress
) -> Child:
    """Start provers and users, wait until all listen, then start the coordinator."""
    common = ["--broker", url, "--coordinator", plan.coordinator, "--market", config.params.market]
    logging = ["--log-format", "json"]
    for p in plan.provers:
        args = [*common, "--key", str(p.key_file), "--capacity", str(p.capacity)]
        args += ["--cost", str(p.cost), "--fault", p.fault, *logging]
        children.append(
            await _spawn(p.name, _command("prover", *args), plan.workdir, "prover.started")
        )
    for i, u in enumerate(plan.users):
        args = [*common, "--key", str(u.key_file), "--tasks", str(config.tasks_per_user)]
        args += ["--fee-range", f"1:{config.params.p_max}", "--identities", str(len(u.identities))]
        args += ["--rounds", str(config.rounds), "--seed", str(config.seed * 1000 + i), *logging]
        children.append(await _spawn(u.name, _command("user", *args), plan.workdir, "user.started"))
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await _ready_or_dead(children)
    except TimeoutError:
        late = [c.name for c in children if not c.ready.is_set()]
        raise TestnetError(f"not ready within {READY_TIMEOUT_S:.0f}s: {', '.join(late)}") from None
    args = ["--broker", url, "--key", str(plan.coordinator_key), "--market", str(plan.market_file)]
    args += ["--genesis", str(plan.genesis_file), "--ledger", str(plan.ledger)]
    args += ["--rounds", str(config.rounds), "--start-delay-ms", "300", *logging]
    coordinator = await _spawn(
        "coordinator",
        _command("coordinator", *args),
        plan.workdir,
        "coordinator.started",
        progress.on_line,
    )
    children.append(coordinator)
    return coordinator


async def _ready_or_dead(children: list[Child]) -> None:
    """Return when every child is ready; raise as soon as one exits instead."""
    for child in children:
        ready = asyncio.create_task(child.ready.wait())
        died = asyncio.create_task(child.process.wait())
        done, pending = await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if ready not in done:
            raise TestnetError(
                f"{child.name} exited with {child.process.returncode} before it was ready; "
                f"see {child.log_path}"
            )
