"""The Python API for scripts and notebooks: a market you set up, run and read from code.

    import asyncio
    from proofmarket.api import Market

    async def main() -> None:
        async with Market(rounds=1, rules={"mechanism": "prooph"}) as market:
            market.add_prover("p1", capacity=4, cost=0)
            market.add_prover("p2", capacity=2, cost=1)
            market.add_prover("p3", capacity=2, cost=10)
            market.add_user("me")
            market.bid("me", 0, [10, 10, 10, 10, 9, 9, 1, 1])
            outcome = await market.round(0)
            print(outcome["user_price"], outcome["paid"], market.proofs("me"))

    if __name__ == "__main__":   # needed: provers prove in spawned worker processes
        asyncio.run(main())

`Market(broker=None)` runs in memory on a fake clock (the simulation harness: instant
and deterministic); `broker="embedded"` or an mqtt:// URL runs the real coordinator
process and every participant over a real broker. Either way the participants are the
scenario engine's (docs/scenarios.md): everything a scenario file says, a script can say
with these calls, and `Market.from_file` runs a scenario file.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from deploy.scenario import RunResult, Scenario, load_scenario, parse_scenario
from deploy.scenario.memory import MemoryRun
from deploy.scenario.network import BrokerRun

__all__ = ["Market", "MarketNotStarted", "RunResult", "quiet_logs", "run_scenario"]


def quiet_logs() -> None:
    """Log warnings and errors only: over a broker the participants run in this process
    and would otherwise log every bid and proof."""
    from runtime.process import configure_logging

    configure_logging(level="warning")


class MarketNotStarted(RuntimeError):
    """The call needs a running (or finished) market, or one not started yet."""


class Market:
    """One market: declare participants and bids, then wait on rounds and read them.

    Used as an async context manager: leaving the block plays the remaining rounds to the
    end, stops every process, and leaves the verdict in `result` (see RunResult).
    """

    def __init__(
        self,
        *,
        rounds: int,
        rules: dict[str, Any] | None = None,
        broker: str | None = None,
        seed: int = 1,
        workdir: str | os.PathLike[str] | None = None,
        name: str = "script",
    ) -> None:
        self._document: dict[str, Any] = {
            "name": name,
            "rounds": rounds,
            "seed": seed,
            "market": dict(rules or {}),
            "provers": {},
            "users": {},
            "events": [],
        }
        self.broker = broker
        self.workdir = Path(workdir) if workdir is not None else None
        self.scenario: Scenario | None = None
        self.result: RunResult | None = None
        self._run: MemoryRun | BrokerRun | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, broker: str | None = None) -> Market:
        """The market of a scenario file (its expectations are checked in `result`)."""
        market = cls(rounds=1, broker=broker)
        market.scenario = load_scenario(path)
        return market

    # -- before the start -------------------------------------------------------------

    def _declare(self) -> dict[str, Any]:
        if self.scenario is not None:
            raise MarketNotStarted("participants and events are declared before the start")
        return self._document

    def add_prover(self, name: str, *, capacity: int | list[int], cost: int | list[int]) -> None:
        """A prover with its capacity per epoch and cost per round (a list: one per round)."""
        self._declare()["provers"][name] = {"capacity": capacity, "cost": cost}

    def add_user(self, name: str, *, balance: int | None = None, carry_over: bool = False) -> None:
        """A user; its balance defaults to twice P_max per task bid before the start
        (give `balance` for a user that bids only once the market runs)."""
        user: dict[str, Any] = {"bids": {}, "carry_over": carry_over}
        if balance is not None:
            user["balance"] = balance
        self._declare()["users"][name] = user

    def event(self, round: int, kind: str, **fields: Any) -> None:
        """A scenario event, e.g. `event(1, "drop", party="p1")` (docs/scenarios.md)."""
        self._declare()["events"].append({"round": round, "kind": kind, **fields})

    def bid(self, user: str, round: int, fees: list[int]) -> None:
        """Task bids of `user` in `round`: before the start, or for a round still to open
        (`next_round()` or later)."""
        if self.scenario is None:
            users = self._document["users"]
            if user not in users:
                raise KeyError(f"no user {user!r}: add_user first")
            users[user]["bids"][str(round)] = list(fees)
            return
        run = self._started()
        if round <= run.observer.latest_round():
            raise ValueError(f"round {round} is already open or past")
        spec = next((u for u in self.scenario.users if u.name == user), None)
        if spec is None:
            raise KeyError(f"no user {user!r}")
        spec.bids[round] = tuple(fees)  # type: ignore[index]  # read at the announcement

    # -- running ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the market (the first `round()` does it if you do not)."""
        if self._run is not None:
            return
        if self.scenario is None:
            document = self._document
            self.scenario = parse_scenario(document, default_name=document["name"])
        self._run = (
            MemoryRun(self.scenario)
            if self.broker is None
            else BrokerRun(self.scenario, self.broker, self.workdir)
        )
        await self._run.start()

    def _started(self) -> MemoryRun | BrokerRun:
        if self._run is None:
            raise MarketNotStarted("the market has not started: await market.start()")
        return self._run

    async def round(self, number: int, *, timeout: float = 120.0) -> dict[str, object]:
        """Wait until round `number` has cleared and settled; its outcome (names, not keys)."""
        await self.start()
        run = self._started()
        settled = await run.until(lambda: run.observer.round_settled(number), timeout)
        if not settled:
            raise TimeoutError(f"round {number} did not settle within {timeout}s")
        return run.observer.outcome(number)

    def next_round(self) -> int:
        """The earliest round a `bid` can still go into (the market announces a round as
        the one before it clears)."""
        if self._run is None:
            return 0
        return self._run.observer.latest_round() + 1

    def proofs(self, user: str) -> dict[str, bytes]:
        """The verified proofs `user` received so far, by task (`user/round.index`)."""
        return dict(self._started().observer.proofs.get(user, {}))

    def balance(self, name: str) -> int:
        """A participant's spendable balance: live in memory; over a broker, at the end."""
        if self.result is not None:
            return self.result.balances[name]
        run = self._started()
        if isinstance(run, MemoryRun):
            return run.balance(name)
        raise MarketNotStarted("over a broker balances are read from the ledger at the end")

    async def finish(self) -> RunResult:
        """Play the remaining rounds, stop everything, and return the verdict."""
        await self.start()
        if self.result is None:
            self.result = await self._started().finish()
        return self.result

    async def __aenter__(self) -> Market:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            await self.finish()
        elif self._run is not None:
            await self._run.close()


async def run_scenario(path: str | os.PathLike[str], *, broker: str | None = None) -> RunResult:
    """Run a scenario file in memory (or over `broker`) and return its verdict."""
    market = Market.from_file(path, broker=broker)
    return await market.finish()
