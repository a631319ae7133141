"""The market file: one TOML document with a market's rules.

Every key is optional and defaults to DEFAULT_MARKET's value, so an empty file is a
working market. Keys are the MarketParams field names, all at the top level::

    market = "zk-default"
    p_max = 100
    epoch_rounds = 10
    capacity_factor = 2
    mechanism = "prooph"
    difficulty = 100
    setup = 1000
    bid_window_ms = 1000
    prove_window_ms = 2000
    # mechanism parameters, each read by one mechanism (docs/mechanism.md):
    posted_price = 40         # posted: required there
    call_a_bps = 5000         # call-market: a = 0.5
    reserve_cost = 60         # prooph: a virtual prover of this cost (none by default)
    subsidy_account = "<64 hex>"  # vcg: required there; the balance that pays the deficit
    signed_ties = true        # unpredictable ties (docs/mechanism.md, "The tie rule")
    # failure handling (docs/market.md, "Failures"); the defaults keep none of it but
    # the reconnect grace after a prover's will (5000 ms: wills are acted on):
    late_grace_ms = 500       # a valid proof up to this late is taken, with a graded penalty
    rescue = true             # a failed batch's tasks are offered again in the next round
    suspend_after_failures = 2  # K: a prover that failed K ...
    suspend_window = 10         # ... of its last W batches may not bid for W rounds
    will_grace_ms = 5000      # a will while holding a batch fails it this much later

One table holds the coordinator's record-log settings, which are not market rules
(no other party sees them)::

    [ledger]
    snapshot_every = 2048   # records between snapshots of the coordinator's state
    retention = "keep"      # or "archive" (compressed segments beside the ledger) or "drop"
    audit_rounds = 86400    # rounds behind the newest snapshot that always stay live

Anything else (an unknown key, a wrong type, a value out of range, an unknown mechanism)
raises MarketFileError naming the key, before any service starts with bad rules.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from coordinator.record_log import SNAPSHOT_EVERY
from coordinator.retention import MODES, Retention
from protocol.mechanism import get_mechanism
from protocol.messages import FailureRules, MarketParams

# Defaults sized for a testnet on a 2-core machine: one sloth step costs about 0.2 ms in
# CPython, so a 16-task batch (setup 1000 + 16 x 100 steps) proves in about half a second
# and several provers finish well inside the prove window; a round takes about 3 s.
DEFAULT_MARKET: Final = MarketParams(
    market="zk-default",
    p_max=100,
    epoch_rounds=10,
    capacity_factor=2,
    mechanism="prooph",
    difficulty=100,
    setup=1000,
    bid_window_ms=1000,
    prove_window_ms=2000,
)

_FAILURE_KEYS: Final = FailureRules.__struct_fields__
# The failure rules travel as one nested `failures` map (protocol/messages.py says why),
# but a market file writes them as top-level keys like every other rule.
_FIELDS: Final = (
    *(f for f in MarketParams.__struct_fields__ if f != "failures"),
    *_FAILURE_KEYS,
)

_DESCRIPTIONS: Final = {
    "market": "market id, shared by every party of this market",
    "p_max": "highest fee a task may carry; refund per failed task; deposit per unit capacity",
    "epoch_rounds": "E: rounds per capacity-lock epoch",
    "capacity_factor": "m: a prover's capacity may change by at most this factor per epoch",
    "mechanism": "clearing mechanism",
    "difficulty": "sloth square roots per task (proving cost; verifying costs as many squarings)",
    "setup": "sloth steps a prover pays once per batch",
    "bid_window_ms": "how long a round takes bids",
    "prove_window_ms": "how long allocated provers have to deliver proofs",
    "posted_price": "posted: the price every trade is made at (required for posted)",
    "call_a_bps": "call-market: a in 1/10000; price = a*f_k + (1-a)*u_k",
    "reserve_cost": "prooph: cost of a virtual reserve prover that never trades",
    "subsidy_account": "vcg: the user key whose balance pays the deficit (required for vcg)",
    "signed_ties": "tie seed from the coordinator's signature, published as tie_proof",
    "late_grace_ms": "a valid proof this late is taken; its batch's penalty ramps to a slash",
    "rescue": "a failed batch's tasks are offered again in the next round, to other provers",
    "suspend_after_failures": "K: suspend a prover that failed K of its last W batches (0: never)",
    "suspend_window": "W: the batches counted, and the rounds a suspension lasts after the last",
    "will_grace_ms": "a will while its prover holds a batch fails the batch this much later,"
    " unless the prover is back online first",
}

_AT_KEY: Final = re.compile(r" - at `\$\.(?:failures\.)?(\w+)`$")


class MarketFileError(ValueError):
    """The market file is unreadable or holds a bad value; `key` names the culprit."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class LedgerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The market file's `[ledger]` table: how the coordinator keeps its record log."""

    snapshot_every: int = SNAPSHOT_EVERY
    retention: str = "keep"
    audit_rounds: int = 86_400

    def policy(self) -> Retention:
        return Retention(self.retention, self.audit_rounds)  # type: ignore[arg-type]


