"""Typed wire messages: one MessagePack schema per kind.

Untrusted bytes decode straight into these types with msgspec: unknown fields, wrong
types and out-of-range values are refused by the decoder itself, so a message object
that exists is well formed. Money is always an integer in the market's smallest unit.

Each body is a MessagePack map whose "kind" field names its schema and whose "v" field
is that schema's version (only version 1 exists).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

SCHEMA_VERSION: Final = 1

# Bounds that keep every integer well inside int64 and every field a sane size.
Money = Annotated[int, Meta(ge=0, le=2**53)]
PositiveMoney = Annotated[int, Meta(ge=1, le=2**53)]
Nonce = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Count = Annotated[int, Meta(ge=0, le=2**31)]
Positive = Annotated[int, Meta(ge=1, le=2**31)]
Round = Annotated[int, Meta(ge=0, le=2**53)]
Millis = Annotated[int, Meta(ge=0, le=2**53)]
MarketId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
TaskId = Annotated[str, Meta(min_length=1, max_length=128)]
PublicKeyHex = Annotated[str, Meta(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]
TaskInput = Annotated[bytes, Meta(max_length=4096)]
ProofBytes = Annotated[bytes, Meta(max_length=4096)]
Digest = Annotated[bytes, Meta(min_length=16, max_length=32)]
Version = Annotated[int, Meta(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)]
Text = Annotated[str, Meta(max_length=512)]
STATUS_TASKS: Final = 1000
"""Most open tasks one `account_status` lists; the count covers the rest."""


class _Body(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="kind",
    kw_only=True,
):
    v: Version = SCHEMA_VERSION


WILL_GRACE_MS: Final = 5_000
"""The default reconnect grace after a prover's will: a broker restart (a bus reconnects
within its 1 s backoff cap) and a systemd restart of the prover's process (RestartSec=2,
then a second or two to start) are over within it."""


class FailureRules(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    """How a market treats late and failed batches; the defaults keep none of it, but for
    the reconnect grace a prover gets after its last will (docs/market.md, "Wills")."""

    late_grace_ms: Count = 0  # a valid proof this late is taken, its penalty ramping to a slash
    rescue: bool = False  # a failed batch's tasks are offered again in the next round
    suspend_after_failures: Count = 0  # K: refuse cost bids of a prover that failed K ...
    suspend_window: Count = 0  # ... of its last W settled batches (W rounds after the last)
    # A prover's will while it holds a batch fails the batch this long after, unless the
    # prover is back online by then (its open batches would else wait out their deadline).
    will_grace_ms: Count = WILL_GRACE_MS


class MarketParams(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    """A market's rules, announced with every round so any party can check them."""

    market: MarketId
    p_max: Money  # refund limit and highest fee a task may carry
    epoch_rounds: Positive  # E: rounds per capacity-lock epoch
    capacity_factor: Positive  # m: capacity may change by at most this factor per epoch
    mechanism: Annotated[str, Meta(min_length=1, max_length=32)]
    difficulty: Positive  # sloth square roots per task
    setup: Count  # per-batch setup work (sloth steps) a prover pays once per batch
    bid_window_ms: Positive
    prove_window_ms: Positive
    # Mechanism parameters (docs/mechanism.md); omitted on the wire at their defaults.
    posted_price: Money | None = None  # `posted`: the price
    call_a_bps: Annotated[int, Meta(ge=0, le=10_000)] = 5_000  # `call-market`: a, in 1/10_000
    reserve_cost: Money | None = None  # `prooph`: the virtual reserve prover's cost
    subsidy_account: PublicKeyHex | None = None  # `vcg`: whose balance pays the deficit
    signed_ties: bool = False  # tie seed from the coordinator's signature (protocol.tie_proof)
    # Failure handling (docs/market.md, "Failures"), one field: a 16th field would turn the
    # map's fixmap header into a map16 and change every unparameterised market's bytes.
    failures: FailureRules | None = None

    @property
    def late_grace_ms(self) -> int:
        return 0 if self.failures is None else self.failures.late_grace_ms

    @property
    def rescue(self) -> bool:
        return self.failures is not None and self.failures.rescue

    @property
    def suspend_after_failures(self) -> int:
        return 0 if self.failures is None else self.failures.suspend_after_failures

    @property
    def suspend_window(self) -> int:
        return 0 if self.failures is None else self.failures.suspend_window

    @property
    def will_grace_ms(self) -> int:
        return WILL_GRACE_MS if self.failures is None else self.failures.will_grace_ms


