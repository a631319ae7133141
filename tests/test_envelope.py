"""Envelopes: round trips for every kind, and every way a tampered envelope is refused."""

from __future__ import annotations

import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import messages as m
from protocol.envelope import (
    DOMAIN,
    MAX_ENVELOPE_SIZE,
    PUBLIC_KINDS,
    envelope_ref,
    kind_of,
    open_envelope,
    seal,
    signatures_valid,
    unseal,
)
from protocol.errors import (
    BadCiphertext,
    BadEncoding,
    BadSignature,
    ProtocolError,
    TooLarge,
    UnknownKind,
    UnknownVersion,
    WrongKind,
    WrongMarket,
    WrongMode,
    WrongRecipient,
)
from protocol.identity import Identity

COORDINATOR = Identity.from_seed(b"c" * 32)
PROVER = Identity.from_seed(b"p" * 32)
USER = Identity.from_seed(b"u" * 32)
MALLORY = Identity.from_seed(b"m" * 32)
MARKET = "sloth-256"
DIGEST = bytes(range(16))

PARAMS = m.MarketParams(
    market=MARKET,
    p_max=100,
    epoch_rounds=4,
    capacity_factor=2,
    mechanism="prooph",
    difficulty=1000,
    setup=50,
    bid_window_ms=2000,
    prove_window_ms=5000,
)

SAMPLES: list[m.Message] = [
    m.RoundAnnouncement(
        market=MARKET, round=7, epoch=1, bid_deadline=1000, prove_deadline=6000, params=PARAMS
    ),
    m.CapacityDeclaration(market=MARKET, epoch=1, capacity=5),
    m.ProverCostBid(market=MARKET, round=7, cost=3),
    m.TaskBidMessage(
        market=MARKET, round=7, task_id="t-1", fee=40, task_input=b"\x01" * 64, carry_over=True
    ),
    m.TaskBids(
        market=MARKET,
        round=7,
        bids=[m.TaskBidEntry("t-2", 40, b"\x03" * 32), m.TaskBidEntry("t-3", 0, b"", True)],
        late_to_next=True,
    ),
    m.BidReceipt(market=MARKET, round=7, ref=DIGEST, escrowed=40),
    m.BidReceipts(
        market=MARKET,
        receipts=[m.ReceiptEntry(7, DIGEST, 40), m.ReceiptEntry(7, DIGEST[::-1], 12)],
    ),
    m.ClearingResult(
        market=MARKET,
        round=7,
        mechanism="prooph",
        tasks_bid=3,
        provers_bid=2,
        allocated_provers=1,
        allocated_tasks=2,
        user_price=9,
        prover_price=1,
        winners=[PROVER.public_hex],
        surplus=16,
        prove_deadline=6000,
    ),
    m.Assignment(
        market=MARKET,
        round=7,
        prove_deadline=6000,
        difficulty=1000,
        setup=50,
        payment=2,
        tasks=[m.AssignedTask("t-1", b"in1"), m.AssignedTask("t-2", b"in2")],
    ),
    m.UserReceipt(
        market=MARKET, round=7, task_id="t-1", allocated=True, price=9, prover=PROVER.public_hex
    ),
    m.ProofSubmission(market=MARKET, round=7, proofs=[m.TaskProof("t-1", b"\x02" * 32)]),
    m.SettlementNotice(
        market=MARKET, round=7, outcome="charged", amount=9, task_id="t-1", proof=b"\x02" * 32
    ),
    m.Reject(market=MARKET, code="bad_signature", reason="no", ref=DIGEST, round=7),
    m.Rejects(
        market=MARKET,
        rejects=[
            m.RejectEntry("duplicate_task", "twice", DIGEST, 7),
            m.RejectEntry("fee_above_p_max", "high", DIGEST[::-1], 7),
        ],
    ),
    m.Notices(
        market=MARKET,
        notices=[
            m.UserReceipt(market=MARKET, round=7, task_id="t-2", allocated=False, carried_to=8),
            m.SettlementNotice(
                market=MARKET, round=7, outcome="released", amount=40, task_id="t-3"
            ),
        ],
    ),
    m.Withdrawal(market=MARKET, round=7, account="deposit", amount=30),
    m.WithdrawalReceipt(
        market=MARKET, round=7, ref=DIGEST, account="deposit", amount=30, remaining=70
    ),
    m.FaucetGrant(market=MARKET, to=USER.public_hex, account="balance", amount=500, nonce=1),
    m.FundingNotice(market=MARKET, to=USER.public_hex, account="balance", amount=500, nonce=1),
    m.StatusQuery(market=MARKET, round=3),
    m.AccountStatus(
        market=MARKET,
        round=3,
        epoch=0,
        ref=b"q" * 16,
        balance=70,
        escrow=30,
        deposit=80,
        locked=20,
        capacities=[m.EpochCapacity(epoch=0, capacity=2)],
        open_batches=[2],
        open_tasks=[m.OpenTask(task_id="t1", round=3, fee=30, status="open")],
        open_task_count=1,
        faucet=USER.public_hex,
    ),
    m.ProverWill(market=MARKET, connected_at=1_700_000_000_000),
    m.ProverOnline(market=MARKET, connected_at=1_700_000_000_000),
]


