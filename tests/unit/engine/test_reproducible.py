"""What makes a decision reproducible: the inputs hash, and results compared as values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from decimal import Decimal

import engine
from engine.table import LazyTuple
from tests.unit.engine.alloc_helpers import account, request, rulebook


def _req(qty: int = 1000, **kw: object) -> engine.AllocationRequest:
    return request([account("A"), account("B"), account("C")], qty, **kw)


def test_the_inputs_hash_is_the_decisions_and_moves_only_with_the_inputs() -> None:
    req = _req()
    decision = engine.allocate(req, rulebook())
    assert engine.inputs_hash(req) == decision.inputs_hash
    later = dataclasses.replace(req, decided_at=req.decided_at + dt.timedelta(hours=3))
    assert engine.inputs_hash(later) == decision.inputs_hash  # the decision time is not an input
    assert engine.inputs_hash(_req(1100)) != decision.inputs_hash
    assert engine.inputs_hash(dataclasses.replace(req, rotation_offset=1)) != \
        decision.inputs_hash
    richer = request([account("A"), account("B", cash=Decimal(5)),
                      account("C")], 1000)
    assert engine.inputs_hash(richer) != decision.inputs_hash


def test_results_compare_as_values() -> None:
    """Two decisions' lazily built results are equal exactly when their rows are."""
    one = engine.allocate(_req(), rulebook())
    again = engine.allocate(_req(), rulebook())
    other = engine.allocate(_req(1200), rulebook())
    assert isinstance(one.results, LazyTuple) and isinstance(again.results, LazyTuple)
    assert one.results == again.results and one.lines == again.lines
    assert one.results != other.results and one.lines != other.lines
    assert one.results == tuple(again.results)
    assert bool(one.results) and hash(one.results) == hash(tuple(again.results))


def test_lazy_results_are_built_once_and_are_falsy_only_when_empty() -> None:
    calls: list[int] = []

    def build() -> tuple[int, ...]:
        calls.append(1)
        return (7, 8)

    lazy = LazyTuple(2, build)
    assert calls == [] and len(lazy) == 2  # the length is known without building
    assert list(lazy) == [7, 8] and lazy[1] == 8 and lazy == (7, 8)
    assert calls == [1], "built more than once"
    assert repr(lazy) == "(7, 8)"
    assert not LazyTuple(0, tuple) and LazyTuple(1, lambda: (1,))


def test_lazy_results_are_built_once_when_threads_race_for_them() -> None:
    """HTTP readers and the dispatcher may touch a fresh decision's rows at once."""
    calls: list[int] = []
    start = threading.Barrier(4)

    def build() -> tuple[int, ...]:
        calls.append(1)
        time.sleep(0.05)  # long enough for every other thread to reach the lock
        return (1, 2, 3)

    lazy = LazyTuple(3, build)

    def read() -> None:
        start.wait()
        assert lazy[2] == 3

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]
