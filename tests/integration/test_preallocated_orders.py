"""Pre-allocated orders at the broker and cancel/replace, on real sessions.

FIX_ALLOCATION.md §7 scenario 18 (a D with AllocID + PreAllocGrp + PreallocMethod=0, a
partial fill split pro rata, a G that changes the allocations under a new AllocID and one
that does not omit NoAllocs) and scenario 19 (the broker refuses the pre-allocation: the
whole order with ER 39=8, or P 87=1 while the order keeps working).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from tests.support.eventually import eventually
from tests.support.harness import (
    Gateway,
    Ports,
    broker_sim,
    gateway_in_process,
    oms_sim,
    running,
    write_config,
)

pytestmark = pytest.mark.fix

PRE = (("SMA0001", Decimal(10_000)), ("SMA0002", Decimal(15_000)), ("SMA0003", Decimal(5_000)))
NEW_PRE = (("SMA0001", Decimal(20_000)), ("SMA0002", Decimal(15_000)),
           ("SMA0003", Decimal(5_000)))
# Fills start late enough for the replaces to land first; 60% then done for the day.
SLOW = FillPlan(fills=2, interval_ms=20, first_fill_delay_ms=4000,
                done_for_day_at=Decimal("0.6"))
# After a replace to 40,000, 30% executes: 12,000 split 20:15:5 stays under SMA0001's
# issuer cap (the engine clips a pre-allocation to the account's restrictions too).
SLOW_30 = FillPlan(fills=2, interval_ms=20, first_fill_delay_ms=4000,
                   done_for_day_at=Decimal("0.3"))
SPLIT_30 = {"SMA0001": Decimal(6_000), "SMA0002": Decimal(4_500), "SMA0003": Decimal(1_500)}
SEND_PRE = "send_preallocations = true"


def _order(cl: str = "PRE-18") -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol="AAPL", side="buy",
                        qty=Decimal(30_000), price=Decimal("190.50"), preallocations=PRE,
                        text="client-directed split per IPS addendum 7")


def _order_state(gw: Gateway, cl: str) -> Any:
    assert gw.node is not None and gw.node.dispatcher is not None
    return next((o for o in gw.node.dispatcher.orders.values() if o.oms_cl_ord_id == cl),
                None)


def _replaced(oms: OmsSimulator, cl: str) -> bool:
    return any(e.exec_type == "5" for e in oms.executions.get(cl, []))


def _wire(gw: Gateway, msg_type: str, direction: str = "out") -> list[str]:
    assert gw.node is not None
    rows = gw.node.db.wire_messages(direction=direction, msg_type=msg_type)
    return [bytes(r["raw"]).decode("latin-1") for r in rows]


def test_pre_allocated_d_and_replaces_with_and_without_new_allocations(
        tmp_path: Path) -> None:
    """Scenario 18 end to end: PreAllocGrp on the D, a G changing only the price (no
    NoAllocs), a G changing quantity and allocations (new AllocID), a pro-rated J."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra=SEND_PRE)
    order = _order()
    with running(tmp_path, ports, cfg, SLOW_30) as (broker, gw, oms):
        oms.send_order(order)
        pa1 = eventually(lambda: next((a for a in broker.preallocation_acks
                                       if a.alloc_status == "0"), None), timeout=30)
        sim_order = broker.orders[_order_state(gw, "PRE-18").order_id]
        assert pa1.alloc_id.endswith("-PA1") and sim_order.prealloc_id == pa1.alloc_id
        assert sim_order.preallocations == PRE
        d_raw = _wire(gw, "D")[0]
        assert f"\x0170={pa1.alloc_id}\x01" in d_raw and "\x01591=0\x01" in d_raw
        eventually(lambda: _order_state(gw, "PRE-18").prealloc_status == "accepted",
                   timeout=10)

        # A new price only: the allocations are unchanged, so no NoAllocs on our G.
        oms.send_replace(order, "PRE-18-R1", qty=Decimal(30_000), price=Decimal("191.00"))
        eventually(lambda: _replaced(oms, "PRE-18-R1"), timeout=30,
                   description="150=5 for the price change")
        child1, alloc1, lines1 = broker.replaces[0]
        assert child1.endswith("~R1") and alloc1 is None and lines1 == ()
        g1 = _wire(gw, "G")[0]
        assert "\x0178=" not in g1 and "\x0170=" not in g1 and "\x0144=191.00\x01" in g1

        # A bigger order with a new split: the complete set under a new AllocID.
        oms.send_replace(order, "PRE-18-R2", orig_cl_ord_id="PRE-18-R1", qty=Decimal(40_000),
                         preallocations=NEW_PRE, text="IPS addendum 8: SMA0001 adds")
        eventually(lambda: _replaced(oms, "PRE-18-R2"), timeout=30,
                   description="150=5 for the new allocations")
        child2, alloc2, lines2 = broker.replaces[1]
        assert child2.endswith("~R2") and alloc2 is not None and alloc2.endswith("-PA2")
        assert lines2 == NEW_PRE
        assert f"\x0141={child1}\x01" in _wire(gw, "G")[1]  # OrigClOrdID: the chain's latest
        eventually(lambda: [a.alloc_status for a in broker.preallocation_acks
                            if a.alloc_id == alloc2] == ["3", "0"], timeout=10)

        # 30% of 40,000 executed, then done for the day: the new split, pro rata.
        j = eventually(lambda: oms.allocation_for("PRE-18-R2"), timeout=60,
                       description="the OMS's copy of the J under its latest ClOrdID")
        # The broker's J goes first but may be booked after the OMS has read its copy.
        eventually(lambda: broker.allocations, timeout=30, description="the broker's J")
        assert {x["account"]: x["qty"] for x in broker.allocations[0].lines} == SPLIT_30
        assert child2 in broker.allocations[0].cl_ord_ids  # the J quotes the chain's latest
        assert j.quantity == Decimal(12_000)
        fills = [e for e in oms.executions["PRE-18-R2"] if e.exec_type == "F"]
        assert sum((e.last_qty for e in fills), Decimal(0)) == Decimal(12_000)
        assert not oms.cancel_rejects and not oms.business_rejects


