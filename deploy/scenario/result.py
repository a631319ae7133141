"""A scenario run's outcome, the honest-loss verdict, and expectations checked against it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from deploy.scenario.spec import PARTY_KEYS, Expectation, Scenario


@dataclass(slots=True)
class RunResult:
    """What one run produced: outcomes by round, money at the end, and what went wrong."""

    scenario: str
    mode: str  # "in-memory" or "broker"
    rounds: list[dict[str, object]]
    balances: dict[str, int]
    deposits: dict[str, int]
    problems: list[str] = field(default_factory=list)  # honest losses, unfinished rounds
    mismatches: list[str] = field(default_factory=list)  # failed expectations
    workdir: str | None = None  # over a broker: where the files and logs were kept

    @property
    def ok(self) -> bool:
        return not self.problems and not self.mismatches

    def as_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "ok": self.ok,
            "rounds": self.rounds,
            "balances": self.balances,
            "deposits": self.deposits,
            "problems": self.problems,
            "mismatches": self.mismatches,
            **({"workdir": self.workdir} if self.workdir else {}),
        }


def totals(rounds: list[dict[str, object]], kind: str) -> dict[str, int]:
    """A per-party sum (paid, charged, ...) over every round; `assigned` counts tasks."""
    out: dict[str, int] = {}
    for row in rounds:
        part = row.get(kind, {})
        assert isinstance(part, dict)
        for name, value in part.items():
            out[name] = out.get(name, 0) + (len(value) if kind == "assigned" else value)
    return out


def refused_codes(rounds: list[dict[str, object]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rounds:
        part = row.get("refused", {})
        assert isinstance(part, dict)
        for name, codes in part.items():
            out.setdefault(name, []).extend(codes)
    return {name: sorted(codes) for name, codes in out.items()}


def check(scenario: Scenario, result: RunResult) -> list[str]:
    """One line per expected value that differs: `where key: expected X, got Y`."""
    out = []
    for e in scenario.expectations:
        out.extend(_check_one(e, result))
    return out


def _check_one(e: Expectation, result: RunResult) -> list[str]:
    rows = result.rounds if e.round is None else [result.rounds[e.round]]
    label = f"{e.where} (round {e.round})" if e.round is not None else f"{e.where} (end)"
    actual: dict[str, Mapping[str, object]] = {k: totals(rows, k) for k in PARTY_KEYS}
    actual["balances"] = result.balances
    actual["deposits"] = result.deposits
    out = []
    for key, expected in e.figures.items():
        got = rows[0].get(key)
        if got != expected:
            out.append(f"{label} {key}: expected {_show(expected)}, got {_show(got)}")
    for kind, wanted in e.parties.items():
        for name, expected_value in wanted.items():
            got = actual[kind].get(name, 0)
            if got != expected_value:
                out.append(f"{label} {kind}.{name}: expected {expected_value}, got {got}")
    codes = refused_codes(rows)
    for name, expected_codes in e.refused.items():
        got_codes = codes.get(name, [])
        if list(expected_codes) != got_codes:
            out.append(f"{label} refused.{name}: expected {list(expected_codes)}, got {got_codes}")
    return out


def _show(value: object) -> str:
    return '"none"' if value is None else str(value)


def honest_problems(
    report: Mapping[str, object], honest: list[str], names: Mapping[str, str], rounds: int
) -> list[str]:
    """coordinator.report.honest_losses, with names for keys, plus unfinished rounds."""
    from coordinator.report import honest_losses

    problems = honest_losses(dict(report), honest, users_bid=False)
    for key, name in names.items():
        problems = [p.replace(key[:12], name) for p in problems]
    settled = [r for r in report.get("rounds", []) if isinstance(r, dict)]  # type: ignore[attr-defined]
    if len(settled) < rounds:
        problems.append(f"only {len(settled)} of {rounds} rounds cleared")
    return problems
