"""The coordinator on the wire: broker deliveries in, the core's effects out.

An intake task takes deliveries from the bus a batch at a time and checks them up to
and including their signatures (in worker processes, with a PoolVerifier). One loop
applies each checked batch, and any tick that fell due, to the pure core one event at a
time; the batch's records are written to the store in one durable transaction, and only
then are its receipts, rejects and results published, in the background while the next
batch is applied. Nothing is acknowledged before it is recorded, and the fsync is paid
once per batch, not per bid.

Envelopes that fail to open, come on another party's topic, or replay an earlier one
never reach the core: they get a signed Reject on the sender's topic (the broker ACL
vouches for the name in the topic) and a structured log line, and change nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from coordinator.core import Coordinator
from coordinator.record_log import (
    SNAPSHOT_EVERY,
    RecordLog,
    fold,
    open_record_log,
    read_meta,
    resuming,
)
from coordinator.record_log import CoordinatorStartError as CoordinatorStartError
from coordinator.records import CoordinatorEvent, decode_record, encode_record
from coordinator.report import RoundTally, market_report
from coordinator.retention import KEEP_ALL, Retention
from coordinator.state import OpeningBalances
from coordinator.store import RecordStore, SqliteStore
from coordinator.verifier import InlineVerifier, PoolVerifier, SignatureVerifier, new_verifier
from protocol import topics
from protocol.envelope import (
    MAX_ENVELOPE_SIZE,
    Opened,
    Unverified,
    kind_of,
    rejection,
    seal,
    unseal,
)
from protocol.errors import BadEncoding, BadPublicKey, BadTopic, ProtocolError, Replay, TooLarge
from protocol.events import MessageReceived, Publish, Record, Resumed, Tick, WakeAt
from protocol.identity import Identity, valid_public_key
from protocol.messages import (
    TASK_BIDS_MAX,
    Assignment,
    BidReceipt,
    BidReceipts,
    ClearingResult,
    MarketParams,
    Message,
    Notices,
    ProverOnline,
    ProverWill,
    ReceiptEntry,
    Reject,
    RejectEntry,
    Rejects,
    RoundAnnouncement,
    SettlementNotice,
    UserReceipt,
)
from protocol.rejects import RejectCode
from protocol.replay import ReplayGuard, round_of
from protocol.split import split_to_fit
from runtime import heap
from runtime.bus import Bus, Delivery
from runtime.heap import Heap
from runtime.memory_bus import open_bus
from runtime.metrics import Check, bus_check, ledger_check, serving
from runtime.process import Clock, install_stop_signals, since_exec_ms, wall_ms

if TYPE_CHECKING:  # imported when metrics are served: a start without them is quicker
    from coordinator.metrics import CoordinatorMetrics

BATCH_MAX = 1024
"""Most deliveries handled per durable write: bounds latency under a flood of bids."""
PIPELINE_DEPTH = 2
"""Verified batches waiting for the core: enough to keep a verifying worker busy."""
WILLS_REMEMBERED = 65_536
"""Provers whose newest will is remembered, to refuse replays of older ones."""
SENDS_IN_FLIGHT = 4
"""Batches whose messages may still await the broker's acknowledgement."""
TALLY_ROUNDS = 64
"""Rounds the live view's figures are kept for; older rows leave the service's memory."""


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Everything a coordinator needs besides its key."""

    broker: str
    params: MarketParams
    genesis: OpeningBalances
    ledger: str | None = None  # None keeps the record log in memory (tests, throwaway runs)
    rounds: int | None = None
    start_delay_ms: int = 1000
    password: str | None = None
    ca_file: str | None = None
    verify_workers: int = 0  # processes that check signatures; 0 checks them in the loop
    snapshot_every: int = SNAPSHOT_EVERY  # records between snapshots of the core
    retention: Retention = KEEP_ALL  # what happens to records behind the snapshots
    metrics: str | None = None  # HOST:PORT to serve /metrics and /health on


class StartupLaps:
    """How long each part of starting took, in ms: the `coordinator.serving` line's figures."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.ms[part] = round((now - self._last) * 1000, 1)
        self._last = now


@dataclass(slots=True)
class IngestStats:
    """What the service has taken in and sent out, for operators and `bench ingest`."""

    deliveries: int = 0
    refused: int = 0
    records: int = 0
    batches: int = 0
    first_delivery: float | None = None  # time.monotonic() of the first delivery
    last_batch: float | None = None  # time.monotonic() when the last batch was published
    sent: dict[str, int] = field(default_factory=dict)  # message kind -> count
    bids_acknowledged: int = 0  # receipts sent, counting each entry of a bid_receipts


SEAL_CHUNK = 256
"""Messages sealed between two yields to the event loop when a batch sends many."""


def by_urgency(sends: list[Publish]) -> tuple[list[Publish], list[Publish]]:
    """(what goes first, the rest), each in its order: public messages and what provers
    act on against a deadline (assignments, their payments and slashings) go first, so a
    round's assignments never wait behind thousands of users' receipts."""
    urgent: list[Publish] = []
    rest: list[Publish] = []
    for send in sends:
        message = send.message
        first = (
            send.to is None
            or isinstance(message, Assignment)
            or (isinstance(message, SettlementNotice) and message.outcome in ("paid", "slashed"))
        )
        (urgent if first else rest).append(send)
    return urgent, rest


