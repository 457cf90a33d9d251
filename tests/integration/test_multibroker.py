"""A book that routes to two brokers, on real sessions: the block split by account metadata
or by a wheel, each broker's fills allocated over its accounts and reported in its own J at
its own average price, one cumulative view for the OMS, cancels fanned out."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.ledger import AVG_PX_QUANTUM
from gateway.ports import free_port
from tests.support.eventually import eventually
from tests.support.harness import (
    CONFIG,
    Gateway,
    Ports,
    gateway_in_process,
    http_get,
    oms_sim,
    write_config,
)

pytestmark = pytest.mark.fix

D = Decimal
BY_ACCOUNT = """
[books.routing]
by = "account"
account_field = "prime_broker"
brokers = { PB01 = "BRKA", PB02 = "BRKB", PB03 = "BRKB" }
"""
WHEEL = """
[books.routing]
by = "wheel"
wheel = { BRKA = "0.6", BRKB = "0.4" }
"""
PRIME = {r["account_id"]: r["prime_broker"]
         for r in csv.DictReader((CONFIG / "accounts.csv").open(encoding="utf-8"))}
BROKER_OF = {a: ("BRKA" if pb == "PB01" else "BRKB") for a, pb in PRIME.items()}


def _config(tmp: Path, routing: str, broker_b_extra: str = "") -> tuple[Ports, int, Path]:
    """The gateway's config with a second broker session, BRKB, and the book's routing."""
    ports = Ports.free()
    port_b = free_port()
    cfg = write_config(tmp, ports, extra=routing, sessions_extra=f"""
