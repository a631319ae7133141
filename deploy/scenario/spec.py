"""A scenario file: a market's rules, its participants, events by round, and expectations.

The file is TOML (the format is documented in docs/scenarios.md). Loading checks every
key before anything runs; a bad file raises ScenarioError whose message is one line
naming the key and the problem.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from deploy.market import MarketFileError, market_from_dict
from protocol.messages import MarketParams

# The rules a scenario gets for keys its [market] table leaves out: tiny proofs and short
# windows, so a scenario over a real broker takes seconds, not minutes. The prove window
# is the shorter, so a round's prove deadline never coincides with the next round's bid
# deadline: which of two things due at the same millisecond comes first over a network
# is luck, and a scenario must play the same in memory and over a broker.
SCENARIO_MARKET: Final[dict[str, Any]] = {
    "market": "scenario",
    "difficulty": 1,
    "setup": 1,
    "bid_window_ms": 1500,
    "prove_window_ms": 1000,
}
FAULT_KINDS: Final = ("drop", "corrupt", "late")
EVENT_KINDS: Final = (
    *FAULT_KINDS,
    "offline",
    "join",
    "coordinator_restart",
    "broker_restart",
    "withdrawal",
    "faucet_grant",
)
STRATEGIES: Final = ("truthful", "random")
ROUND_KEYS: Final = (
    "tasks_bid",
    "provers_bid",
    "allocated_provers",
    "allocated_tasks",
    "user_price",
    "prover_price",
    "surplus",
)
PARTY_KEYS: Final = ("assigned", "paid", "slashed", "charged", "refunded", "released", "withdrawn")
END_KEYS: Final = ("balances", "deposits")
FAUCET: Final = "faucet"
SUBSIDY: Final = "subsidy"


class ScenarioError(ValueError):
    """A scenario file that cannot run; the message names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ProverSpec:
    """One prover: capacity per epoch, cost per round (or a strategy), starting deposit."""

    name: str
    capacities: tuple[int, ...]  # capacity declared in round r's epoch: the same rule
    costs: tuple[int, ...]  # cost bid in round r is costs[min(r, len - 1)]
    deposit: int
    strategy: str = "truthful"
    cost_range: tuple[int, int] = (1, 60)

    def cost(self, round: int) -> int:
        return self.costs[min(round, len(self.costs) - 1)]

    def capacity(self, round: int) -> int:
        return self.capacities[min(round, len(self.capacities) - 1)]