def test_replace_that_cannot_stand_is_refused_with_35_9_and_the_order_keeps_working(
        tmp_path: Path) -> None:
    """Every refused G gets a 35=9 (434=2) with the reason; nothing reaches the broker."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra=SEND_PRE)
    order = _order("PRE-BAD")
    with running(tmp_path, ports, cfg, SLOW) as (broker, gw, oms):
        oms.send_order(order)
        eventually(lambda: oms.last_execution("PRE-BAD") is not None, timeout=30)
        # The quantity grows but the split still covers the old one.
        oms.send_replace(order, "PRE-BAD-R1", qty=Decimal(40_000))
        oms.send_replace(order, "PRE-BAD-R2", orig_cl_ord_id="NO-SUCH", qty=Decimal(1))
        oms.send_replace(BlotterOrder(cl_ord_id="PRE-BAD", book="SMA-CORE", symbol="MSFT",
                                      side="buy", qty=Decimal(30_000), price=Decimal(1)),
                         "PRE-BAD-R3", qty=Decimal(30_000))
        rejects = eventually(lambda: oms.cancel_rejects if len(oms.cancel_rejects) >= 3
                             else None, timeout=30)
        by_id = {r.cl_ord_id: r for r in rejects}
        assert {r.response_to for r in rejects} == {"2"}
        assert by_id["PRE-BAD-R1"].reason == "99"
        assert "AllocQty(80): pre-allocations sum to 30000, OrderQty is 40000" \
            in (by_id["PRE-BAD-R1"].text or "")
        assert by_id["PRE-BAD-R2"].reason == "1"
        assert "Symbol, Side and Account cannot change" in (by_id["PRE-BAD-R3"].text or "")
        assert broker.replaces == [] and _wire(gw, "G") == []
        eventually(lambda: oms.allocation_for("PRE-BAD") is not None, timeout=60,
                   description="the original order still executes and allocates")


def test_broker_refusing_the_whole_pre_allocated_order(tmp_path: Path) -> None:
    """Scenario 19, first form: ER 150=8/39=8. The OMS hears the broker's reason; no J."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra=SEND_PRE)
    with running(tmp_path, ports, cfg, SLOW) as (broker, gw, oms):
        broker.preallocation_answer = "reject_order"
        oms.send_order(_order("PRE-19A"))
        er = eventually(lambda: oms.last_execution("PRE-19A") if (
            oms.last_execution("PRE-19A") and oms.last_execution("PRE-19A").ord_status == "8")
            else None, timeout=30)
        assert er.exec_type == "8" and "pre-allocation" in (er.text or "")
        assert er.text is not None and "unknown at this broker" in er.text
        assert gw.node is not None
        db = gw.node.db
        eventually(lambda: [o["status"] for o in db.load_orders()
                            if o["oms_cl_ord_id"] == "PRE-19A"] == ["rejected"], timeout=10)
        assert broker.allocations == [] and broker.preallocation_acks == []


