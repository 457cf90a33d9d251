"""Finished orders leave the dispatcher's memory; the blotter is read from the database;
late events load an order back; a restart does not rebuild what is finished (issue 13)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from gateway.fix.sim.plans import PostTradePlan
from gateway.persistence.store import Database
from tests.support.eventually import eventually
from tests.support.harness import (
    Gateway,
    Ports,
    broker_sim,
    gateway_in_process,
    http_get,
    oms_sim,
    running,
    write_config,
)

pytestmark = pytest.mark.fix

FILLS = FillPlan(fills=3, interval_ms=20)


def _order(cl: str, qty: int = 30_000, symbol: str = "AAPL") -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol=symbol, side="buy",
                        qty=Decimal(qty), price=Decimal("190.50"))


def _db(gw: Gateway) -> Database:
    assert gw.node is not None and gw.node.db is not None
    return gw.node.db


def _released(gw: Gateway) -> list[str]:
    return [o["oms_cl_ord_id"] for o in _db(gw).load_orders() if o["released_at"] is not None]


def _status(ports: Ports, query: str = "") -> dict[str, Any]:
    code, body = http_get(ports.http, f"/status{query}")
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def test_finished_orders_leave_memory_and_the_blotter_reads_the_database(
        tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with running(tmp_path, ports, cfg, FILLS, post_trade=PostTradePlan()) as (_b, gw, oms):
        for i, symbol in enumerate(("AAPL", "MSFT", "JNJ"), start=1):
            oms.send_order(_order(f"BM-{i}", 10_000 * i, symbol))
        eventually(lambda: len(_released(gw)) == 3, timeout=60,
                   description="the three finished orders released")
        status = eventually(lambda: (s := _status(ports))["orders_in_memory"] == 0 and s,
                            timeout=10, description="nothing left in memory")
        assert status["orders_released"] == 3 and status["open_orders"] == []
        assert status["allocations"] == {"accepted": 3} and status["orders_total"] == 3
        assert {o["cl_ord_id"] for o in status["orders"]} == {"BM-1", "BM-2", "BM-3"}
        assert all(o["alloc_status"] == "accepted" and o["in_memory"] is False
                   and o["status"] == "filled" and o["excluded_accounts"]
                   for o in status["orders"])
        # Paged and filtered from the database.
        first, rest = _status(ports, "?limit=2"), _status(ports, "?limit=2&offset=2")
        assert (len(first["orders"]), len(rest["orders"]), first["orders_total"]) == (2, 1, 3)
        assert {o["cl_ord_id"] for o in first["orders"] + rest["orders"]} == {
            "BM-1", "BM-2", "BM-3"}
        assert _status(ports, "?state=open")["orders_total"] == 0
        assert _status(ports, "?state=finished")["orders_total"] == 3
        assert _status(ports, "?state=filled&book=SMA-CORE")["orders_total"] == 3
        assert _status(ports, "?book=NO-SUCH-BOOK")["orders"] == []
        assert _status(ports, "?trade_date=2001-01-02")["orders_total"] == 0
        for bad in ("?limit=0", "?limit=5000", "?offset=-1", "?state=DROP%20TABLE",
                    "?trade_date=yesterday"):
            code, body = http_get(ports.http, f"/status{bad}")
            assert code == 422 and body["detail"], (bad, body)


def test_a_bust_after_release_loads_the_order_back_and_is_relayed_once(
        tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with running(tmp_path, ports, cfg, FILLS, post_trade=PostTradePlan()) as (broker, gw,
                                                                              oms):
        oms.send_order(_order("BM-BUST"))
        eventually(lambda: _released(gw) == ["BM-BUST"], timeout=60,
                   description="allocated, accepted and released")
        [sim_order] = broker.orders.values()
        first = sim_order.executions[0]
        broker.bust(sim_order, first.exec_id)
        j2 = eventually(lambda: next((a for a in _db(gw).load_allocations()
                                      if a["alloc_trans_type"] == "1"), None), timeout=30,
                        description="the Replace decided after loading the order back")
        assert Decimal(j2["quantity"]) == Decimal(30_000) - first.qty
        eventually(lambda: _db(gw).load_allocation(j2["alloc_id"])["status"] == "accepted",
                   timeout=30)
        busts = eventually(lambda: [e for e in oms.executions["BM-BUST"]
                                    if e.exec_type == "H"] or None, timeout=10)
        assert len(busts) == 1 and not busts[0].poss_resend
        # The bust left the order partially filled at the broker (39=1): it is working
        # again, so it stays in memory and its release mark is cleared.
        status = eventually(lambda: (s := _status(ports))["orders"][0]["alloc_status"]
                            == "accepted" and s, timeout=5,
                            description="the snapshot shows the accepted Replace")
        assert status["orders_in_memory"] == 1 and _released(gw) == []
        [shown] = status["orders"]
        assert shown["in_memory"] is True and shown["status"] == "partially_filled"
        assert shown["alloc_id"] == j2["alloc_id"]
        assert len([e for e in oms.executions["BM-BUST"] if e.exec_type == "H"]) == 1


def test_a_restart_leaves_released_orders_in_the_database_and_still_asks_for_late_aks(
        tmp_path: Path) -> None:
    """The AK wait survives a restart although the order is not rebuilt: the BH goes out
    and the AK that answers it is affirmed."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra="ak_timeout_minutes = 0.15")
    plan = PostTradePlan(missing_ak=frozenset({"SMA0004"}))
    with broker_sim(tmp_path, ports, FILLS, post_trade=plan) as broker, \
            oms_sim(tmp_path, ports) as oms:
        with gateway_in_process(cfg, ports) as gw:
            assert oms.engine.wait_logged_on(30) and broker.engine.wait_logged_on(30)
            oms.send_order(_order("BM-RS"))
            eventually(lambda: _released(gw) == ["BM-RS"], timeout=60)
            [alloc] = _db(gw).load_allocations()
            assert all(x["bh_sent_at"] is None
                       for x in _db(gw).load_allocation_lines(alloc["alloc_id"]))
        with gateway_in_process(cfg, ports) as gw:
            assert _status(ports)["orders_in_memory"] == 0
            line = eventually(lambda: next((x for x in _db(gw).load_allocation_lines(
                alloc["alloc_id"]) if x["account_id"] == "SMA0004"
                and x["ticket_state"] == "affirmed"), None), timeout=60,
                description="BH after the restart, its AK affirmed")
            assert line["bh_sent_at"] is not None and line["confirm_req_id"]
            assert _status(ports)["orders_in_memory"] == 0