@dataclass(frozen=True, slots=True)
class UserSpec:
    """One user: the fees it bids in each round, or a generator that draws them."""

    name: str
    bids: Mapping[int, tuple[int, ...]]
    balance: int
    carry_over: bool = False
    generator_tasks: int = 0  # tasks per round drawn from fee_range, in rounds without bids
    fee_range: tuple[int, int] = (1, 100)


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happens when round `round` is announced.

    `party` names the prover or user concerned; `until` ends an offline spell (the party
    is back for round `until`); `to`, `account` and `amount` describe money moved.
    """

    round: int
    kind: str
    party: str | None = None
    until: int | None = None
    to: str | None = None
    account: str = "balance"
    amount: int = 0


@dataclass(frozen=True, slots=True)
class Expectation:
    """What must hold after round `round` settled, or at the end (`round` None).

    `figures` are the clearing's figures (ROUND_KEYS); `parties` maps a PARTY_KEYS or
    END_KEYS name to {participant: value}; `refused` maps a participant to its reject codes.
    """

    round: int | None
    figures: Mapping[str, int | None]
    parties: Mapping[str, Mapping[str, int]]
    refused: Mapping[str, tuple[str, ...]]
    where: str  # "expect[2]", for messages


@dataclass(frozen=True, slots=True)
class Scenario:
    """A checked scenario, ready for either runner."""

    name: str
    description: str
    rounds: int
    seed: int
    params: MarketParams
    market_names: Mapping[str, str]  # market keys whose value names a participant
    provers: tuple[ProverSpec, ...]
    users: tuple[UserSpec, ...]
    events: tuple[Event, ...]
    expectations: tuple[Expectation, ...]
    extra_parties: tuple[str, ...] = field(default=())  # faucet, subsidy: made by the runner

    @property
    def names(self) -> list[str]:
        return [*(p.name for p in self.provers), *(u.name for u in self.users)]

    def events_at(self, round: int) -> list[Event]:
        return [e for e in self.events if e.round == round]


_TOP: Final = ("name", "description", "rounds", "seed", "market", "provers", "users")
_TOP_ALL: Final = (*_TOP, "events", "expect")


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and check a scenario file."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ScenarioError(os.fspath(path), f"cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(os.fspath(path), f"not a TOML file: {exc}") from None
    default = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return parse_scenario(document, default_name=default)


def parse_scenario(document: Mapping[str, Any], *, default_name: str = "scenario") -> Scenario:
    """A checked scenario from a parsed TOML document."""
    _known(document, _TOP_ALL, "")
    rounds = _int(document, "rounds", "", low=1, default=1)
    seed = _int(document, "seed", "", low=0, default=1)
    market_table = _table(document, "market", "")
    provers_table = _table(document, "provers", "")
    users_table = _table(document, "users", "")
    names = [*provers_table, *users_table]
    for name in names:
        if names.count(name) > 1 or name in (FAUCET, SUBSIDY):
            raise ScenarioError(name, "a participant name must be unique and not faucet/subsidy")
    params, market_names = _market(market_table, set(names))
    provers = tuple(_prover(n, t, params) for n, t in _tables(provers_table, "provers").items())
    users = tuple(_user(n, t, params, rounds) for n, t in _tables(users_table, "users").items())
    if not provers and not users:
        raise ScenarioError("provers", "a scenario needs at least one participant")
    parties = {p.name: "prover" for p in provers} | {u.name: "user" for u in users}
    events = tuple(_event(i, e, parties, rounds) for i, e in enumerate(_list(document, "events")))
    expectations = tuple(
        _expectation(i, e, parties, rounds) for i, e in enumerate(_list(document, "expect"))
    )
    extra = [FAUCET] if any(e.kind == "faucet_grant" for e in events) else []
    if market_names.get("subsidy_account") == SUBSIDY:
        extra.append(SUBSIDY)
    return Scenario(
        name=_str(document, "name", "", default_name),
        description=_str(document, "description", "", ""),
        rounds=rounds,
        seed=seed,
        params=params,
        market_names=market_names,
        provers=provers,
        users=users,
        events=events,
        expectations=expectations,
        extra_parties=tuple(extra),
    )


# -- sections ----------------------------------------------------------------------------


def _market(table: Mapping[str, Any], names: set[str]) -> tuple[MarketParams, dict[str, str]]:
    """The market file's keys; a subsidy_account may name a participant instead of a key."""
    raw = dict(table)
    named = {}
    subsidy = raw.get("subsidy_account")
    if isinstance(subsidy, str) and subsidy in names:
        named["subsidy_account"] = subsidy
        raw["subsidy_account"] = "0" * 64  # a placeholder key; the runner puts the real one
    if raw.get("mechanism") == "vcg" and "subsidy_account" not in raw:
        raw["subsidy_account"] = "0" * 64
        named["subsidy_account"] = SUBSIDY
    try:
        params = market_from_dict(SCENARIO_MARKET | raw)
    except MarketFileError as exc:
        key = f"market.{exc.key}" if exc.key else "market"
        raise ScenarioError(key, str(exc).split(": ", 1)[-1]) from None
    return params, named


def _prover(name: str, t: Mapping[str, Any], params: MarketParams) -> ProverSpec:
    where = f"provers.{name}"
    _known(t, ("capacity", "cost", "strategy", "cost_range", "deposit"), where)
    capacities = _per_round(t, "capacity", where, low=1)
    strategy = _str(t, "strategy", where, "truthful")
    if strategy not in STRATEGIES:
        raise ScenarioError(f"{where}.strategy", f"one of {', '.join(STRATEGIES)}")
    if "cost" not in t and strategy == "truthful":
        raise ScenarioError(f"{where}.cost", "required (a number, or a list: one per round)")
    costs = _per_round(t, "cost", where, low=0) if "cost" in t else (0,)
    default_deposit = 2 * params.p_max * max(capacities) * params.capacity_factor
    return ProverSpec(
        name=name,
        capacities=capacities,
        costs=costs,
        deposit=_int(t, "deposit", where, low=0, default=default_deposit),
        strategy=strategy,
        cost_range=_pair(t, "cost_range", where, (1, params.p_max)),
    )


