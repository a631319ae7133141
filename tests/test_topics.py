"""Topics: one builder and parser, every participant topic ending in its own key."""

from __future__ import annotations

import re

import pytest

from protocol import topics
from protocol.errors import BadTopic, WrongSender

KEY = "ab" * 32
OTHER = "cd" * 32


def test_builders_and_parse_round_trip() -> None:
    """Every built topic parses back to its market, channel and party."""
    assert topics.Topic("m1", "in", KEY) == topics.parse(topics.inbox("m1", KEY))
    assert topics.Topic("m1", "out", KEY) == topics.parse(topics.outbox("m1", KEY))
    assert topics.Topic("m1", "will", KEY) == topics.parse(topics.will("m1", KEY))
    assert topics.Topic("m1", "public", None) == topics.parse(topics.public("m1"))


def test_topic_tree_shape() -> None:
    """Topics follow proofmarket/v1/<market>/<channel>[/<key>]."""
    assert f"proofmarket/v1/m1/in/{KEY}" == topics.inbox("m1", KEY)
    assert "proofmarket/v1/m1/public" == topics.public("m1")


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "proofmarket/v1/m1",
        "proofmarket/v2/m1/public",
        f"proofmarket/v1/m1/in/{KEY}/extra",
        "proofmarket/v1/m1/in/" + "AB" * 32,
        "proofmarket/v1/m1/in/abc",
        f"proofmarket/v1/bad market/in/{KEY}",
        f"proofmarket/v1/m1/secret/{KEY}",
        f"proofmarket/v1/m1/public/{KEY}",
        "proofmarket/v1/m1/in",
    ],
)
def test_parse_refuses_foreign_topics(topic: str) -> None:
    """Anything that is not exactly a protocol topic raises BadTopic."""
    with pytest.raises(BadTopic):
        topics.parse(topic)


@pytest.mark.parametrize("market", ["", "a/b", "+", "#", "x" * 65])
def test_builders_refuse_bad_markets(market: str) -> None:
    """Market names that would break the topic tree or wildcards are refused."""
    with pytest.raises(BadTopic):
        topics.public(market)


@pytest.mark.parametrize("key", ["+", "#", KEY + "/x", KEY.upper()])
def test_builders_refuse_bad_keys(key: str) -> None:
    """Keys that are not 64 lowercase hex (wildcards included) are refused."""
    with pytest.raises(BadTopic):
        topics.inbox("m1", key)


def test_expect_sender() -> None:
    """An envelope signed by someone other than the topic's party is refused."""
    topic = topics.parse(topics.inbox("m1", KEY))
    topics.expect_sender(topic, KEY)
    with pytest.raises(WrongSender):
        topics.expect_sender(topic, OTHER)


def _matches(pattern: str, topic: str) -> bool:
    """MQTT topic-filter matching (+ one level, # the rest)."""
    regex = re.escape(pattern).replace(r"\+", "[^/]+").replace(r"\#", ".*")
    return re.fullmatch(regex, topic) is not None


def test_participant_acl_allows_exactly_its_own_publish_topics() -> None:
    """With username substituted, a participant may write only its own in and will topics."""
    writes = [
        rule.topic.replace(topics.USERNAME, KEY)
        for rule in topics.participant_acl()
        if rule.access == "write"
    ]
    assert all(rule.per_user for rule in topics.participant_acl())
    assert any(_matches(w, topics.inbox("m1", KEY)) for w in writes)
    assert any(_matches(w, topics.will("m1", KEY)) for w in writes)
    assert not any(_matches(w, topics.inbox("m1", OTHER)) for w in writes)
    assert not any(_matches(w, topics.public("m1")) for w in writes)
    assert not any(_matches(w, topics.outbox("m1", KEY)) for w in writes)


def test_participant_acl_covers_its_subscriptions() -> None:
    """Every topic a participant subscribes to is readable under its ACL."""
    reads = [
        rule.topic.replace(topics.USERNAME, KEY)
        for rule in topics.participant_acl()
        if rule.access == "read"
    ]
    for sub in topics.participant_subscriptions("m1", KEY):
        assert any(_matches(r, sub) for r in reads), sub


def test_coordinator_acl_is_one_market() -> None:
    """The coordinator reads and writes its market's topics and no other market's."""
    rules = topics.coordinator_acl("m1")
    writes = [r.topic for r in rules if r.access == "write"]
    reads = [r.topic for r in rules if r.access == "read"]
    assert any(_matches(w, topics.outbox("m1", KEY)) for w in writes)
    assert any(_matches(w, topics.public("m1")) for w in writes)
    assert not any(_matches(w, topics.public("m2")) for w in writes)
    for sub in topics.coordinator_subscriptions("m1"):
        assert sub in reads
