"""Every MQTT topic of the protocol, built and parsed here and nowhere else.

    proofmarket/v1/<market>/in/<sender>        participant -> coordinator (bids, proofs)
    proofmarket/v1/<market>/out/<recipient>    coordinator -> one participant
    proofmarket/v1/<market>/public             coordinator -> everyone (announcements)
    proofmarket/v1/<market>/will/<prover>      a prover's last will, published by the broker

A participant publishes only to topics that end in its own public key (64 lowercase
hex), and logs in to the broker with that key as username, so one broker rule per
channel pins every identity: `pattern write proofmarket/v1/+/in/%u`. The coordinator of a
market is a named user with rights on that market's `out/+` and `public` only. On receipt
the coordinator also checks that the envelope's signer is the topic's party
(`expect_sender`), so the broker rule and the signature agree.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Literal

from protocol.errors import BadTopic, WrongSender

ROOT: Final = "proofmarket/v1"
USERNAME: Final = "%u"
"""Mosquitto's placeholder for the logged-in username (a public key) in ACL patterns."""

Channel = Literal["in", "out", "public", "will"]
Access = Literal["read", "write"]

_MARKET: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEY: Final = re.compile(r"[0-9a-f]{64}")
_KEYED: Final = frozenset({"in", "out", "will"})


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: its market, its channel and the party it names (None for public)."""

    market: str
    channel: Channel
    party: str | None


@dataclass(frozen=True, slots=True)
class AclRule:
    """One broker permission. `topic` may contain MQTT wildcards and, when `per_user`,
    the USERNAME placeholder (a Mosquitto `pattern` line rather than a `topic` line)."""

    access: Access
    topic: str
    per_user: bool


def inbox(market: str, sender: str) -> str:
    """Where `sender` publishes to the market's coordinator."""
    return f"{_market(market)}/in/{_key(sender)}"


def outbox(market: str, recipient: str) -> str:
    """Where the coordinator publishes to `recipient` alone."""
    return f"{_market(market)}/out/{_key(recipient)}"


def public(market: str) -> str:
    """Where the coordinator publishes round announcements and clearing results."""
    return f"{_market(market)}/public"


def will(market: str, prover: str) -> str:
    """The last-will topic of `prover`: the broker publishes there when it drops off."""
    return f"{_market(market)}/will/{_key(prover)}"


@functools.lru_cache(maxsize=4096)
def parse(topic: str) -> Topic:
    """Parse any protocol topic; raise BadTopic for anything else.

    Cached: a coordinator sees the same few thousand inbox topics over and over, and a
    Topic is immutable. Refusals are not cached, so junk topics cannot fill it.
    """
    parts = topic.split("/")
    if len(parts) not in (4, 5) or f"{parts[0]}/{parts[1]}" != ROOT:
        raise BadTopic(f"not a proofmarket topic: {topic!r}")
    market, channel = parts[2], parts[3]
    if not _MARKET.fullmatch(market):
        raise BadTopic(f"bad market in topic {topic!r}")
    if channel == "public" and len(parts) == 4:
        return Topic(market, "public", None)
    if channel in _KEYED and len(parts) == 5 and _KEY.fullmatch(parts[4]):
        return Topic(market, channel, parts[4])  # type: ignore[arg-type]
    raise BadTopic(f"not a proofmarket topic: {topic!r}")


def expect_sender(topic: Topic, sender: str) -> None:
    """Raise WrongSender unless the envelope's signer `sender` is the topic's party."""
    if topic.party != sender:
        raise WrongSender(f"envelope signed by {sender} arrived on {topic.party}'s topic")


def coordinator_subscriptions(market: str) -> list[str]:
    """What a market's coordinator subscribes to: every inbox and every prover's will."""
    return [f"{_market(market)}/in/+", f"{_market(market)}/will/+"]


def participant_subscriptions(market: str, me: str) -> list[str]:
    """What a prover or user subscribes to: its own outbox and the public channel."""
    return [outbox(market, me), public(market)]


def participant_acl() -> list[AclRule]:
    """Rules for every participant, across all markets, keyed on the login username."""
    any_market = f"{ROOT}/+"
    return [
        AclRule("write", f"{any_market}/in/{USERNAME}", per_user=True),
        AclRule("write", f"{any_market}/will/{USERNAME}", per_user=True),
        AclRule("read", f"{any_market}/out/{USERNAME}", per_user=True),
        AclRule("read", f"{any_market}/public", per_user=True),
    ]


def coordinator_acl(market: str) -> list[AclRule]:
    """Rules for the coordinator user of `market` (a `user <pubkey>` block)."""
    base = _market(market)
    return [
        AclRule("read", f"{base}/in/+", per_user=False),
        AclRule("read", f"{base}/will/+", per_user=False),
        AclRule("write", f"{base}/out/+", per_user=False),
        AclRule("write", f"{base}/public", per_user=False),
    ]


def _market(market: str) -> str:
    if not _MARKET.fullmatch(market):
        raise BadTopic(f"bad market name {market!r}: 1-64 of A-Z a-z 0-9 _ . -")
    return f"{ROOT}/{market}"


def _key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise BadTopic(f"bad public key {key!r}: 64 lowercase hex characters")
    return key