[[fix.brokers]]
name = "BRKB"
target_comp_id = "BRKB"
port = {port_b}
{broker_b_extra}
""")
    return ports, port_b, cfg


@contextmanager
def two_brokers(tmp: Path, routing: str, plan_a: FillPlan, plan_b: FillPlan
                ) -> Iterator[tuple[BrokerSimulator, BrokerSimulator, Gateway, OmsSimulator]]:
    ports, port_b, cfg = _config(tmp, routing)
    a = BrokerSimulator(port=ports.broker, state_dir=tmp / "broker-a", plan=plan_a)
    b = BrokerSimulator(port=port_b, state_dir=tmp / "broker-b", sender="BRKB", plan=plan_b)
    a.start()
    b.start()
    try:
        with gateway_in_process(cfg, ports) as gw, oms_sim(tmp, ports) as oms:
            assert oms.engine.wait_logged_on(30) and a.engine.wait_logged_on(30) \
                and b.engine.wait_logged_on(30), "FIX sessions did not log on"
            yield a, b, gw, oms
    finally:
        a.stop()
        b.stop()


def _order(cl: str, qty: int = 30_000, **kw: Any) -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol="AAPL", side="buy",
                        qty=D(qty), price=D("191.00"), **kw)


def _lines(j: Any) -> dict[str, Decimal]:
    return {str(x["account"]): D(str(x["qty"])) for x in j.lines}


def test_split_by_prime_broker_two_js_each_at_its_brokers_price(tmp_path: Path) -> None:
    plan_a = FillPlan(fills=3, interval_ms=5, prices=(D("190.10"),))
    plan_b = FillPlan(fills=2, interval_ms=5, prices=(D("190.40"), D("190.60")))
    with two_brokers(tmp_path, BY_ACCOUNT, plan_a, plan_b) as (a, b, gw, oms):
        oms.send_order(_order("MB-1"))
        ja = eventually(lambda: next(iter(a.allocations), None), timeout=30)
        jb = eventually(lambda: next(iter(b.allocations), None), timeout=30)
        [child_a], [child_b] = a.orders.values(), b.orders.values()
        assert child_a.qty + child_b.qty == 30_000
        # Each broker's J covers exactly the accounts it executes for, at its own price.
        assert {BROKER_OF[acct] for acct in _lines(ja)} == {"BRKA"}
        assert {BROKER_OF[acct] for acct in _lines(jb)} == {"BRKB"}
        assert ja.quantity == child_a.qty and ja.avg_px == D("190.10")
        assert jb.quantity == child_b.qty
        assert jb.avg_px == (child_b.notional / child_b.cum_qty).quantize(AVG_PX_QUANTUM)
        assert D("190.40") < jb.avg_px < D("190.60")
        assert sum(_lines(ja).values()) + sum(_lines(jb).values()) == 30_000

        # The OMS: one order, cumulative over both brokers, and a copy of both Js.
        eventually(lambda: len(oms.allocations_for("MB-1")) == 2, timeout=30)
        seen = oms.executions["MB-1"]
        assert [e.exec_type for e in seen].count("0") == 1
        cums = [e.cum_qty for e in seen]
        assert cums == sorted(cums) and cums[-1] == 30_000
        assert seen[-1].ord_status == "2"
        assert all(e.ord_status == "1" for e in seen if e.exec_type == "F" and e.cum_qty < 30_000)
        notional = child_a.notional + child_b.notional
        assert seen[-1].avg_px == (notional / 30_000).quantize(D("0.00000001"))
        assert len({e.order_id for e in seen}) == 1  # the block's own OrderID throughout
        assert {j.alloc_id for j in oms.allocations_for("MB-1")} == {ja.alloc_id, jb.alloc_id}

        assert gw.node is not None
        parent = gw.node.db.find_order(gw.node.sessions.key_of("OMS1")
                                       if gw.node.sessions else "", "MB-1")
        assert parent is not None and parent["status"] == "split"
        children = gw.node.db.children_of(parent["order_id"])
        assert [(c["broker"], c["status"]) for c in children] == [
            ("BRKA", "filled"), ("BRKB", "filled")]
        # The block's own row is neither an open order on the blotter nor a block the
        # end-of-day sweep asks about: its children are.
        code, body = http_get(gw.ports.http, "/status?state=open")
        assert code == 200 and parent["order_id"] not in {o["order_id"] for o in body["orders"]}
        report = gw.node._run_sweep_now("21:00", date.fromisoformat(parent["trade_date"]))
        assert parent["order_id"] not in json.dumps(report, default=str)
        assert children[0]["order_id"] in json.dumps(report, default=str)
        # Once both children are finished and leave memory, so does the block's view.
        assert gw.node.dispatcher is not None
        eventually(lambda: not gw.node.dispatcher.splits.parents, timeout=30)


def test_wheel_sixty_forty_with_one_broker_done_for_the_day_at_half(tmp_path: Path) -> None:
    plan_a = FillPlan(fills=2, interval_ms=5, prices=(D("190.00"),))
    plan_b = FillPlan(fills=2, interval_ms=5, prices=(D("191.00"),),
                      done_for_day_at=D("0.5"))
    with two_brokers(tmp_path, WHEEL, plan_a, plan_b) as (a, b, _gw, oms):
        oms.send_order(_order("MB-2", 20_000))
        ja = eventually(lambda: next(iter(a.allocations), None), timeout=30)
        jb = eventually(lambda: next(iter(b.allocations), None), timeout=30)
        assert (ja.quantity, ja.avg_px) == (D(12_000), D("190"))
        assert (jb.quantity, jb.avg_px) == (D(4_000), D("191"))  # half of its 8,000
        # Each J is allocated over the whole book (a wheel is not tied to accounts).
        assert {BROKER_OF[acct] for acct in _lines(ja)} == {"BRKA", "BRKB"}
        assert {BROKER_OF[acct] for acct in _lines(jb)} == {"BRKA", "BRKB"}
        eventually(lambda: len(oms.allocations_for("MB-2")) == 2, timeout=30)
        final = oms.executions["MB-2"][-1]
        assert (final.ord_status, final.cum_qty) == ("3", D(16_000))
        # Exactly one report says the block is done for the day, and it is the last: BRKB's
        # own DFD when it comes after BRKA's last fill, else that fill (BRKB's DFD, with
        # BRKA still working, did not change what the OMS sees).
        assert [e.ord_status for e in oms.executions["MB-2"]].count("3") == 1


def test_a_cancel_fans_out_and_the_oms_hears_canceled_once_both_are(tmp_path: Path) -> None:
    slow = FillPlan(fills=2, interval_ms=5, first_fill_delay_ms=60_000)
    with two_brokers(tmp_path, BY_ACCOUNT, slow, slow) as (a, b, _gw, oms):
        order = _order("MB-3")
        oms.send_order(order)
        eventually(lambda: a.orders and b.orders and any(
            e.exec_type == "0" for e in oms.executions.get("MB-3", [])), timeout=30)
        # A replace of a split block is refused: which broker's part would change?
        oms.send_replace(order, "MB-3R", qty=D(40_000))
        eventually(lambda: any(r.cl_ord_id == "MB-3R" for r in oms.cancel_rejects), timeout=30)
        oms.send_cancel(order)

        def cancel_replies() -> list[Any]:
            return [e for cl, seen in oms.executions.items() if cl.startswith("MB-3-CXL")
                    for e in seen]

        eventually(lambda: any(e.exec_type == "4" for e in cancel_replies()), timeout=30)
        assert all(o.status == "4" for o in (*a.orders.values(), *b.orders.values()))
        [final] = [e for e in cancel_replies() if e.exec_type == "4"]
        assert (final.ord_status, final.cum_qty) == ("4", 0)
        assert a.allocations == [] and b.allocations == []


def test_a_pre_allocated_block_is_split_along_its_own_lines(tmp_path: Path) -> None:
    pre = (("SMA0001", D(1_000)), ("SMA0002", D(2_000)), ("SMA0003", D(3_000)))
    plan = FillPlan(fills=1, interval_ms=5)
    with two_brokers(tmp_path, BY_ACCOUNT, plan, plan) as (a, b, _gw, _oms):
        _oms.send_order(_order("MB-4", 6_000, preallocations=pre, text="client split"))
        ja = eventually(lambda: next(iter(a.allocations), None), timeout=30)
        jb = eventually(lambda: next(iter(b.allocations), None), timeout=30)
        want = {"BRKA": {}, "BRKB": {}}  # type: dict[str, dict[str, Decimal]]
        for acct, qty in pre:
            want[BROKER_OF[acct]][acct] = qty
        assert _lines(ja) == want["BRKA"] and _lines(jb) == want["BRKB"]


def test_one_brokers_session_down_holds_only_its_part(tmp_path: Path) -> None:
    """The block's other part routes and fills; the OMS hears "pending new" once; the held
    part goes out when its broker logs on, and both Js follow."""
    ports, port_b, cfg = _config(tmp_path, BY_ACCOUNT)
    plan = FillPlan(fills=1, interval_ms=5)
    a = BrokerSimulator(port=ports.broker, state_dir=tmp_path / "broker-a", plan=plan)
    b = BrokerSimulator(port=port_b, state_dir=tmp_path / "broker-b", sender="BRKB", plan=plan)
    a.start()
    try:
        with gateway_in_process(cfg, ports) as _gw, oms_sim(tmp_path, ports) as oms:
            assert oms.engine.wait_logged_on(30) and a.engine.wait_logged_on(30)
            oms.send_order(_order("MB-5", 9_000))
            eventually(lambda: next(iter(a.allocations), None), timeout=30)
            # The broker's J leaves before the OMS's copy of the last fill: wait for it.
            last = eventually(lambda: next((e for e in oms.executions["MB-5"]
                                            if e.exec_type == "F"), None), timeout=30)
            seen = oms.executions["MB-5"]
            assert [e.exec_type for e in seen].count("A") == 1
            assert last.ord_status == "1" and 0 < last.cum_qty < 9_000
            b.start()
            eventually(lambda: next(iter(b.allocations), None), timeout=60)
            eventually(lambda: oms.executions["MB-5"][-1].ord_status == "2", timeout=30)
            assert oms.executions["MB-5"][-1].cum_qty == 9_000
            eventually(lambda: len(oms.allocations_for("MB-5")) == 2, timeout=30)
    finally:
        a.stop()
        b.stop()


def test_a_restart_between_the_split_and_the_fills_keeps_one_view(tmp_path: Path) -> None:
    """Recovery rebuilds the children and the block's view from the database: the OMS's
    view continues from where it was and each broker's J still goes out once."""
    ports, port_b, cfg = _config(tmp_path, BY_ACCOUNT)
    fast = FillPlan(fills=2, interval_ms=5)
    late = FillPlan(fills=2, interval_ms=5, first_fill_delay_ms=6_000)
    a = BrokerSimulator(port=ports.broker, state_dir=tmp_path / "broker-a", plan=fast)
    b = BrokerSimulator(port=port_b, state_dir=tmp_path / "broker-b", sender="BRKB", plan=late)
    a.start()
    b.start()
    try:
        with oms_sim(tmp_path, ports) as oms:
            with gateway_in_process(cfg, ports):
                assert oms.engine.wait_logged_on(30) and b.engine.wait_logged_on(30)
                oms.send_order(_order("MB-6", 12_000))
                eventually(lambda: next(iter(a.allocations), None), timeout=30)
                eventually(lambda: b.orders, timeout=30)
            # The gateway is down while BRKB fills; it comes back and takes the rest.
            with gateway_in_process(cfg, ports):
                eventually(lambda: next(iter(b.allocations), None), timeout=60)
                eventually(lambda: len(oms.allocations_for("MB-6")) == 2, timeout=30)
                eventually(lambda: oms.executions["MB-6"][-1].ord_status == "2", timeout=30)
            seen = oms.executions["MB-6"]
            assert seen[-1].cum_qty == 12_000
            fills = [e for e in seen if e.exec_type == "F"]
            assert len({e.exec_id for e in fills}) == len(fills) == 4  # none twice
            assert [e.cum_qty for e in fills] == sorted(e.cum_qty for e in fills)
            assert len(a.allocations) == len(b.allocations) == 1
    finally:
        a.stop()
        b.stop()


