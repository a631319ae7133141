"""Every reject code that can reach the wire, defined once, with what it means.

A code is part of the wire contract: it goes into `Reject.code` and into structured logs,
clients and dashboards key on it, and it never changes. Two families share the one
namespace: protocol codes (the envelope, the topic, the replay guard, the service's
intake) and market codes (the coordinator core's rules, docs/market.md). docs/protocol.md
lists every code; `tests/test_rejects.py` holds the two to each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class RejectCode(StrEnum):
    """A stable reject code; a member compares equal to its wire string."""

    # -- protocol: opening and admitting an envelope --------------------------------------
    TOO_LARGE = "too_large"
    BAD_ENCODING = "bad_encoding"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_KIND = "unknown_kind"
    WRONG_KIND = "wrong_kind"
    WRONG_MODE = "wrong_mode"
    WRONG_MARKET = "wrong_market"
    WRONG_RECIPIENT = "wrong_recipient"
    WRONG_SENDER = "wrong_sender"
    BAD_PUBLIC_KEY = "bad_public_key"
    BAD_CIPHERTEXT = "bad_ciphertext"
    BAD_SIGNATURE = "bad_signature"
    REPLAY = "replay"
    CLOSED_ROUND = "closed_round"
    FUTURE_ROUND = "future_round"
    OVER_CAPACITY = "over_capacity"
    BAD_TOPIC = "bad_topic"
    OVERLOADED = "overloaded"
    # -- market rules: the coordinator core ----------------------------------------------
    UNEXPECTED_MESSAGE = "unexpected_message"
    WRONG_ROUND = "wrong_round"
    LATE_BID = "late_bid"
    WRONG_EPOCH = "wrong_epoch"
    CAPACITY_NOT_DECLARED = "capacity_not_declared"
    CAPACITY_LOCKED = "capacity_locked"
    CAPACITY_CHANGE_TOO_LARGE = "capacity_change_too_large"
    INSUFFICIENT_DEPOSIT = "insufficient_deposit"
    COST_ABOVE_P_MAX = "cost_above_p_max"
    DUPLICATE_BID = "duplicate_bid"
    FEE_ABOVE_P_MAX = "fee_above_p_max"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    DUPLICATE_TASK = "duplicate_task"
    NOT_ASSIGNED = "not_assigned"
    LATE_PROOF = "late_proof"
    PROVER_BUSY = "prover_busy"
    INVALID_AMOUNT = "invalid_amount"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    DEPOSIT_LOCKED = "deposit_locked"
    NOT_FAUCET = "not_faucet"
    DUPLICATE_GRANT = "duplicate_grant"
    PROVER_SUSPENDED = "prover_suspended"
    RESCUE_EXCLUDED = "rescue_excluded"
    PROVER_OFFLINE = "prover_offline"
    TOO_MANY_QUERIES = "too_many_queries"


C = RejectCode
MEANINGS: Final[Mapping[RejectCode, str]] = MappingProxyType(
    {
        C.TOO_LARGE: "envelope over the size limit",
        C.BAD_ENCODING: "not a well-formed envelope, or the body does not fit its schema",
        C.UNKNOWN_VERSION: "envelope version or body schema version not supported",
        C.UNKNOWN_KIND: "the header names no known kind",
        C.WRONG_KIND: "the body's kind differs from the header's",
        C.WRONG_MODE: "a private kind sent public, or a public kind sealed",
        C.WRONG_MARKET: "envelope or body for another market",
        C.WRONG_RECIPIENT: "sealed to another party",
        C.WRONG_SENDER: "the signer is not the party named by the topic",
        C.BAD_PUBLIC_KEY: "a key that is malformed or not a valid Ed25519 point",
        C.BAD_CIPHERTEXT: "the sealed part failed authenticated decryption",
        C.BAD_SIGNATURE: "the signature does not verify",
        C.REPLAY: "this envelope was already accepted in this round (or a will already taken)",
        C.CLOSED_ROUND: "the message is for a round that is closed",
        C.FUTURE_ROUND: "the message is for a round too far ahead",
        C.OVER_CAPACITY: "the replay guard's memory bound is reached; retry in a later round",
        C.BAD_TOPIC: "not a protocol topic",
        C.OVERLOADED: "the coordinator's inbox was full: the envelope was not read; send again",
        C.UNEXPECTED_MESSAGE: "a kind the coordinator does not take (receipts, results, ...)",
        C.WRONG_ROUND: (
            "a bid for a round not open yet, or a withdrawal or status query naming another round"
        ),
        C.LATE_BID: "a bid after its round's bid deadline, or for a round already cleared",
        C.WRONG_EPOCH: "a capacity declaration more than one epoch ahead",
        C.CAPACITY_NOT_DECLARED: "a cost bid without a capacity declared for its epoch",
        C.CAPACITY_LOCKED: "the epoch's capacity is fixed (declared, or its first round cleared)",
        C.CAPACITY_CHANGE_TOO_LARGE: "capacity more than a factor m from the previous epoch's",
        C.INSUFFICIENT_DEPOSIT: "not enough free deposit to lock P_max per unit of capacity",
        C.COST_ABOVE_P_MAX: "a prover's unit cost above P_max",
        C.DUPLICATE_BID: "a second, different cost bid for the same round",
        C.FEE_ABOVE_P_MAX: "a task fee above P_max",
        C.INSUFFICIENT_BALANCE: "the user's balance is below the fee",
        C.DUPLICATE_TASK: "the user already bid a task with this id",
        C.NOT_ASSIGNED: "a proof for a batch or task not assigned to this prover",
        C.LATE_PROOF: "a proof after the prove deadline (and grace) or after its batch settled",
        C.PROVER_BUSY: "at clearing: the prover still has an unsettled batch",
        C.INVALID_AMOUNT: "a withdrawal or faucet grant of a non-positive amount",
        C.INSUFFICIENT_FUNDS: "a withdrawal of more than the account holds",
        C.DEPOSIT_LOCKED: "a withdrawal of deposit that capacity keeps locked",
        C.NOT_FAUCET: "a faucet grant from a key that is not the market's faucet",
        C.DUPLICATE_GRANT: "a faucet grant whose nonce already names another grant",
        C.PROVER_SUSPENDED: "a cost bid from a prover suspended: it failed K of its last W batches",
        C.RESCUE_EXCLUDED: "at clearing: the round rescues a task this prover failed",
        C.PROVER_OFFLINE: "at clearing: the prover's last will came after its cost bid",
        C.TOO_MANY_QUERIES: "a status query past the asker's or the round's ration of answers",
    }
)
del C

_ORDER: Final = list(RejectCode)
MARKET_CODES: Final = frozenset(_ORDER[_ORDER.index(RejectCode.UNEXPECTED_MESSAGE) :]) | {
    RejectCode.WRONG_MARKET
}
"""The codes the coordinator core's market rules refuse with (docs/market.md)."""
