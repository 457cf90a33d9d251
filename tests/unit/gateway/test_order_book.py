"""Which orders may leave the dispatcher's memory, and the OMS ClOrdID index."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.order_book import OrderBook, finished, order_of_alloc
from gateway.orders import Order

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def _order(oid: str = "FA1", cl: str = "C1", **kw: object) -> Order:
    base: dict[str, object] = dict(
        order_id=oid, oms_session="OMS", oms_cl_ord_id=cl, book="B", symbol="AAPL",
        side="buy", order_qty=Decimal(100), ord_type="2", price=Decimal(1),
        time_in_force="0", broker="BRKA", trade_date="2026-11-24")
    base.update(kw)
    return Order(**base)  # type: ignore[arg-type]


def _filled(**kw: object) -> Order:
    o = _order(**kw)
    o.status = "filled"
    o.ledger.apply_fill("X1", Decimal(100), Decimal(1))
    return o


@pytest.mark.parametrize(("change", "expected"), [
    ({}, False),  # filled, nothing allocated yet: an exception for a person, not finished
    ({"allocs": {"FA1-J1": "sent"}, "alloc_status": "sent"}, False),
    ({"allocs": {"FA1-J1": "received"}, "alloc_status": "received"}, False),
    ({"allocs": {"FA1-J1": "accepted"}, "alloc_status": "accepted"}, True),
    ({"allocs": {"FA1-J1": "replaced", "FA1-J2": "accepted"}, "alloc_status": "accepted"}, True),
    ({"allocs": {"FA1-J1": "replaced", "FA1-J2": "sent"}, "alloc_status": "sent"}, False),
    ({"allocs": {"FA1-J1": "block_rejected"}, "alloc_status": "block_rejected"}, False),
    ({"allocs": {"FA1-J1": "accepted"}, "alloc_status": "accepted",
      "replaces": {"FA1~R1": {}}}, False),
    ({"allocs": {"FA1-J1": "accepted"}, "alloc_status": "accepted",
      "new_after_cancel": "fix"}, False),
])
def test_an_allocated_order_is_finished_only_when_every_j_is_settled(
        change: dict[str, object], expected: bool) -> None:
    o = _filled()
    for key, value in change.items():
        setattr(o, key, value)
    assert finished(o) is expected


def test_working_orders_stay_and_unexecuted_terminal_ones_go() -> None:
    working = _order()
    working.status = "partially_filled"
    assert not finished(working)
    rejected = _order()
    rejected.status = "rejected"
    assert finished(rejected)
    queued = _order()
    queued.status, queued.held = "canceled", True
    assert not finished(queued)


def test_release_marks_and_forgets_and_a_lookup_loads_back() -> None:
    loads: list[str] = []
    book = OrderBook(load=lambda oid: loads.append(oid) or None)
    o = _filled()
    o.allocs, o.alloc_status = {"FA1-J1": "accepted"}, "accepted"
    book["FA1"] = o
    marks: list[tuple[str, datetime | None]] = []
    assert book.release(o, lambda oid, at: marks.append((oid, at)), NOW)
    assert "FA1" not in book and marks == [("FA1", NOW)] and book.released == 1
    assert book.dirty == {"FA1"}
    assert book.get("FA1") is None and loads == ["FA1"]  # asked the database
    working = _order("FA2", "C2")
    book["FA2"] = working
    assert not book.release(working, lambda oid, at: marks.append((oid, at)), NOW)
    assert "FA2" in book and len(marks) == 1


def test_the_cl_ord_id_index_follows_a_replace_and_prefers_the_newest_day() -> None:
    book = OrderBook()
    o = _order()
    book["FA1"] = o
    assert book.by_cl_ord_id("OMS", "C1") is o
    o.oms_orig_cl_ord_id, o.oms_cl_ord_id = "C1", "C1-R1"
    book.index(o)
    assert book.by_cl_ord_id("OMS", "C1-R1") is o and book.by_cl_ord_id("OMS", "C1") is None
    older = _order("FA0", "C1-R1", trade_date="2026-11-23")
    book["FA0"] = older
    assert book.by_cl_ord_id("OMS", "C1-R1") is o
    found = book.by_cl_ord_id("OMS", "GONE", find=lambda s, c: None)
    assert found is None


def test_alloc_ids_name_their_order() -> None:
    assert order_of_alloc("FA20261124ABC-J12") == "FA20261124ABC"
    assert order_of_alloc("FA20261124ABC-PA2") == "FA20261124ABC"