class RoundAnnouncement(_Body, tag="round_announcement", frozen=True):
    """Coordinator -> everyone (signed, public): round r is open for bids."""

    market: MarketId
    round: Round
    epoch: Round
    bid_deadline: Millis
    prove_deadline: Millis
    params: MarketParams


class CapacityDeclaration(_Body, tag="capacity_declaration", frozen=True):
    """Prover -> coordinator: the capacity it locks for a whole epoch."""

    market: MarketId
    epoch: Round
    capacity: Positive


class ProverCostBid(_Body, tag="prover_bid", frozen=True):
    """Prover -> coordinator: its unit cost for one round (capacity is fixed per epoch)."""

    market: MarketId
    round: Round
    cost: Money


class TaskBidMessage(_Body, tag="task_bid", frozen=True):
    """User -> coordinator: one proving task and the fee the user offers for it."""

    market: MarketId
    round: Round
    task_id: TaskId
    fee: Money
    task_input: TaskInput
    carry_over: bool = False
    # Arriving after its round's bid deadline, the bid stands for the round open then
    # instead of being refused `late_bid` (its receipt names that round).
    late_to_next: bool = False


TASK_BIDS_MAX: Final = 1024
"""The most task bids one `task_bids` envelope may carry (its bytes are bounded by the
envelope limit): a bound on what one signature check can make the coordinator do."""


class TaskBidEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One task of a `task_bids` envelope: what a `task_bid` says besides market and round."""

    task_id: TaskId
    fee: Money
    task_input: TaskInput
    carry_over: bool = False


class TaskBids(_Body, tag="task_bids", frozen=True):
    """User -> coordinator: many task bids for one round under one signature.

    Each entry is judged as the `task_bid` it stands for would be, in order, and answered
    on its own under its bid reference (`protocol.envelope.bid_ref` of the envelope's
    reference and the entry's index): receipts and rejects stay per task. A refusal of
    the whole envelope (wrong market, round not open, bad signature) names the envelope.
    """

    market: MarketId
    round: Round
    bids: Annotated[list[TaskBidEntry], Meta(min_length=1, max_length=TASK_BIDS_MAX)]
    late_to_next: bool = False

    def entry(self, index: int) -> TaskBidMessage:
        """Entry `index` as the single task bid it stands for."""
        e = self.bids[index]
        return TaskBidMessage(
            market=self.market,
            round=self.round,
            task_id=e.task_id,
            fee=e.fee,
            task_input=e.task_input,
            carry_over=e.carry_over,
            late_to_next=self.late_to_next,
        )


class BidReceipt(_Body, tag="bid_receipt", frozen=True):
    """Coordinator -> bidder: the bid referenced by `ref` is accepted (and escrowed)."""

    market: MarketId
    round: Round
    ref: Digest
    escrowed: Money = 0


class ReceiptEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    round: Round
    ref: Digest
    escrowed: Money = 0


class BidReceipts(_Body, tag="bid_receipts", frozen=True):
    """Coordinator -> bidder: several bids accepted in one durable write, one envelope.

    Means exactly what one `bid_receipt` per entry would; a busy coordinator sends it so
    that a bidder with many bids in flight costs one signature and one publish per batch.
    """

    market: MarketId
    receipts: Annotated[list[ReceiptEntry], Meta(min_length=1, max_length=100_000)]


class ProverRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One prover's track record: its batches won, proven (late among them) and failed.

    `median_proving_ms` is over its last proven batches (coordinator.track_record), from
    the clearing that assigned a batch to the arrival of the proof that completed it.
    """

    prover: PublicKeyHex
    won: Count
    proved: Count
    late: Count
    failed: Count
    median_proving_ms: Millis | None = None


class ClearingResult(_Body, tag="clearing_result", frozen=True, kw_only=True, omit_defaults=True):
    """Coordinator -> everyone (signed, public): the round's outcome, no bid contents."""

    # A factory default is never omitted, so `v` stays on the wire; only tie_proof can go.
    v: Version = msgspec.field(default_factory=lambda: SCHEMA_VERSION)
    market: MarketId
    round: Round
    mechanism: Annotated[str, Meta(max_length=32)]
    tasks_bid: Count
    provers_bid: Count
    allocated_provers: Count
    allocated_tasks: Count
    user_price: Money | None
    prover_price: Money | None
    winners: list[PublicKeyHex]
    surplus: Money
    prove_deadline: Millis
    tie_proof: Annotated[bytes, Meta(min_length=64, max_length=64)] | None = None  # signed_ties
    # What the round's bid window took and refused, before the clearing's own checks:
    # cost bids taken (`provers_bid` counts those the clearing admitted), task bids
    # carried to the next round, and inputs refused while it was open, by reject code.
    offers: Count = 0
    carried: Count = 0
    refused: dict[Annotated[str, Meta(max_length=32)], Count] = {}
    # The track record of every prover that bid in the round, after its assignments.
    track_record: Annotated[list[ProverRecord], Meta(max_length=100_000)] | None = None


class AssignedTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    task_id: TaskId
    task_input: TaskInput


class Assignment(_Body, tag="assignment", frozen=True):
    """Coordinator -> allocated prover: its batch, to be proven before the deadline."""

    market: MarketId
    round: Round
    prove_deadline: Millis
    difficulty: Positive
    setup: Count
    payment: Money  # for the whole batch, repeated in every part
    tasks: Annotated[list[AssignedTask], Meta(max_length=100_000)]
    part: Count = 0  # a batch too large for one envelope comes in parts 0..parts-1
    parts: Positive = 1

    def __post_init__(self) -> None:
        if self.part >= self.parts:
            raise ValueError(f"part {self.part} of an assignment in {self.parts} parts")


class UserReceipt(_Body, tag="user_receipt", frozen=True):
    """Coordinator -> user: whether its task was allocated, to whom, at what price."""

    market: MarketId
    round: Round
    task_id: TaskId
    allocated: bool
    price: Money | None = None
    prover: PublicKeyHex | None = None
    carried_to: Round | None = None  # set when the unallocated bid carries into that round


class TaskProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    task_id: TaskId
    proof: ProofBytes


class ProofSubmission(_Body, tag="proof_submission", frozen=True):
    """Prover -> coordinator: proofs for (part of) its batch."""

    market: MarketId
    round: Round
    proofs: Annotated[list[TaskProof], Meta(max_length=100_000)]


# `rescued` (to a user) credits P_max for a failed task whose fee stays escrowed for the
# round it is rescued into; `compensated` (to a user) credits a late task's share of its
# prover's penalty, just before its `charged`; `penalty` (to a prover) takes part of its
# locked deposit for a late batch, just before its `paid`. None of them closes the task or
# the batch: the closing notice follows.
SettlementOutcome = Literal[
    "charged", "refunded", "released", "paid", "slashed", "rescued", "compensated", "penalty"
]


class SettlementNotice(_Body, tag="settlement", frozen=True):
    """Coordinator -> user or prover: how one task or one batch settled.

    A user whose task was proven gets the verified proof with its `charged` notice.
    """

    market: MarketId
    round: Round
    outcome: SettlementOutcome
    amount: Money
    task_id: TaskId | None = None
    proof: ProofBytes | None = None


class Reject(_Body, tag="reject", frozen=True):
    """Coordinator -> sender: the referenced input was refused and changed nothing."""

    market: MarketId
    code: Annotated[str, Meta(min_length=1, max_length=48)]
    reason: Text
    ref: Digest
    round: Round | None = None


class RejectEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: Annotated[str, Meta(min_length=1, max_length=48)]
    reason: Text
    ref: Digest
    round: Round | None = None


class Rejects(_Body, tag="rejects", frozen=True):
    """Coordinator -> bidder: several task bids of one `task_bids` envelope refused.

    Means exactly what one `reject` per entry would, in one envelope.
    """

    market: MarketId
    rejects: Annotated[list[RejectEntry], Meta(min_length=1, max_length=TASK_BIDS_MAX)]


class Notices(_Body, tag="notices", frozen=True):
    """Coordinator -> user: several user receipts and settlements in one envelope.

    Means exactly what each of them would alone, in order. A round's clearing and
    settlement send one per task; a busy coordinator coalesces a bidder's into one
    envelope per batch, so a user with a hundred tasks costs one signature, not a hundred.
    """

    market: MarketId
    notices: Annotated[list[UserReceipt | SettlementNotice], Meta(min_length=1, max_length=100_000)]


# The two accounts of a party that money can be paid into from outside or out of.
FundsAccount = Literal["balance", "deposit"]


class Withdrawal(_Body, tag="withdrawal", frozen=True):
    """User or prover -> coordinator: pay `amount` of its free money out of the market.

    `round` is the round open for bids when the request is made; it binds the request to
    its round, so a copy replayed long after is refused instead of paid again.
    """

    market: MarketId
    round: Round
    account: FundsAccount  # "balance" (spendable) or "deposit" (a prover's unlocked deposit)
    amount: PositiveMoney


class WithdrawalReceipt(_Body, tag="withdrawal_receipt", frozen=True):
    """Coordinator -> withdrawer: the withdrawal `ref` was paid out; what is left."""

    market: MarketId
    round: Round
    ref: Digest
    account: FundsAccount
    amount: Money
    remaining: Money


class FaucetGrant(_Body, tag="faucet_grant", frozen=True):
    """Faucet -> coordinator: new money for `to`; only the genesis's faucet key may send it.

    `nonce` names the grant: a grant whose nonce was already taken changes nothing.
    """

    market: MarketId
    to: PublicKeyHex
    account: FundsAccount
    amount: PositiveMoney
    nonce: Nonce


class FundingNotice(_Body, tag="funding_notice", frozen=True):
    """Coordinator -> recipient and faucet: the faucet grant `nonce` was credited."""

    market: MarketId
    to: PublicKeyHex
    account: FundsAccount
    amount: Money
    nonce: Nonce


class StatusQuery(_Body, tag="status_query", frozen=True):
    """User or prover -> coordinator: what the market holds for me (an `account_status`).

    `round` is the round open for bids when asked, as for a withdrawal: it binds the query
    to its round, so a copy is a `replay` while the round is open and refused after.
    Answered from the coordinator's state and never recorded: it changes nothing.
    """

    market: MarketId
    round: Round


class OpenTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One of the asker's task bids still escrowed: bid, or assigned and not yet settled."""

    task_id: TaskId
    round: Round
    fee: Money
    status: Literal["open", "assigned"]


class EpochCapacity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A capacity the asker declared for an epoch that is current or ahead."""

    epoch: Round
    capacity: Positive


class AccountStatus(_Body, tag="account_status", frozen=True, kw_only=True):
    """Coordinator -> asker: its accounts and open work, answering the query `ref`.

    `round` is the round open for bids (or the next to open) when answered; `epoch` is
    that round's capacity-lock epoch. `open_tasks` lists at most STATUS_TASKS of them,
    oldest round first; `open_task_count` counts them all.
    """

    market: MarketId
    round: Round
    epoch: Round
    ref: Digest
    balance: Money  # spendable: bids escrow from it, withdrawals pay out of it
    escrow: Money  # fees of task bids not yet settled
    deposit: Money  # a prover's free deposit
    locked: Money  # a prover's deposit locked by its declared capacity
    capacities: Annotated[list[EpochCapacity], Meta(max_length=4)]
    open_batches: Annotated[list[Round], Meta(max_length=1024)]  # rounds of unsettled batches
    open_tasks: Annotated[list[OpenTask], Meta(max_length=STATUS_TASKS)]
    open_task_count: Count
    faucet: PublicKeyHex | None = None  # the market's faucet key, if it has one


class ProverWill(_Body, tag="prover_will", frozen=True):
    """Prover -> coordinator, by the broker: the prover's connection made at `connected_at` died.

    Registered with the broker as the MQTT last will of each connection, sealed and signed
    when the connection is made, so only the prover could have written it; a will whose
    `connected_at` is not newer than one already taken is a replay.
    """

    market: MarketId
    connected_at: Millis


class ProverOnline(_Body, tag="prover_online", frozen=True):
    """Prover -> coordinator: its connection made at `connected_at` is up.

    Sent on every connect and reconnect, stamped as that connection's will, so the
    coordinator can order the two: a will of an older connection than the newest online
    is stale, and an online clears the offline mark and cancels a pending rescue.
    """

    market: MarketId
    connected_at: Millis


Message = (
    RoundAnnouncement
    | CapacityDeclaration
    | ProverCostBid
    | TaskBidMessage
    | TaskBids
    | BidReceipt
    | BidReceipts
    | ClearingResult
    | Assignment
    | UserReceipt
    | ProofSubmission
    | SettlementNotice
    | Reject
    | Rejects
    | Notices
    | Withdrawal
    | WithdrawalReceipt
    | FaucetGrant
    | FundingNotice
    | StatusQuery
    | AccountStatus
    | ProverWill
    | ProverOnline
)

KINDS: Final[dict[str, type[Message]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        RoundAnnouncement,
        CapacityDeclaration,
        ProverCostBid,
        TaskBidMessage,
        TaskBids,
        BidReceipt,
        BidReceipts,
        ClearingResult,
        Assignment,
        UserReceipt,
        ProofSubmission,
        SettlementNotice,
        Reject,
        Rejects,
        Notices,
        Withdrawal,
        WithdrawalReceipt,
        FaucetGrant,
        FundingNotice,
        StatusQuery,
        AccountStatus,
        ProverWill,
        ProverOnline,
    )
}
