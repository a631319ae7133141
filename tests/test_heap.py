"""runtime.heap: the collector kept off long-lived state, and frozen cycles still freed."""

from __future__ import annotations

import gc
import weakref

import pytest

from runtime import heap as collector
from runtime.heap import Heap


class _Node:
    me: _Node | None = None


def test_a_cycle_frozen_while_alive_is_collected_at_the_next_full_settle() -> None:
    """Garbage frozen by one settle outlives plain collections, not the next full settle."""
    heap = Heap(full_every=2)
    try:
        node = _Node()
        node.me = node  # a reference cycle: only the cyclic collector can free it
        alive = weakref.ref(node)
        heap.settle()  # frozen while alive
        del node
        gc.collect()
        assert alive() is not None  # frozen: out of the collector's reach
        heap.settle()  # the second settle thaws the heap and collects it whole
        assert alive() is None
    finally:
        gc.unfreeze()


def test_settle_collects_new_garbage_before_freezing() -> None:
    """A cycle that is garbage when settle runs is collected, not frozen."""
    heap = Heap(full_every=1_000)
    try:
        node = _Node()
        node.me = node
        gone = weakref.ref(node)
        del node
        heap.settle()
        assert (None, True) == (gone(), gc.get_freeze_count() > 0)
    finally:
        gc.unfreeze()


def test_paused_turns_the_collector_off_and_back_on() -> None:
    """Inside `paused` the collector is off; after it, on again, even if the body raised."""
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector.paused():
        assert not gc.isenabled()
        raise RuntimeError("the burst failed")
    assert gc.isenabled()


def test_paused_leaves_a_collector_that_was_off_off() -> None:
    """A pause inside a pause (a fold, say) does not turn the collector on early."""
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