def _user(name: str, t: Mapping[str, Any], params: MarketParams, rounds: int) -> UserSpec:
    where = f"users.{name}"
    _known(t, ("bids", "balance", "carry_over", "generator"), where)
    bids = _bids(t.get("bids", {}), f"{where}.bids", rounds)
    generator = _table(t, "generator", where)
    _known(generator, ("tasks", "fee_range"), f"{where}.generator")
    tasks = _int(generator, "tasks", f"{where}.generator", low=0, default=0)
    if not bids and not tasks:
        raise ScenarioError(f"{where}.bids", "a user needs bids or a generator with tasks")
    carry = t.get("carry_over", False)
    if not isinstance(carry, bool):
        raise ScenarioError(f"{where}.carry_over", "true or false")
    total = sum(len(f) for f in bids.values()) + tasks * rounds
    return UserSpec(
        name=name,
        bids=bids,
        balance=_int(t, "balance", where, low=0, default=2 * params.p_max * max(1, total)),
        carry_over=carry,
        generator_tasks=tasks,
        fee_range=_pair(generator, "fee_range", f"{where}.generator", (1, params.p_max)),
    )


def _bids(raw: object, where: str, rounds: int) -> dict[int, tuple[int, ...]]:
    """Fees by round: a table {"0" = [10, 9]} or a list with one list of fees per round."""
    if isinstance(raw, list):
        items: list[tuple[str, object]] = [(str(i), fees) for i, fees in enumerate(raw)]
    elif isinstance(raw, dict):
        items = list(raw.items())
    else:
        raise ScenarioError(where, "a table of round = [fees] or a list of fee lists")
    out: dict[int, tuple[int, ...]] = {}
    for key, fees in items:
        if not key.isdigit() or int(key) >= rounds:
            raise ScenarioError(f"{where}.{key}", f"a round number from 0 to {rounds - 1}")
        if not isinstance(fees, list) or any(not _is_int(f) or f < 0 for f in fees):
            raise ScenarioError(f"{where}.{key}", "a list of non-negative integer fees")
        if fees:
            out[int(key)] = tuple(fees)
    return out


def _event(i: int, t: object, parties: Mapping[str, str], rounds: int) -> Event:
    where = f"events[{i}]"
    if not isinstance(t, dict):
        raise ScenarioError(where, "an event is a table")
    _known(t, ("round", "kind", "party", "until", "to", "account", "amount"), where)
    number = _int(t, "round", where, low=0)
    if number >= rounds:
        raise ScenarioError(f"{where}.round", f"the scenario has rounds 0 to {rounds - 1}")
    kind = _str(t, "kind", where, "")
    if kind not in EVENT_KINDS:
        raise ScenarioError(f"{where}.kind", f"one of {', '.join(EVENT_KINDS)}")
    party = t.get("party")
    needs_party = kind in (*FAULT_KINDS, "offline", "join", "withdrawal")
    if needs_party and party not in parties:
        raise ScenarioError(f"{where}.party", f"names a participant: {', '.join(parties)}")
    if kind in FAULT_KINDS and parties[str(party)] != "prover":
        raise ScenarioError(f"{where}.party", f"a {kind} fault needs a prover")
    to = t.get("to")
    if kind == "faucet_grant" and to not in parties:
        raise ScenarioError(f"{where}.to", f"names a participant: {', '.join(parties)}")
    until = _int(t, "until", where, low=number + 1, default=0) or None
    if kind == "offline" and until is None:
        raise ScenarioError(f"{where}.until", "the round the party is back (after `round`)")
    account = _str(t, "account", where, "balance")
    if account not in ("balance", "deposit"):
        raise ScenarioError(f"{where}.account", "balance or deposit")
    money = kind in ("withdrawal", "faucet_grant")
    amount = _int(t, "amount", where, low=1) if money else 0
    return Event(number, kind, party, until, to, account, amount)


