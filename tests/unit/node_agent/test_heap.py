"""node_agent/heap.py: what `settle` leaves to full collections, and why an unload thaws."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from node_agent import heap


@pytest.fixture(autouse=True)
def _thawed_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test run keeps a collectable heap


class _Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_settle_takes_the_live_heap_out_of_full_collections() -> None:
    live = len(gc.get_objects())
    heap.settle()
    assert gc.get_freeze_count() >= live * 0.9
    assert len(gc.get_objects(generation=2)) < live * 0.01  # what a full collection walks


def _frozen_garbage() -> weakref.ref[_Cyclic]:
    """A cycle frozen by `settle` while alive, and garbage since."""
    garbage = _Cyclic()
    heap.settle()
    return weakref.ref(garbage)


def test_a_frozen_cycle_is_freed_only_after_a_thaw() -> None:
    alive = _frozen_garbage()
    gc.collect()
    assert alive() is not None  # frozen: the collector never looks at it
    heap.thaw()
    gc.collect()
    assert alive() is None


def test_settle_frees_what_was_frozen_and_is_garbage_now() -> None:
    alive = _frozen_garbage()
    heap.settle()
    assert alive() is None