def test_broker_rejecting_the_pre_allocation_while_the_order_works(tmp_path: Path) -> None:
    """Scenario 19, second form: P 87=1 for the pre-allocation. An exception opens, the
    order keeps working, and its J (the pro-rated split) resolves it once accepted."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra=SEND_PRE)
    with running(tmp_path, ports, cfg, SLOW) as (broker, gw, oms):
        broker.preallocation_answer = "reject_p"
        oms.send_order(_order("PRE-19B"))
        assert gw.node is not None
        db = gw.node.db
        opened = eventually(lambda: [e for e in db.exceptions(state="open")
                                     if e["kind"] == "preallocation_rejected"], timeout=30)
        assert "87=1, 88=0" in opened[0]["reason"] and "keeps working" in opened[0]["next_step"]
        assert _order_state(gw, "PRE-19B").prealloc_status == "block_rejected"
        alloc_id = eventually(lambda: next(iter(db.load_allocations()), None),
                              timeout=60)["alloc_id"]
        eventually(lambda: db.load_allocation(alloc_id)["status"] == "accepted", timeout=30)
        assert {x["account"]: x["qty"] for x in broker.allocations[0].lines} == {
            "SMA0001": Decimal(6_000), "SMA0002": Decimal(9_000), "SMA0003": Decimal(3_000)}
        closed = eventually(lambda: [e for e in db.exceptions(state="resolved")
                                     if e["kind"] == "preallocation_rejected"], timeout=10)
        assert closed[0]["resolution"] == f"booked from J {alloc_id}"


def test_a_restart_after_a_replace_keeps_the_new_terms(tmp_path: Path) -> None:
    """The replace is rebuilt from what is stored: the J after a restart uses the new
    quantity and split, and the OMS's new ClOrdID."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra=SEND_PRE)
    order = _order("PRE-RS")
    plan = FillPlan(fills=2, interval_ms=20, first_fill_delay_ms=8000,
                    done_for_day_at=Decimal("0.3"))
    with broker_sim(tmp_path, ports, plan) as broker, oms_sim(tmp_path, ports) as oms:
        with gateway_in_process(cfg, ports) as gw:
            assert oms.engine.wait_logged_on(30) and broker.engine.wait_logged_on(30)
            oms.send_order(order)
            eventually(lambda: oms.last_execution("PRE-RS") is not None, timeout=30)
            oms.send_replace(order, "PRE-RS-R1", qty=Decimal(40_000), preallocations=NEW_PRE,
                             text="IPS addendum 8")
            eventually(lambda: _replaced(oms, "PRE-RS-R1"), timeout=30)
        with gateway_in_process(cfg, ports) as gw:
            state = eventually(lambda: _order_state(gw, "PRE-RS-R1"), timeout=30)
            assert state.order_qty == Decimal(40_000) and state.preallocations == NEW_PRE
            assert state.child_cl_ord_id.endswith("~R1")
            assert state.prealloc_id.endswith("-PA2")
            j = eventually(lambda: oms.allocation_for("PRE-RS-R1"), timeout=60)
            assert j.quantity == Decimal(12_000)
            eventually(lambda: broker.allocations, timeout=30, description="the broker's J")
            assert {x["account"]: x["qty"] for x in broker.allocations[0].lines} == SPLIT_30
