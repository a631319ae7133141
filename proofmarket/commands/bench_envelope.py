"""`proofmarket bench envelope`: opening sealed task bids against bare Ed25519 verification."""

from __future__ import annotations

import click


@click.command("envelope")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Distinct sealed task bids per timing run.",
)
@click.option("--users", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Runs per timing; the best one counts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_envelope(n: int, users: int, repeat: int, as_json: bool) -> None:
    """Time the coordinator's open (size check, decrypt, verify, decode, ref) of sealed
    task bids against bare Ed25519 verifications of the same signed bytes, in one run.

    ratio = opened per second / verifications per second; the signature check is the
    floor, so the closer to 1 the less everything else costs.
    """
    import json
    import time
    from collections.abc import Callable

    import nacl.bindings as sodium

    from protocol.envelope import DOMAIN, open_envelope, seal
    from protocol.identity import Identity
    from protocol.messages import TaskBidMessage

    market = "bench"
    coordinator = Identity.from_seed(b"\x00" * 32)
    senders = [Identity.from_seed(i.to_bytes(32, "big")) for i in range(1, users + 1)]
    envelopes: list[bytes] = []
    signed: list[tuple[bytes, bytes]] = []
    for i in range(n):
        user = senders[i % users]
        bid = TaskBidMessage(
            market=market,
            round=12_345,
            task_id=f"task-{i:08d}",
            fee=1_000 + i,
            task_input=(i * 2_654_435_761 % 2**256).to_bytes(32, "big") * 2,
        )
        data = seal(user, bid, to=coordinator.public_key, seq=i)
        envelopes.append(data)
        # The same bytes the envelope signs, as signature || message for crypto_sign_open.
        header_end = 2 + 8 + 32 + 32 + 1 + len(market) + 1 + len("task_bid")
        plain = open_envelope(coordinator, data, market=market)
        body = _body(plain.message)
        signature = user.sign(DOMAIN + data[:header_end] + body)
        signed.append((signature + DOMAIN + data[:header_end] + body, user.public_key.raw))

    def open_all() -> None:
        for data in envelopes:
            open_envelope(coordinator, data, market=market)

    verify = sodium.crypto_sign_open

    def verify_all() -> None:
        for message, key in signed:
            verify(message, key)

    def timed(run: Callable[[], None]) -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    # Alternate the two, run by run, so both see the same machine load; best run counts.
    open_all()  # warm the Box key cache, as a running coordinator's would be
    open_s = verify_s = float("inf")
    for _ in range(repeat):
        open_s = min(open_s, timed(open_all))
        verify_s = min(verify_s, timed(verify_all))
    opened_per_s = n / open_s
    verified_per_s = n / verify_s
    ratio = opened_per_s / verified_per_s
    if as_json:
        click.echo(
            json.dumps(
                {
                    "n": n,
                    "envelope_bytes": len(envelopes[0]),
                    "opened_per_s": round(opened_per_s, 1),
                    "verified_per_s": round(verified_per_s, 1),
                    "ratio": round(ratio, 4),
                }
            )
        )
    else:
        click.echo(
            f"open sealed task bid ({len(envelopes[0])} B): {opened_per_s:,.0f}/s; "
            f"bare Ed25519 verify: {verified_per_s:,.0f}/s; ratio {ratio:.3f}"
        )


def _body(message: object) -> bytes:
    import msgspec

    return msgspec.msgpack.encode(message)