def _sealed_by(message: m.Message) -> tuple[Identity, Identity | None]:
    """Who sends a sample, and to whom (None: public)."""
    kind = kind_of(message)
    if kind in PUBLIC_KINDS:
        return COORDINATOR, None
    if kind in {"capacity_declaration", "prover_bid", "proof_submission", "withdrawal"}:
        return PROVER, COORDINATOR
    if kind in {"task_bid", "task_bids", "faucet_grant"}:
        return USER, COORDINATOR
    return COORDINATOR, PROVER


def _envelope(message: m.Message, seq: int = 1) -> tuple[bytes, Identity | None]:
    sender, recipient = _sealed_by(message)
    to = None if recipient is None else recipient.public_key
    return seal(sender, message, MARKET, to, seq=seq), recipient


def _task_bid(**changes: object) -> m.TaskBidMessage:
    bid = SAMPLES[3]
    assert isinstance(bid, m.TaskBidMessage)
    return msgspec.structs.replace(bid, **changes)


def test_samples_cover_every_kind() -> None:
    """The sample set has one message of every kind the protocol defines."""
    assert sorted(m.KINDS) == sorted(kind_of(s) for s in SAMPLES)


@pytest.mark.parametrize("message", SAMPLES, ids=kind_of)
def test_round_trip_every_kind(message: m.Message) -> None:
    """Each kind seals and opens back to an equal message with sender, kind and seq."""
    data, recipient = _envelope(message, seq=42)
    opened = open_envelope(recipient, data, market=MARKET)
    sender, _ = _sealed_by(message)
    assert message == opened.message
    assert sender.public_hex == opened.sender
    assert kind_of(message) == opened.kind
    assert 42 == opened.seq
    assert (recipient is not None) == opened.sealed
    assert envelope_ref(data) == opened.ref


@pytest.mark.parametrize("message", SAMPLES, ids=kind_of)
def test_opening_in_three_steps_equals_open_envelope(message: m.Message) -> None:
    """unseal, then signatures_valid, then accept opens exactly what open_envelope opens."""
    data, recipient = _envelope(message, seq=9)
    unverified = unseal(recipient, data, market=MARKET)
    (valid,) = signatures_valid([(unverified.signed_message, unverified.sender)])
    assert open_envelope(recipient, data, market=MARKET) == unverified.accept(valid)


def test_signatures_valid_judges_each_pair_in_order() -> None:
    """A batch check answers per pair, in order: a forged signature fails only its own pair."""
    pairs = []
    for n in range(6):
        data, recipient = _envelope(_task_bid(task_id=f"t{n}"), seq=n)
        unverified = unseal(recipient, data, market=MARKET)
        signed = unverified.signed_message
        if n in (1, 4):
            signed = bytes([signed[0] ^ 0x01]) + signed[1:]
        pairs.append((signed, unverified.sender))
    assert [True, False, True, True, False, True] == signatures_valid(pairs)