def _expectation(i: int, t: object, parties: Mapping[str, str], rounds: int) -> Expectation:
    where = f"expect[{i}]"
    if not isinstance(t, dict):
        raise ScenarioError(where, "an expectation is a table")
    _known(t, ("round", *ROUND_KEYS, *PARTY_KEYS, *END_KEYS, "refused"), where)
    number = t.get("round")
    if number is not None and (not _is_int(number) or not 0 <= number < rounds):
        raise ScenarioError(f"{where}.round", f"a round from 0 to {rounds - 1}, or left out")
    figures: dict[str, int | None] = {}
    for key in ROUND_KEYS:
        if key in t:
            value = t[key]
            if value == "none":
                value = None  # TOML has no null: "none" says the round had no price
            if value is not None and (not _is_int(value) or value < 0):
                raise ScenarioError(f"{where}.{key}", 'a non-negative integer or "none"')
            figures[key] = value
    if figures and number is None:
        raise ScenarioError(f"{where}.{next(iter(figures))}", "a clearing figure needs a round")
    per_party: dict[str, dict[str, int]] = {}
    for key in (*PARTY_KEYS, *END_KEYS):
        if key in t:
            if key in END_KEYS and number is not None:
                raise ScenarioError(f"{where}.{key}", "balances are checked at the end: no round")
            per_party[key] = _amounts(t[key], f"{where}.{key}", parties)
    refused = _refused(t.get("refused", {}), f"{where}.refused", parties)
    return Expectation(number, figures, per_party, refused, where)


def _amounts(raw: object, where: str, parties: Mapping[str, str]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise ScenarioError(where, "a table of participant = amount")
    for name, value in raw.items():
        if name not in parties:
            raise ScenarioError(f"{where}.{name}", f"not a participant: {', '.join(parties)}")
        if not _is_int(value) or value < 0:
            raise ScenarioError(f"{where}.{name}", "a non-negative integer")
    return dict(raw)


def _refused(raw: object, where: str, parties: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise ScenarioError(where, 'a table of participant = ["code", ...]')
    out = {}
    for name, codes in raw.items():
        if name not in parties:
            raise ScenarioError(f"{where}.{name}", f"not a participant: {', '.join(parties)}")
        if not isinstance(codes, list) or any(not isinstance(c, str) for c in codes):
            raise ScenarioError(f"{where}.{name}", "a list of reject codes")
        out[name] = tuple(sorted(codes))
    return out


# -- small checks --------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _known(t: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in t:
        if key not in keys:
            raise ScenarioError(_join(where, key), f"unknown key; known: {', '.join(keys)}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _int(
    t: Mapping[str, Any], key: str, where: str, *, low: int, default: int | None = None
) -> int:
    if key not in t:
        if default is None:
            raise ScenarioError(_join(where, key), "required")
        return default
    value = t[key]
    if not _is_int(value) or value < low:
        raise ScenarioError(_join(where, key), f"an integer >= {low}, got {value!r}")
    return int(value)


def _per_round(t: Mapping[str, Any], key: str, where: str, *, low: int) -> tuple[int, ...]:
    """An integer, or a list of them: one per round, the last repeating."""
    if key not in t:
        raise ScenarioError(_join(where, key), "required (a number, or a list: one per round)")
    value = t[key]
    values = tuple(value) if isinstance(value, list) else (value,)
    if not values or any(not _is_int(v) or v < low for v in values):
        raise ScenarioError(_join(where, key), f"an integer >= {low} or a list of them")
    return values


def _str(t: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = t.get(key, default)
    if not isinstance(value, str):
        raise ScenarioError(_join(where, key), f"a string, got {value!r}")
    return value


def _pair(t: Mapping[str, Any], key: str, where: str, default: tuple[int, int]) -> tuple[int, int]:
    value = t.get(key, list(default))
    ok = isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)
    if not ok or not 0 <= value[0] <= value[1]:
        raise ScenarioError(_join(where, key), "[low, high] with 0 <= low <= high")
    return (value[0], value[1])


def _table(t: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = t.get(key, {})
    if not isinstance(value, dict):
        raise ScenarioError(_join(where, key), "a table")
    return value


def _tables(t: Mapping[str, Any], where: str) -> dict[str, Mapping[str, Any]]:
    for name, value in t.items():
        if not isinstance(value, dict):
            raise ScenarioError(f"{where}.{name}", "a table of this participant's keys")
    return dict(t)


def _list(t: Mapping[str, Any], key: str) -> list[object]:
    value = t.get(key, [])
    if not isinstance(value, list):
        raise ScenarioError(key, f"an array of tables ([[{key}]])")
    return value