def ledger_from_dict(d: Mapping[str, Any]) -> LedgerSettings:
    """The record-log settings of a parsed market file (defaults without a `[ledger]`)."""
    table = d.get("ledger", {}) if isinstance(d, Mapping) else {}
    try:
        settings = msgspec.convert(table, LedgerSettings, strict=True)
    except msgspec.ValidationError as exc:
        raise MarketFileError(f"market file table [ledger]: {exc}", key="ledger") from None
    if settings.snapshot_every < 1 or settings.audit_rounds < 0:
        raise MarketFileError(
            "market file table [ledger]: snapshot_every must be >= 1, audit_rounds >= 0",
            key="ledger",
        )
    if settings.retention not in MODES:
        raise MarketFileError(
            f"market file key 'retention': one of {', '.join(MODES)}", key="retention"
        )
    return settings


def load_ledger_settings(path: str | os.PathLike[str]) -> LedgerSettings:
    """Read a market file's `[ledger]` table (its rules are checked by load_market)."""
    return ledger_from_dict(_read(path))


def market_from_dict(d: Mapping[str, Any]) -> MarketParams:
    """Market rules from a parsed market file: defaults for absent keys, all checked."""
    if not isinstance(d, Mapping):
        raise MarketFileError(f"a market file is a table of keys, not {type(d).__name__}")
    d = {k: v for k, v in d.items() if k != "ledger"}
    for key in d:
        if key not in _FIELDS:
            raise MarketFileError(
                f"unknown key {key!r} in market file; known keys: {', '.join(_FIELDS)}",
                key=str(key),
            )
    failures = {k: d.pop(k) for k in _FAILURE_KEYS if k in d}
    merged = msgspec.structs.asdict(DEFAULT_MARKET) | dict(d)
    if failures:
        merged["failures"] = failures
    try:
        params = msgspec.convert(merged, MarketParams, strict=True)
    except msgspec.ValidationError as exc:
        match = _AT_KEY.search(str(exc))
        bad_key = match.group(1) if match else None
        detail = _AT_KEY.sub("", str(exc))
        raise MarketFileError(f"market file key {bad_key!r}: {detail}", key=bad_key) from None
    # Checks the wire schema leaves to the market: a zero P_max would make every task
    # bid invalid, and a mechanism nobody implements could never clear a round.
    if params.p_max < 1:
        raise MarketFileError("market file key 'p_max': must be at least 1", key="p_max")
    try:
        get_mechanism(params.mechanism)
    except KeyError as exc:
        raise MarketFileError(
            f"market file key 'mechanism': {exc.args[0]}", key="mechanism"
        ) from None
    _check_mechanism_params(params)
    if params.failures == FailureRules():  # written out at their defaults: the same bytes
        params = msgspec.structs.replace(params, failures=None)
    _check_failure_rules(params)
    return params


def _check_failure_rules(params: MarketParams) -> None:
    """The failure rules' bounds the wire schema cannot state."""
    if params.late_grace_ms > params.bid_window_ms:
        # Longer, and the service's replay guard (sized by the prove window) would close
        # a round to proofs the grace still takes; a bid window of grace is plenty.
        raise MarketFileError(
            "market file key 'late_grace_ms': at most bid_window_ms", key="late_grace_ms"
        )
    if params.suspend_after_failures > params.suspend_window:
        raise MarketFileError(
            "market file key 'suspend_window': must be at least suspend_after_failures",
            key="suspend_window",
        )


def _check_mechanism_params(params: MarketParams) -> None:
    """The parameters a market's mechanism cannot run without."""
    if params.mechanism == "posted" and params.posted_price is None:
        raise MarketFileError(
            "market file key 'posted_price': the posted mechanism needs a price", key="posted_price"
        )
    if params.mechanism == "vcg" and params.subsidy_account is None:
        raise MarketFileError(
            "market file key 'subsidy_account': vcg runs a deficit and needs an account to pay it",
            key="subsidy_account",
        )


def load_market(path: str | os.PathLike[str]) -> MarketParams:
    """Read and check a market file."""
    document = _read(path)
    ledger_from_dict(document)  # a bad [ledger] table is refused with the rules
    return market_from_dict(document)


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise MarketFileError(f"cannot read market file {os.fspath(path)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MarketFileError(f"market file {os.fspath(path)!r} is not TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise MarketFileError(f"market file {os.fspath(path)!r} is not UTF-8: {exc}") from None
    except RecursionError:
        raise MarketFileError(
            f"market file {os.fspath(path)!r} nests deeper than any market file does"
        ) from None


def dump_market(params: MarketParams) -> str:
    """The market file text for `params`, with a comment per key; load_market reads it back."""
    lines = ["# proofmarket market file: every key is optional; a missing key takes its default."]
    for key in _FIELDS:
        value = getattr(params, key)
        # JSON string escapes are valid TOML basic-string escapes.
        text = json.dumps(value) if isinstance(value, str | bool) else str(value)
        lines.append(f"# {_DESCRIPTIONS[key]}")
        # TOML has no null: an unset parameter is written as a commented-out key.
        lines.append(f"# {key} = (unset)" if value is None else f"{key} = {text}")
    return "\n".join(lines) + "\n"


__all__ = [
    "DEFAULT_MARKET",
    "LedgerSettings",
    "MarketFileError",
    "dump_market",
    "ledger_from_dict",
    "load_ledger_settings",
    "load_market",
    "market_from_dict",
]