def test_accept_refuses_an_unverified_signature_before_decoding() -> None:
    """An envelope whose signature failed is a bad_signature, whatever its body holds."""
    data, recipient = _envelope(SAMPLES[3])
    unverified = unseal(recipient, data, market=MARKET)
    with pytest.raises(BadSignature):
        unverified.accept(False)


@pytest.mark.parametrize("message", SAMPLES, ids=kind_of)
def test_body_is_plain_messagepack(message: m.Message) -> None:
    """A body decodes with the plain msgpack package to the documented map."""
    body = msgspec.msgpack.encode(message)
    decoded = msgpack.unpackb(body, raw=False)
    assert kind_of(message) == decoded["kind"]
    assert 1 == decoded["v"]
    assert MARKET == decoded["market"]


def test_public_body_is_readable_in_the_envelope() -> None:
    """A public envelope's body is the bytes after the signature, plain MessagePack."""
    announcement = SAMPLES[0]
    data = seal(COORDINATOR, announcement)
    header_end = 2 + 8 + 32 + 1 + len(MARKET) + 1 + len("round_announcement")
    body = data[header_end + 64 :]
    assert 7 == msgpack.unpackb(body)["round"]


def test_signature_covers_domain_header_and_body() -> None:
    """The documented signed bytes (DOMAIN || header || body) verify under the sender key."""
    import nacl.signing

    data = seal(COORDINATOR, SAMPLES[0], seq=5)
    header_end = 2 + 8 + 32 + 1 + len(MARKET) + 1 + len("round_announcement")
    signature = data[header_end : header_end + 64]
    signed = DOMAIN + data[:header_end] + data[header_end + 64 :]
    key = nacl.signing.VerifyKey(COORDINATOR.public_key.raw)
    assert signed == key.verify(signed, signature)


@pytest.mark.parametrize("message", [SAMPLES[0], SAMPLES[3]], ids=kind_of)
def test_flipping_any_byte_is_refused(message: m.Message) -> None:
    """Every single-bit change anywhere in a public or sealed envelope raises a ProtocolError."""
    data, recipient = _envelope(message)
    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises(ProtocolError):
            open_envelope(recipient, bytes(tampered), market=MARKET)


def test_truncation_is_refused() -> None:
    """Every proper prefix of an envelope is refused."""
    data, recipient = _envelope(SAMPLES[3])
    for length in range(len(data)):
        with pytest.raises(ProtocolError):
            open_envelope(recipient, data[:length], market=MARKET)


def test_appended_bytes_are_refused() -> None:
    """Bytes appended to a public envelope break its signature."""
    data = seal(COORDINATOR, SAMPLES[0])
    with pytest.raises(BadSignature):
        open_envelope(None, data + b"\x00", market=MARKET)


def test_oversize_is_refused_before_parsing() -> None:
    """An envelope over the limit raises TooLarge even when it is garbage."""
    with pytest.raises(TooLarge):
        open_envelope(COORDINATOR, b"\xff" * (MAX_ENVELOPE_SIZE + 1), market=MARKET)


def test_size_limit_applies_to_valid_envelopes() -> None:
    """A valid envelope over a smaller limit is refused on open and on seal."""
    data, recipient = _envelope(SAMPLES[3])
    with pytest.raises(TooLarge):
        open_envelope(recipient, data, market=MARKET, max_size=len(data) - 1)
    with pytest.raises(TooLarge):
        seal(USER, SAMPLES[3], to=COORDINATOR.public_key, max_size=len(data) - 1)


def test_wrong_recipient_is_refused() -> None:
    """A bid sealed to the coordinator cannot be opened by another party or by no one."""
    data, _ = _envelope(SAMPLES[3])
    with pytest.raises(WrongRecipient):
        open_envelope(MALLORY, data, market=MARKET)
    with pytest.raises(WrongRecipient):
        open_envelope(None, data, market=MARKET)