def test_one_broker_refusing_its_part_is_alerted_and_the_block_ends_with_the_other(
        tmp_path: Path) -> None:
    """BRKB refuses its pre-allocated child outright: operations are alerted at once; the
    OMS's block ends (done for the day) with BRKA's part, which alone is allocated."""
    ports, port_b, cfg = _config(tmp_path, BY_ACCOUNT, "send_preallocations = true")
    plan = FillPlan(fills=2, interval_ms=5, first_fill_delay_ms=500)
    a = BrokerSimulator(port=ports.broker, state_dir=tmp_path / "broker-a", plan=plan)
    b = BrokerSimulator(port=port_b, state_dir=tmp_path / "broker-b", sender="BRKB", plan=plan)
    b.preallocation_answer = "reject_order"
    a.start()
    b.start()
    try:
        with gateway_in_process(cfg, ports) as gw, oms_sim(tmp_path, ports) as oms:
            assert oms.engine.wait_logged_on(30) and b.engine.wait_logged_on(30)
            oms.send_order(_order("MB-7"))
            ja = eventually(lambda: next(iter(a.allocations), None), timeout=30)
            [child_a] = a.orders.values()
            final = eventually(lambda: next((e for e in oms.executions.get("MB-7", [])
                                             if e.ord_status == "3"), None), timeout=30)
            assert final.cum_qty == child_a.qty == ja.quantity
            assert "8" not in [e.exec_type for e in oms.executions["MB-7"]]
            assert b.allocations == []
            assert gw.node is not None
            [alert] = gw.node.db.events("alert.split_part_rejected")
            assert '"broker": "BRKB"' in alert["detail_json"]
    finally:
        a.stop()
        b.stop()
