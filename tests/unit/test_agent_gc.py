"""The agent runs the cyclic GC at idle moments with the automatic threshold raised to a backstop: garbage cycles
must still be freed (a leak otherwise grows with every invocation)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from kfn.agent import environment


class Node:
    pass


@pytest.fixture
def agent_gc_settings() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(environment.GC_BACKSTOP, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def cycles(n: int) -> list[weakref.ref[Node]]:
    refs = []
    for _ in range(n):
        node = Node()
        node.me = node  # type: ignore[attr-defined]
        refs.append(weakref.ref(node))
    return refs


def test_garbage_cycles_are_freed_at_the_idle_moment(agent_gc_settings: None) -> None:
    gc.collect()
    refs = cycles(environment.GC_YOUNG)
    assert any(r() is not None for r in refs), "below the backstop nothing collects them on the hot path"
    environment.collect_garbage_if_due()
    assert all(r() is None for r in refs)


def test_nothing_is_collected_before_the_young_generation_is_due(agent_gc_settings: None) -> None:
    gc.collect()
    refs = cycles(10)
    environment.collect_garbage_if_due()
    assert all(r() is not None for r in refs), "a collection per invocation would cost more than it frees"