def test_readdressed_envelope_is_refused() -> None:
    """Rewriting the recipient field to the reader's key fails authentication."""
    data, _ = _envelope(SAMPLES[3])
    forged = data[:42] + MALLORY.public_key.raw + data[74:]
    with pytest.raises(BadCiphertext):
        open_envelope(MALLORY, forged, market=MARKET)


def test_swapped_sender_is_refused() -> None:
    """Putting another party's key in the sender field of a public envelope fails."""
    data = seal(COORDINATOR, SAMPLES[0])
    forged = data[:10] + MALLORY.public_key.raw + data[42:]
    with pytest.raises(BadSignature):
        open_envelope(None, forged, market=MARKET)


def test_swapped_sender_of_sealed_envelope_is_refused() -> None:
    """A sealed envelope claiming another sender fails (its Box key differs)."""
    data, _ = _envelope(SAMPLES[3])
    forged = data[:10] + PROVER.public_key.raw + data[42:]
    with pytest.raises(BadCiphertext):
        open_envelope(COORDINATOR, forged, market=MARKET)


def test_resigned_by_impostor_is_not_the_original_sender() -> None:
    """An impostor can only sign as itself: the opened sender names the impostor."""
    data = seal(MALLORY, _task_bid(), to=COORDINATOR.public_key)
    assert MALLORY.public_hex == open_envelope(COORDINATOR, data, market=MARKET).sender


def test_wrong_market_is_refused() -> None:
    """An envelope for another market is refused, whether header or body says so."""
    data, recipient = _envelope(SAMPLES[3])
    with pytest.raises(WrongMarket):
        open_envelope(recipient, data, market="other")
    other = _task_bid(market="other")
    with pytest.raises(WrongMarket):
        seal(USER, other, MARKET, COORDINATOR.public_key)


def test_body_market_must_match_header() -> None:
    """A signed envelope whose body names another market than its header is refused."""
    body = msgspec.msgpack.encode(_task_bid(market="x"))
    data = _hand_sealed(USER, COORDINATOR, "task_bid", body)
    with pytest.raises(WrongMarket):
        open_envelope(COORDINATOR, data, market=MARKET)


def test_body_kind_must_match_header() -> None:
    """A signed envelope whose body kind differs from its header's kind is refused."""
    bid = msgspec.msgpack.encode(m.ProverCostBid(market=MARKET, round=7, cost=3))
    data = _hand_sealed(USER, COORDINATOR, "task_bid", bid)
    with pytest.raises(WrongKind):
        open_envelope(COORDINATOR, data, market=MARKET)


def test_unknown_kind_is_refused() -> None:
    """An envelope naming a kind the protocol lacks is refused."""
    data = _hand_sealed(USER, COORDINATOR, "free_money", b"\x80")
    with pytest.raises(UnknownKind):
        open_envelope(COORDINATOR, data, market=MARKET)


def test_unknown_body_version_is_refused() -> None:
    """A body with schema version 2 is refused as an unknown version."""
    raw = msgpack.unpackb(msgspec.msgpack.encode(_task_bid()))
    data = _hand_sealed(USER, COORDINATOR, "task_bid", msgpack.packb({**raw, "v": 2}))
    with pytest.raises(UnknownVersion):
        open_envelope(COORDINATOR, data, market=MARKET)


def test_unknown_envelope_version_is_refused() -> None:
    """An envelope whose first byte is not version 1 is refused."""
    data, recipient = _envelope(SAMPLES[3])
    with pytest.raises(UnknownVersion):
        open_envelope(recipient, b"\x02" + data[1:], market=MARKET)