def coalesce_receipts(sends: list[Publish]) -> list[Publish]:
    """One `bid_receipts` per bidder with several receipts in `sends`, in first-seen order.

    Every other message, and a lone receipt, goes out as it is: the batch only changes
    how many envelopes carry the receipts, never what they say.
    """

    def together(market: str, receipts: list[Message]) -> Message:
        entries = [
            ReceiptEntry(r.round, r.ref, r.escrowed) for r in receipts if isinstance(r, BidReceipt)
        ]
        return BidReceipts(market=market, receipts=entries)

    return _coalesce(sends, (BidReceipt,), together)


def coalesce_notices(sends: list[Publish]) -> list[Publish]:
    """One `notices` per user with several user receipts or settlements in `sends`, the
    core's own `notices` (one per user of a clearing or settlement) merged in, in order."""

    def together(market: str, notices: list[Message]) -> Message:
        kept: list[UserReceipt | SettlementNotice] = []
        for n in notices:
            if isinstance(n, Notices):
                kept += n.notices
            elif isinstance(n, UserReceipt | SettlementNotice):
                kept.append(n)
        return Notices(market=market, notices=kept)

    return _coalesce(sends, (UserReceipt, SettlementNotice, Notices), together)


def _coalesce(
    sends: list[Publish],
    kinds: tuple[type[Message], ...],
    together: Callable[[str, list[Message]], Message],
) -> list[Publish]:
    """Each recipient's messages of `kinds` as one message, where its first one was."""
    grouped: dict[str, list[Message]] = {}
    for effect in sends:
        if isinstance(effect.message, kinds) and effect.to is not None:
            grouped.setdefault(effect.to, []).append(effect.message)
    out: list[Publish] = []
    for effect in sends:
        message = effect.message
        if not isinstance(message, kinds) or effect.to is None:
            out.append(effect)
            continue
        group = grouped.pop(effect.to, None)
        if group is None:
            continue  # already sent with this recipient's first one
        if len(group) == 1:
            out.append(effect)
        else:
            out.append(Publish(together(message.market, group), effect.to))
    return out


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One sealed envelope to publish, how many bids it acknowledges, whether it is retained."""

    topic: str
    envelope: bytes
    acks: int
    retain: bool = False


@dataclass(frozen=True, slots=True)
class _Clearing:
    """A round the core cleared in a batch: when bidding closed, how long the core took."""

    round: int
    bid_deadline: int
    core_s: float
    assignments: int


def _clearings(core: Coordinator, effects: Sequence[object], core_s: float) -> list[_Clearing]:
    results = [e.message for e in effects if isinstance(e, Publish)]
    return [
        _Clearing(
            m.round,
            core.round_deadlines(m.round)[0],
            core_s,
            sum(isinstance(a, Assignment) and a.round == m.round for a in results),
        )
        for m in results
        if isinstance(m, ClearingResult)
    ]


@dataclass(frozen=True, slots=True)
class _Unverified:
    """A delivery checked up to its signature, with the topic it came on."""

    envelope: Unverified
    topic: topics.Topic
    party: str  # the topic's, which the broker's ACL vouches for
    arrived: int  # when the bus received it (ms): deadlines judge it by this


class _Overloaded(list[Publish]):
    """Rejects for deliveries the bus left out of a full inbox: answers, not deliveries."""


@dataclass(frozen=True, slots=True)
class _Intake:
    """What the loop applies at once: ticks, refusals, and envelopes with their verdicts."""

    items: Sequence[Tick | Resumed | _Unverified | list[Publish]]
    valid: list[bool]  # one per _Unverified in items, in order

    @property
    def deliveries(self) -> int:
        """How many broker deliveries the batch holds (a tick is none)."""
        return sum(not isinstance(item, Tick | Resumed | _Overloaded) for item in self.items)


class CoordinatorService:
    """Drives one `Coordinator` core from a connected `Bus` and a record store."""

    def __init__(
        self,
        core: Coordinator,
        identity: Identity,
        bus: Bus,
        store: RecordStore,
        *,
        clock: Clock = wall_ms,
        recorded: Iterable[CoordinatorEvent] = (),
        resend: Sequence[Publish] = (),
        verifier: SignatureVerifier | None = None,
        metrics: CoordinatorMetrics | None = None,
        startup: StartupLaps | None = None,
    ) -> None:
        self.core = core
        self.startup = startup or StartupLaps()
        self.metrics = metrics
        self.verifier: SignatureVerifier = verifier or InlineVerifier()
        self.identity = identity
        self.bus = bus
        self.store = store
        self.clock = clock
        self.market = core.params.market
        self.tally = RoundTally(keep_rounds=TALLY_ROUNDS)  # the live view's window
        self.stats = IngestStats()
        self.heap = Heap()
        self.log = structlog.get_logger("coordinator").bind(market=self.market)
        self._ticks: asyncio.Queue[Tick] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        # Rounds older than this many behind the bidding round are settled: their inputs
        # are refused as closed instead of being remembered for ever.
        params = core.params
        self._lag = math.ceil(params.prove_window_ms / params.bid_window_ms) + 2
        self.guard = ReplayGuard(horizon=self._lag + 4)
        self._resend = list(resend)
        self._changed_rounds: set[int] = set()
        self._published_through = store.published()
        self._verifying = False
        # deliveries taken from this bus before us were someone else's to apply
        self._applied = bus.stats.enqueued - bus.pending()
        self._held: _Intake | None = None
        self._dropped_seen = bus.stats.dropped_full
        self._sending: collections.deque[tuple[asyncio.Task[None] | None, int | None]] = (
            collections.deque()
        )
        self._stop_intake = False
        self.subscribed = False  # every topic granted once (the bus renews them)
        self._wills: collections.OrderedDict[str, int] = collections.OrderedDict()
        # Provers' declarations, cost bids and proofs are never dropped for a full inbox.
        bus.admission.priority = self._from_prover
        bus.admission.noting = True  # what is dropped anyway is answered `overloaded`
        # The guard's window is the restored core's before the first intake, so what queued
        # at the broker while the coordinator was away is judged against the rounds open.
        self._after_batch()
        for event in recorded:
            if isinstance(event, MessageReceived):
                self._remember(event)

    def _current_round(self) -> int:
        bidding = self.core.bidding_round
        return bidding if bidding is not None else 0

    def _remember(self, event: MessageReceived) -> None:
        message_round = round_of(event.message)
        with contextlib.suppress(ProtocolError):
            self.guard.admit(
                event.sender,
                event.ref,
                self._current_round() if message_round is None else message_round,
            )

    # -- the loop -------------------------------------------------------------------

    async def _begin(self) -> None:
        """Subscribe, send again what a crash may have kept from the wire, arm the timer."""
        await self.bus.subscribe(*topics.coordinator_subscriptions(self.market))
        self.subscribed = True
        self.startup.lap("subscribe")
        self.log.info(
            "coordinator.started",
            key=self.identity.public_hex,
            start_ms=self.core.start_ms,
            rounds=self.core.rounds_limit,
            recorded=len(self.store),
        )
        if self._resend:
            # Recorded before a crash but perhaps never sent: send again. Every party
            # treats a second copy of a receipt, assignment or settlement as a no-op.
            self.log.info("coordinator.resending", messages=len(self._resend))
            outgoing = [o for e in coalesce_receipts(self._resend) for o in self._outgoing(e)]
            self._log_progress()
            await self._publish(outgoing)
            self._resend = []
        if self._published_through < len(self.store) - 1:
            self._published_through = len(self.store) - 1
            self.store.mark_published(self._published_through)
        await self._resume()
        self._arm(self.core.next_wake())
        self.startup.lap("resend_resume")
        # Taking inputs from here on: the restart time an operator waits for.
        self.log.info(
            "coordinator.serving",
            since_exec_ms=since_exec_ms(),
            cpu_ms=round(time.process_time() * 1000),  # on a busy machine, what it cost
            startup_ms=self.startup.ms,
        )

    async def _resume(self) -> None:
        """After a restart, stop the market's clock for the time this service was away.

        The last record says when it was last alive; every deadline since moves by the
        outage, so what parties sent meanwhile (waiting at the broker) is judged on time.
        """
        if len(self.store) == 0 or self.core.finished:
            return
        record = next(iter(self.store.replay(len(self.store) - 1)), None)
        if record is None:
            return  # every record retired into the archive: nothing says when we left
        since = decode_record(record).now
        now = self.clock()
        if now > since:
            self.log.info("coordinator.resumed", since=since, outage_ms=now - since)
            await self._handle_batch(_Intake([Resumed(now, since)], []))

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, the market finishes its rounds, or the bus fails."""
        await self._begin()
        stopper = asyncio.create_task(stop.wait(), name="coordinator:stop")
        # Deliveries are checked up to their signatures and the signatures verified in
        # an intake task, so that batch k+1 is verified (in a worker process, when the
        # verifier has one) while this loop applies batch k to the core.
        verified: asyncio.Queue[_Intake] = asyncio.Queue(maxsize=PIPELINE_DEPTH)
        intake = asyncio.create_task(self._intake(verified), name="coordinator:intake")
        getting: asyncio.Task[_Intake] | None = None
        ticking: asyncio.Task[Tick] | None = None
        # A tick that fell due waits until every delivery received before it has been
        # applied: each is judged by the time it arrived, so a backlog punishes nobody.
        due: tuple[Tick, int] | None = None
        error: BaseException | None = None
        try:
            while not self.core.finished:
                # Both stay pending across turns: one task per batch, not per message.
                getting = getting or asyncio.create_task(verified.get())
                if due is None:
                    ticking = ticking or asyncio.create_task(self._ticks.get())
                waiting = {getting, stopper, intake, *([ticking] if ticking else [])}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getting in done:
                    await self._handle_batch(getting.result())
                    getting = None
                elif intake in done:
                    intake.result()  # raises if the bus failed for good
                    break  # the bus closed, and every batch taken has been applied
                if ticking is not None and ticking in done:
                    due, ticking = (ticking.result(), self.bus.stats.enqueued), None
                if due is not None and self._applied >= due[1]:
                    # Stamped now, not when it fell due: what it starts (a prove window)
                    # runs from when it is decided and sent.
                    tick = Tick(max(due[0].now, self.clock()))
                    await self._handle_batch(_Intake([tick], []))
                    due = None
                if stopper in done:
                    break
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if error is None:
                    await self._wind_down(intake, getting, verified)
            except BaseException as exc:
                error = exc
                raise
            finally:
                await self._end([intake, getting, ticking, stopper], error)

    async def _end(
        self, tasks: Sequence[asyncio.Task[Any] | None], error: BaseException | None
    ) -> None:
        """Cancel what still runs, keep the watermark, and log how the service stopped."""
        running = [t for t in tasks if t is not None]
        running += [task for task, _ in self._sending if task is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        self._sending.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._published_through > self.store.published():
            self.store.mark_published(self._published_through)
        self.log.info(
            "coordinator.stopped",
            finished=self.core.finished,
            recorded=len(self.store),
            deliveries=self.stats.deliveries,
            refused=self.stats.refused,
            sent=self.stats.sent,
            cpu_s=round(time.process_time(), 3),
            max_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            error=None if error is None else repr(error),
        )

    async def _wind_down(
        self,
        intake: asyncio.Task[None],
        getting: asyncio.Task[_Intake] | None,
        verified: asyncio.Queue[_Intake],
    ) -> None:
        """Apply every batch already taken from the broker, then finish publishing.

        Taken from the inbox means acknowledged to the broker, so what the intake holds
        is applied even when told to stop; a batch still being verified is waited for.
        """
        if self._verifying:
            self._stop_intake = True
            await asyncio.wait({intake})
        intake.cancel()
        if getting is not None:
            getting.cancel()
        await asyncio.gather(intake, *([getting] if getting else []), return_exceptions=True)
        left: list[_Intake] = []
        if getting is not None and getting.done() and not getting.cancelled():
            left.append(getting.result())
        while not verified.empty():
            left.append(verified.get_nowait())
        if self._held is not None:
            left.append(self._held)
        for batch in left:
            if not self.core.finished:
                await self._handle_batch(batch)
        await self._reap(0)

    async def _intake(self, verified: asyncio.Queue[_Intake]) -> None:
        """Take deliveries from the bus, check them up to and including their signatures.

        A batch taken is acknowledged to the broker, so it is never dropped: while its
        signatures are checked `_verifying` is set (stopping waits for that), and until
        the loop has it, it is also `_held` (stopping applies it from there).
        """
        while not self._stop_intake:
            deliveries = await self.bus.receive_batch(BATCH_MAX)
            if not deliveries:
                return
            overloaded = self._note_overflow()
            self._verifying = True
            try:
                self._count(deliveries)
                items: list[_Unverified | list[Publish]] = [*([overloaded] if overloaded else [])]
                items += [self._prepare(delivery) for delivery in deliveries]
                unverified = [item for item in items if isinstance(item, _Unverified)]
                began = time.perf_counter()
                valid = await self.verifier.verify(
                    [(u.envelope.signed_message, u.envelope.sender) for u in unverified]
                )
                if self.metrics is not None and unverified:
                    self.metrics.verify_seconds.observe(time.perf_counter() - began)
                self._held = _Intake(items, valid)
            finally:
                self._verifying = False
            if self._stop_intake:
                # Winding down: the loop no longer takes from `verified`, so a put could
                # wait for ever on a full pipeline. The batch stays `_held` and is applied.
                return
            await verified.put(self._held)
            self._held = None

    def _from_prover(self, topic: str) -> bool:
        return self.core.is_prover(topic.rpartition("/")[2])

    def _note_overflow(self) -> _Overloaded | None:
        """Log what the bus dropped for a full inbox (acked unread), and answer each sender.

        Each gets a signed `overloaded` reject naming the envelope (one `rejects` for
        several): nothing of it was read or recorded, and the sender may send it again.
        """
        dropped = self.bus.stats.dropped_full
        if dropped > self._dropped_seen:
            self.log.warning(
                "coordinator.inbox_full",
                dropped=dropped - self._dropped_seen,
                dropped_total=dropped,
                bound=self.bus.queue_size,
            )
            self._dropped_seen = dropped
        refs: dict[str, list[bytes]] = {}
        for topic, ref in self.bus.admission.take_overflow():
            refs.setdefault(topic, []).append(ref)
        if not refs:
            return None
        reason = f"the inbox held {self.bus.queue_size} waiting: not read; send it again"
        answers = _Overloaded()
        for topic, party_refs in refs.items():
            party = self._answerable(topic)
            if party is not None:
                answers.extend(_overloaded(self.market, party, party_refs, reason))
        self.stats.refused += sum(len(r) for r in refs.values())
        return answers

    def _answerable(self, topic: str) -> str | None:
        """The party a delivery on `topic` can be answered on, if any."""
        try:
            parsed = topics.parse(topic)
        except ProtocolError:
            return None
        if parsed.channel != "in" or parsed.market != self.market or parsed.party is None:
            return None
        return parsed.party if valid_public_key(parsed.party) else None

    def _count(self, deliveries: list[Delivery]) -> None:
        if deliveries and self.stats.first_delivery is None:
            self.stats.first_delivery = time.monotonic()
        self.stats.deliveries += len(deliveries)
        if self.metrics is not None:
            self.metrics.took(len(deliveries))

    async def _handle_batch(self, batch: _Intake) -> None:
        records: list[bytes] = []
        sends: list[Publish] = []
        wake: int | None = None
        valid = iter(batch.valid)
        clearings: list[_Clearing] = []
        for item in batch.items:
            if isinstance(item, Tick | Resumed):
                began = time.perf_counter()
                # Off the event loop: a clearing of 100,000 bids takes the core a second,
                # and meanwhile the loop goes on reading what arrives, so each input is
                # stamped when it came, not when the clearing let the loop look.
                effects: Sequence[Publish | Record | WakeAt] = await asyncio.to_thread(
                    self._on_time, item
                )
                clearings += _clearings(self.core, effects, time.perf_counter() - began)
            elif isinstance(item, _Unverified):
                effects = self._accept(item, next(valid), item.arrived or self.clock())
            else:
                effects = item
            for effect in effects:
                if isinstance(effect, Record):
                    records.append(encode_record(effect.event))
                    if self.metrics is not None and isinstance(effect.event, MessageReceived):
                        self.metrics.recorded(effect.event)
                elif isinstance(effect, Publish):
                    sends.append(effect)
                elif isinstance(effect, WakeAt):
                    wake = effect.at if wake is None else min(wake, effect.at)
        last: int | None = None
        if records:
            # Durable before anything that acknowledges it leaves this process. The
            # watermark written with it says which earlier batches went out in full.
            began = time.perf_counter()
            last = self.store.append_many(records, published=self._published_through)
            if self.metrics is not None:
                self.metrics.record_seconds.observe(time.perf_counter() - began)
            self.stats.records += len(records)
        if self.metrics is not None:
            # Before anything of this batch is logged or sent, so what a scrape shows
            # is never behind the live view's log lines.
            self.metrics.after_batch()
        sending: asyncio.Task[None] | None = None
        if sends:
            began = time.perf_counter()
            urgent, rest = by_urgency(coalesce_receipts(sends))
            rest = coalesce_notices(rest)
            outgoing = [o for e in urgent for o in self._outgoing(e)]
            sealed = time.perf_counter() - began
            self._log_progress()
            # Published in the background: waiting here for the broker's acknowledgements
            # would hold the next batch behind every bid the broker is still pushing to us.
            sending = asyncio.create_task(self._publish(outgoing, rest, clearings, sealed))
        else:
            self.stats.last_batch = time.monotonic()
        self._sending.append((sending, last))
        if isinstance(self.store, RecordLog):
            self.store.snapshot_soon()  # captured in a forked child, off this loop
        await self._reap(SENDS_IN_FLIGHT)
        self.stats.batches += 1
        self._applied += batch.deliveries
        self._after_batch()
        self._arm(wake if wake is not None else self.core.next_wake())

    def _on_time(self, item: Tick | Resumed) -> Sequence[Publish | Record | WakeAt]:
        """The core on a tick, with the collector paused: a clearing makes a notice per
        task, and the heap's settle after its assignments collects what it left."""
        with heap.paused():
            return self.core.handle(item)

    async def _reap(self, limit: int) -> None:
        """Wait until at most `limit` batches are still being published, oldest first.

        The published watermark moves past a batch only once it and every batch before
        it went out, so a restart resends all that might not have.
        """
        while self._sending:
            task, last = self._sending[0]
            if task is not None and not task.done():
                if len(self._sending) <= limit:
                    return
                await asyncio.wait({task})
            self._sending.popleft()
            if task is not None:
                task.result()  # raises if the bus failed for good
            if last is not None:
                self._published_through = last

    async def _publish(
        self,
        outgoing: list[_Outgoing],
        later: Sequence[Publish] = (),
        clearings: Sequence[_Clearing] = (),
        sealed_s: float = 0.0,
    ) -> None:
        """Send `outgoing`, then seal and send `later` a chunk at a time.

        Sealing thousands of receipts in one go would hold the event loop, and with it
        the reading (and arrival stamps) of proofs, behind them; between chunks the loop
        gets on with everything else. Once a clearing's assignments are out, a
        `round.assigned` line says how long each step took.
        """
        await self._send(outgoing)
        for clearing in clearings:
            self.log.info(
                "round.assigned",
                round=clearing.round,
                after_deadline_ms=self.clock() - clearing.bid_deadline,
                core_ms=round(clearing.core_s * 1000),
                seal_ms=round(sealed_s * 1000),
                assignments=clearing.assignments,
            )
        if clearings:
            # The assignments are out: what the clearing left is long-lived (runtime.heap).
            self.heap.settle()
        for start in range(0, len(later), SEAL_CHUNK):
            await asyncio.sleep(0)  # a yield between chunks, not a wait for anything
            chunk = [o for e in later[start : start + SEAL_CHUNK] for o in self._outgoing(e)]
            await self._send(chunk)
        if later:
            self._log_progress()

    async def _send(self, outgoing: list[_Outgoing]) -> None:
        await asyncio.gather(
            *(self.bus.publish(o.topic, o.envelope, retain=o.retain) for o in outgoing)
        )
        self.stats.bids_acknowledged += sum(o.acks for o in outgoing)
        self.stats.last_batch = time.monotonic()

    def _log_progress(self) -> None:
        """One line per round whose figures changed in this batch: the live view's feed."""
        for number in sorted(self._changed_rounds):
            self.log.info("round.progress", **self.tally.rows[number])
        self._changed_rounds.clear()

    def _after_batch(self) -> None:
        bidding = self.core.bidding_round
        if bidding is not None and bidding - self._lag - 1 >= self.guard.floor:
            self.guard.close_through(bidding - self._lag - 1)

    def _prepare(self, delivery: Delivery) -> _Unverified | list[Publish]:
        """Check one delivery up to its signature; a refused one yields only its Reject.

        The boundary for outside input: whatever a check raises, even what no check
        foresaw, becomes a refusal and a warning, never an exception in the loop.
        """
        party: str | None = None
        try:
            topic = topics.parse(delivery.topic)
            if topic.channel not in ("in", "will") or topic.market != self.market:
                raise BadTopic(f"not a topic this coordinator reads: {delivery.topic!r}")
            party = topic.party
            if party is None or not valid_public_key(party):
                party = None  # no one to answer: a Reject cannot be sealed to it
                raise BadPublicKey(f"the topic's key is not an Ed25519 point: {delivery.topic}")
            if delivery.size:
                reason = f"{delivery.size} bytes is over the limit of {MAX_ENVELOPE_SIZE}"
                return self._refuse(TooLarge(reason), b"", party, ref=delivery.digest)
            envelope = unseal(self.identity, delivery.payload, market=self.market)
        except ProtocolError as exc:
            return self._refuse(exc, delivery.payload, party)
        except Exception as exc:  # the boundary: input never stops the loop
            return self._refuse(_unforeseen(exc), delivery.payload, party)
        return _Unverified(envelope, topic, party, delivery.arrived)

    def _accept(
        self, item: _Unverified, signature_valid: bool, now: int
    ) -> Sequence[Publish | Record | WakeAt]:
        """Feed the core one envelope whose signature has been checked.

        The guard is asked before the market rules and told their verdict after, so a
        copy of an envelope gets the answer its original got (see protocol.replay).
        """
        try:
            opened = item.envelope.accept(signature_valid)
            topics.expect_sender(item.topic, opened.sender)
            is_will = isinstance(opened.message, ProverWill)
            if is_will != (item.topic.channel == "will"):
                raise BadTopic(f"a {opened.kind} cannot come on {item.topic.channel}/")
            message_round = round_of(opened.message)
            number = self._current_round() if message_round is None else message_round
            self.guard.check(opened.sender, opened.ref, number)
        except Replay as exc:
            first = self.guard.refusal(opened.sender, opened.ref, number)
            repeated = _Repeated(first, exc.reason) if type(exc) is Replay and first else exc
            return self._refuse(repeated, item.envelope.data, item.party)
        except ProtocolError as exc:
            return self._refuse(exc, item.envelope.data, item.party)
        except Exception as exc:  # the boundary: input never stops the loop
            return self._refuse(_unforeseen(exc), item.envelope.data, item.party)
        if is_will:
            effects: Sequence[Publish | Record | WakeAt] = self._on_will(opened, now)
        else:
            effects = self.core.handle(opened.received(now))
        if isinstance(opened.message, ProverOnline) and any(isinstance(e, Record) for e in effects):
            self.log.info(
                "coordinator.prover_online",
                prover=opened.sender,
                connected_at=opened.message.connected_at,
            )
        self.guard.admit(opened.sender, opened.ref, number, refused=_refused_code(effects, opened))
        return effects

    def _on_will(self, opened: Opened, now: int) -> Sequence[Publish | Record | WakeAt]:
        """A prover's last will: logged once per connection; an older one is a replay."""
        will = opened.message
        assert isinstance(will, ProverWill)
        last = self._wills.get(opened.sender)
        if last is not None and will.connected_at <= last:
            reason = f"a will of a connection made at {last} was taken already"
            return self._refuse(Replay(reason), b"", opened.sender, ref=opened.ref)
        self._wills[opened.sender] = will.connected_at
        self._wills.move_to_end(opened.sender)
        if len(self._wills) > WILLS_REMEMBERED:
            self._wills.popitem(last=False)
        effects = self.core.handle(opened.received(now))
        # `taken`: the core recorded it; a stranger's will or a stale one (the prover is
        # back on a newer connection) changes nothing.
        taken = any(isinstance(e, Record) for e in effects)
        rescue_at = self.core.pending_rescues().get(opened.sender) if taken else None
        self.log.info(
            "coordinator.prover_offline",
            prover=opened.sender,
            connected_at=will.connected_at,
            taken=taken,
            rescue_at=rescue_at,
        )
        return effects

    def _refuse(
        self, exc: ProtocolError, payload: bytes, party: str | None, *, ref: bytes | None = None
    ) -> list[Publish]:
        """Count a refusal; the Reject goes to the topic's party, if it has one.

        It names the envelope by `ref`, or by the reference of `payload` when not given.
        The Reject's own log line (`coordinator.rejected`) records it; a refusal nobody
        can be told of is logged here instead, so each refused input has one line.
        """
        self.stats.refused += 1
        if party is None:
            if self.metrics is not None:
                self.metrics.refused_unanswered(exc.code)
            self.log.warning("coordinator.refused", code=exc.code, reason=exc.reason)
            return []
        reject = rejection(exc, payload, self.market)
        if ref is not None:
            reject = msgspec.structs.replace(reject, ref=ref)
        return [Publish(reject, to=party)]

    def _outgoing(self, effect: Publish) -> list[_Outgoing]:
        """Count, log and seal one message: topics, envelopes and how many bids each acks.

        A message too large for one envelope goes out in parts (protocol.split). A round
        announcement is retained by the broker, so a party that subscribes while the
        round is open still hears of it.
        """
        message = effect.message
        for each in message.notices if isinstance(message, Notices) else (message,):
            changed = self.tally.note(each)
            if changed is not None:
                self._changed_rounds.add(changed)
            if self.metrics is not None:
                row = None if changed is None else self.tally.rows.get(changed)
                self.metrics.sent(each, row)
        if isinstance(message, Reject):
            self.log.warning(
                "coordinator.rejected",
                to=effect.to,
                code=message.code,
                reason=message.reason,
                round=message.round,
            )
        elif isinstance(message, Rejects):
            codes = collections.Counter(entry.code for entry in message.rejects)
            self.log.warning(
                "coordinator.rejected_bids",
                to=effect.to,
                codes=dict(codes),
                reason=message.rejects[0].reason,
                round=message.rejects[0].round,
            )
        topic = (
            topics.public(self.market)
            if effect.to is None
            else topics.outbox(self.market, effect.to)
        )
        out: list[_Outgoing] = []
        retain = isinstance(message, RoundAnnouncement)
        try:
            for part in split_to_fit(message):
                envelope = seal(self.identity, part, self.market, effect.to)
                out.append(_Outgoing(topic, envelope, _acks(part), retain))
        except ProtocolError as exc:  # a message our own schema refuses: a bug, not input
            self.log.error("coordinator.unsendable", code=exc.code, reason=exc.reason)
            return []
        kind = kind_of(message)
        self.stats.sent[kind] = self.stats.sent.get(kind, 0) + len(out)
        return out

    def _arm(self, at: int | None) -> None:
        """Keep one timer, set for the earliest deadline the core is waiting on."""
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        delay = max(0, at - self.clock()) / 1000
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        at, self._timer, self._timer_at = self._timer_at, None, None
        now = self.clock()
        if at is not None and now < at:
            self._arm(at)  # the loop's timer ran ahead of the wall clock
            return
        self._ticks.put_nowait(Tick(now))


def _overloaded(market: str, party: str, refs: list[bytes], reason: str) -> list[Publish]:
    """One `reject` for one envelope, a `rejects` per TASK_BIDS_MAX for more."""
    code = RejectCode.OVERLOADED
    if len(refs) == 1:
        return [Publish(Reject(market=market, code=code, reason=reason, ref=refs[0]), to=party)]
    entries = [RejectEntry(code, reason, ref) for ref in refs]
    return [
        Publish(Rejects(market=market, rejects=entries[i : i + TASK_BIDS_MAX]), to=party)
        for i in range(0, len(entries), TASK_BIDS_MAX)
    ]


def _unforeseen(exc: Exception) -> ProtocolError:
    """What the boundary makes of an exception no check foresaw: a refusal of the input."""
    return BadEncoding(f"input could not be processed ({type(exc).__name__})")


class _Repeated(ProtocolError):
    """A copy of an envelope the market rules refused: the first refusal, again."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{reason}; refused then as {code}")
        self.code = code  # type: ignore[misc]


def _refused_code(effects: Sequence[Publish | Record | WakeAt], opened: Opened) -> str | None:
    """The code the core refused `opened` with, or None if it took it."""
    for effect in effects:
        message = effect.message if isinstance(effect, Publish) else None
        if isinstance(message, Reject) and message.ref == opened.ref:
            return message.code
    return None


def _acks(message: Message) -> int:
    """How many bids a message acknowledges."""
    if isinstance(message, BidReceipt):
        return 1
    if isinstance(message, BidReceipts):
        return len(message.receipts)
    return 0


async def run_coordinator(
    identity: Identity,
    config: CoordinatorConfig,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock = wall_ms,
    verifier: InlineVerifier | PoolVerifier | None = None,
) -> Coordinator:
    """Run a market's coordinator until its rounds are done or it is stopped.

    `verifier`, when given, is one the caller made (and perhaps spawned) early; it is
    closed here, as is the one made of `config.verify_workers` otherwise.
    """
    if stop is None:
        # no caller to stop us: SIGINT and SIGTERM do
        stop = asyncio.Event()
        install_stop_signals(stop)
    laps = StartupLaps()
    # The slow parts of starting overlap: the signature workers start (on another core)
    # while the broker is connected and the record log folded; serving waits for both.
    verifier = verifier or new_verifier(config.verify_workers)
    warming = asyncio.create_task(verifier.start(), name="coordinator:verifier")
    try:
        async with open_bus(
            config.broker,
            client_id=identity.public_hex,
            username=identity.public_hex,
            password=config.password,
            ca_file=config.ca_file,
            clock=clock,  # arrivals and deadlines on one clock
        ) as bus:
            laps.lap("connect")
            if not resuming(config.ledger):
                # A new market's clock starts when the coordinator can take its first bid.
                await warming
            log = open_record_log(
                config.ledger,
                key=identity.public_hex,
                params=config.params,
                genesis=config.genesis,
                start_ms=clock() + config.start_delay_ms,
                snapshot_every=config.snapshot_every,
                retention=config.retention,
            )
            try:
                core = await _serve(
                    identity, log, bus, (verifier, warming), config, stop, clock, laps
                )
            finally:
                log.close()
    finally:
        warming.cancel()
        await asyncio.gather(warming, return_exceptions=True)
        verifier.close()
    return core


async def _serve(
    identity: Identity,
    log: RecordLog,
    bus: Bus,
    verifying: tuple[SignatureVerifier, asyncio.Task[None]],
    config: CoordinatorConfig,
    stop: asyncio.Event,
    clock: Clock,
    laps: StartupLaps,
) -> Coordinator:
    """Fold the record log into a core and serve it once the verifier is up."""
    verifier, warming = verifying
    folded = fold(log, rounds=config.rounds, tie_signer=identity.sign)
    # The restored state is the long-lived heap a clearing settles (runtime.heap): frozen
    # now, the collector's first passes do not crawl it while the service starts.
    heap.freeze()
    laps.lap("fold")
    structlog.get_logger("coordinator").info(
        "coordinator.restored",
        records=len(log),
        snapshot=folded.snapshot,
        replayed=len(folded.tail),
        resend=len(folded.resend),
        ms=round(folded.seconds * 1000, 1),
    )
    log.attach(folded.core, forked=True)
    metrics = None
    if config.metrics is not None:
        from coordinator.metrics import CoordinatorMetrics

        metrics = CoordinatorMetrics(folded.core, bus)
    service = CoordinatorService(
        folded.core,
        identity,
        bus,
        log,
        clock=clock,
        recorded=folded.tail,
        resend=folded.resend,
        verifier=verifier,
        metrics=metrics,
        startup=laps,
    )
    folded.tail, folded.resend = [], []  # taken in by the service; not kept for its life
    laps.lap("service")
    await warming  # a worker that failed to start fails the start-up here
    laps.lap("verifier")
    registry = None if service.metrics is None else service.metrics.registry
    async with serving(config.metrics, registry, _health_checks(config, service), service.log):
        await service.run(stop)
    # Stopped cleanly (a bus failure raises past this): a planned restart then loads this
    # snapshot and replays nothing. One sent before the stop finished is not used.
    log.finish_snapshot()
    log.snapshot_if_behind()
    return folded.core


def _health_checks(config: CoordinatorConfig, service: CoordinatorService) -> dict[str, Check]:
    """Deaf to the broker, or unable to write the ledger: either fails /health."""
    checks = {"broker": bus_check(service.bus, lambda: service.subscribed)}
    if config.ledger is not None:
        checks["ledger"] = ledger_check(config.ledger)
    return checks


def summary_from_ledger(
    config: CoordinatorConfig, key: str, tie_signer: Callable[[bytes], bytes] | None = None
) -> dict[str, object]:
    """The `proofmarket sim` report of a finished (or stopped) networked run, from its ledger.

    A report covers every round, so it folds the whole log rather than a snapshot. A
    market with signed ties needs the coordinator's signer to replay its clearings.
    """
    if config.ledger is None:
        raise ValueError("a summary needs a ledger file")
    meta = read_meta(config.ledger)
    log = RecordLog(SqliteStore(config.ledger), meta)
    tally = RoundTally()
    try:
        folded = fold(
            log,
            rounds=config.rounds,
            use_snapshot=False,
            observe=tally.note,
            keep_tail=False,
            tie_signer=tie_signer,
        )
    finally:
        log.close()
    report = market_report(folded.core, tally)
    report["finished"] = folded.core.finished
    return report
