"""The inbox's admission rule: a bound for everyone, a reserve above it for priority senders."""

from __future__ import annotations

from protocol.envelope import envelope_ref
from runtime.inbox import InboxAdmission


def test_below_the_bound_everyone_is_admitted() -> None:
    """Up to the bound, a delivery joins whoever sends it."""
    admission = InboxAdmission(10)
    assert [True, False] == [admission.admits(9, "t/in/u"), admission.admits(10, "t/in/u")]


def test_priority_senders_use_the_reserve_and_no_more() -> None:
    """At the bound a prover's delivery still joins, until the reserve is used up too."""
    admission = InboxAdmission(10)
    admission.priority = lambda topic: topic.endswith("/prover")
    at_bound = [admission.admits(10, "t/in/prover"), admission.admits(10, "t/in/user")]
    full = admission.admits(10 + admission.reserve, "t/in/prover")
    assert ([True, False], False) == (at_bound, full)


def test_dropped_deliveries_are_noted_by_reference_once() -> None:
    """When noting, each drop is taken once as (topic, envelope reference); else forgotten."""
    admission = InboxAdmission(1)
    admission.dropped("t/in/a", b"quiet")
    admission.noting = True
    admission.dropped("t/in/a", b"one")
    admission.dropped("t/in/b", b"two")
    expected = [("t/in/a", envelope_ref(b"one")), ("t/in/b", envelope_ref(b"two"))]
    assert (expected, []) == (admission.take_overflow(), admission.take_overflow())