@pytest.mark.parametrize(
    "body",
    [
        {"fee": -1},
        {"fee": "40"},
        {"extra": 1},
        {"task_input": b"x" * 5000},
        {"market": "bad market!"},
    ],
    ids=["negative", "wrong-type", "unknown-field", "too-long", "bad-pattern"],
)
def test_invalid_bodies_are_refused(body: dict[str, object]) -> None:
    """Out-of-range, wrong-typed, unknown and oversize fields fail as bad encoding."""
    raw = msgpack.unpackb(msgspec.msgpack.encode(_task_bid()))
    data = _hand_sealed(USER, COORDINATOR, "task_bid", msgpack.packb({**raw, **body}))
    with pytest.raises(BadEncoding):
        open_envelope(COORDINATOR, data, market=MARKET)


def test_seal_refuses_an_invalid_message() -> None:
    """Sealing a message no reader would accept (negative fee) fails at once."""
    with pytest.raises(BadEncoding):
        seal(USER, _task_bid(fee=-5), to=COORDINATOR.public_key)


def test_modes_are_fixed_per_kind() -> None:
    """Bids must be sealed and announcements public, on both seal and open."""
    with pytest.raises(WrongMode):
        seal(USER, _task_bid())
    with pytest.raises(WrongMode):
        seal(COORDINATOR, SAMPLES[0], to=USER.public_key)
    unsealed = _hand_public(USER, "task_bid", msgspec.msgpack.encode(_task_bid()))
    with pytest.raises(WrongMode):
        open_envelope(COORDINATOR, unsealed, market=MARKET)


def test_round_is_bound_by_the_signature() -> None:
    """A public envelope's body cannot be moved to another round: the signature breaks."""
    data = seal(COORDINATOR, SAMPLES[0])
    original = msgspec.msgpack.encode(SAMPLES[0])
    moved = msgspec.msgpack.encode(msgspec.structs.replace(SAMPLES[0], round=8))
    assert len(original) == len(moved)
    forged = data[: len(data) - len(original)] + moved
    with pytest.raises(BadSignature):
        open_envelope(None, forged, market=MARKET)


def test_recipient_as_hex_matches_public_key() -> None:
    """Sealing to a hex key and to a PublicKey give envelopes the same reader can open."""
    a = seal(USER, _task_bid(), to=COORDINATOR.public_hex, seq=1)
    assert _task_bid() == open_envelope(COORDINATOR, a, market=MARKET).message


def test_accepts_any_market_when_none_expected() -> None:
    """market=None accepts the envelope and reports its market."""
    data, recipient = _envelope(SAMPLES[3])
    assert MARKET == open_envelope(recipient, data, market=None).market


def test_errors_carry_stable_codes() -> None:
    """Every concrete error has its own code, fit for Reject.code."""
    from protocol.errors import CODES, ERRORS

    assert len(ERRORS) == len(CODES)
    assert all(0 < len(code) <= 48 and code.islower() for code in CODES)
    assert "bad_signature" == BadSignature.code


def _hand_sealed(sender: Identity, recipient: Identity, kind: str, body: bytes) -> bytes:
    """Build a correctly signed and sealed envelope around arbitrary body bytes."""
    import nacl.bindings as sodium

    header = (
        b"\x01\x01"
        + (9).to_bytes(8, "big")
        + sender.public_key.raw
        + recipient.public_key.raw
        + bytes((len(MARKET),))
        + MARKET.encode()
        + bytes((len(kind),))
        + kind.encode()
    )
    signature = sender.sign(DOMAIN + header + body)
    nonce = b"\x00" * 24
    key = sender.box_key(recipient.public_key)
    return header + nonce + sodium.crypto_box_easy_afternm(signature + body, nonce, key)


def _hand_public(sender: Identity, kind: str, body: bytes) -> bytes:
    """Build a correctly signed public envelope around arbitrary body bytes."""
    header = (
        b"\x01\x00"
        + (9).to_bytes(8, "big")
        + sender.public_key.raw
        + bytes((len(MARKET),))
        + MARKET.encode()
        + bytes((len(kind),))
        + kind.encode()
    )
    return header + sender.sign(DOMAIN + header + body) + body


VALID = [_envelope(s) for s in SAMPLES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    """Random bytes never escape as anything but a ProtocolError."""
    with pytest.raises(ProtocolError):
        open_envelope(COORDINATOR, data, market=MARKET)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(VALID))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 10_000),
    st.binary(max_size=8),
)
def test_fuzz_mutated_envelopes_raise_only_protocol_errors(
    which: int, edits: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    """Valid envelopes with bytes replaced, cut or extended fail only with ProtocolError."""
    original, reader = VALID[which]
    data = bytearray(original)
    for position, value in edits:
        data[position % len(data)] = value
    mutated = bytes(data[: max(cut, len(data) // 2)]) + tail
    if mutated == original:
        assert open_envelope(reader, mutated, market=MARKET).message == SAMPLES[which]
        return
    for identity in (reader, PROVER, None):
        with pytest.raises(ProtocolError):
            open_envelope(identity, mutated, market=MARKET)


def test_documented_foreign_client_interoperates() -> None:
    """The docs/protocol.md example, using only msgpack and libsodium, opens here."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs/protocol.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)
    seal_task_bid = namespace["seal_task_bid"]
    assert callable(seal_task_bid)
    data = seal_task_bid(b"f" * 32, COORDINATOR.public_key.raw, MARKET, 7, "t-9", 5, b"in", 3)
    opened = open_envelope(COORDINATOR, data, market=MARKET)
    assert (
        m.TaskBidMessage(market=MARKET, round=7, task_id="t-9", fee=5, task_input=b"in")
        == opened.message
    )
    assert 3 == opened.seq
    assert Identity.from_seed(b"f" * 32).public_hex == opened.sender


def test_bench_envelope_prints_one_json_line() -> None:
    """`proofmarket bench envelope --json` prints the two rates and their ratio."""
    import json

    from click.testing import CliRunner

    from proofmarket.cli import cli

    result = CliRunner().invoke(cli, ["bench", "envelope", "--n", "20", "--repeat", "1", "--json"])
    assert 0 == result.exit_code, result.output
    report = json.loads(result.output)
    assert {"n", "envelope_bytes", "opened_per_s", "verified_per_s", "ratio"} == set(report)
    assert report["ratio"] == pytest.approx(
        report["opened_per_s"] / report["verified_per_s"], rel=1e-3
    )


def test_announced_params_must_name_the_market() -> None:
    """A round announcement whose params name another market is refused."""
    announcement = SAMPLES[0]
    assert isinstance(announcement, m.RoundAnnouncement)
    foreign = msgspec.structs.replace(
        announcement, params=msgspec.structs.replace(PARAMS, market="other")
    )
    data = seal(COORDINATOR, foreign)
    with pytest.raises(WrongMarket):
        open_envelope(None, data, market=MARKET)


def test_rejection_names_code_and_ref_and_seals() -> None:
    """A failed open turns into a sealable Reject carrying the code and the envelope ref."""
    from protocol.envelope import rejection

    data, _ = _envelope(SAMPLES[3])
    tampered = data[:-1] + bytes((data[-1] ^ 1,))
    with pytest.raises(ProtocolError) as caught:
        open_envelope(COORDINATOR, tampered, market=MARKET)
    reject = rejection(caught.value, tampered, MARKET, round=7)
    assert ("bad_ciphertext", envelope_ref(tampered), 7) == (reject.code, reject.ref, reject.round)
    long = rejection(BadEncoding("x" * 2000), tampered, MARKET)
    opened = open_envelope(USER, seal(COORDINATOR, long, to=USER.public_key), market=MARKET)
    assert isinstance(opened.message, m.Reject)
    assert 512 == len(opened.message.reason)


def test_opened_becomes_the_core_event() -> None:
    """Opened.received(now) carries sender, message and ref into a MessageReceived."""
    from protocol.events import MessageReceived

    data, recipient = _envelope(SAMPLES[3])
    opened = open_envelope(recipient, data, market=MARKET)
    expected = MessageReceived(sender=USER.public_hex, message=SAMPLES[3], ref=opened.ref, now=5)
    assert expected == opened.received(5)
