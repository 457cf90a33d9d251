"""A broker report we could not have asked for is refused, and the order still allocates.

Fuzzing found these: a LastPx of 10^29 raised in the ledger and ended the dispatcher
thread; an over-fill, a negative price and half a share went into the ledger and the J.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.events import SessionStateChanged, Stop
from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from tests.support.eventually import eventually
from tests.support.harness import (
    Ports,
    broker_sim,
    gateway_in_process,
    http_get,
    oms_sim,
    write_config,
)

pytestmark = pytest.mark.fix

QTY = Decimal(1000)


def test_implausible_reports_get_a_dk_and_never_reach_the_ledger(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    plan = FillPlan(fills=2, interval_ms=100, lot=500, prices=(Decimal(190),),
                    first_fill_delay_ms=4000)
    with broker_sim(tmp_path, ports, plan) as broker, gateway_in_process(cfg, ports) as gw, \
            oms_sim(tmp_path, ports) as oms:
        assert broker.engine.wait_logged_on(30) and oms.engine.wait_logged_on(30)
        oms.send_order(BlotterOrder(cl_ord_id="IMP-1", book="SMA-CORE", symbol="AAPL",
                                    side="buy", qty=QTY, price=Decimal(191)))
        eventually(lambda: bool(broker.orders), 10, description="the order reached the broker")
        order = next(iter(broker.orders.values()))
        rejects_before = len(broker.rejects)
        broker.send_raw_report(order, exec_id="HUGE-PX", last_qty=Decimal(100),
                               last_px=Decimal("1" + "0" * 29))
        eventually(lambda: len(broker.rejects) > rejects_before, 10,
                   description="a session Reject for the out-of-range price")
        assert "31" in broker.rejects[-1].split("|371=")[1][:3]  # RefTagID names LastPx
        refused = {"OVER": (QTY + 100, Decimal(190)), "NEG-PX": (Decimal(100), Decimal(-5)),
                   "HALF": (Decimal("0.5"), Decimal(190))}
        for exec_id, (qty, px) in refused.items():
            broker.send_raw_report(order, exec_id=exec_id, last_qty=qty, last_px=px)
        eventually(lambda: {e for e, _ in broker.dont_knows} >= set(refused), 10,
                   description="a DK for each implausible fill")
        texts = dict(broker.dont_knows)
        assert "exceeds OrderQty(38) 1000" in texts["OVER"]
        assert "LastPx(31) -5 is not a positive price" in texts["NEG-PX"]
        assert "not a whole number of shares" in texts["HALF"]
        # The dispatcher is alive and the real fills allocate at the real price.
        assert oms.wait(lambda: oms.allocation_for("IMP-1") is not None, 30)
        alloc = oms.allocation_for("IMP-1")
        assert alloc is not None
        assert alloc.quantity == QTY and alloc.avg_px == Decimal(190)
        assert http_get(ports.http, "/healthz")[0] == 200
        fills = [e for e in oms.executions["IMP-1"] if e.exec_type == "F"]
        assert [(e.last_qty, e.last_px) for e in fills] == [(Decimal(500), Decimal(190))] * 2
        db = gw.node.db
        rows = {r["exec_id"]: r for r in db.load_reports()}
        assert all(rows[e]["dk_reason"] for e in refused)
        assert rows["OVER"]["dk_reason"].startswith("C:")
        # The order may have left the dispatcher's memory (finished): its stored row and
        # reports are what the ledger was folded from.
        order_id = rows["OVER"]["order_id"]
        [stored] = [o for o in db.load_orders() if o["order_id"] == order_id]
        assert Decimal(stored["cum_qty"]) == QTY and Decimal(stored["avg_px"]) == Decimal(190)
        applied = [r for r in db.load_reports(order_id)
                   if r["exec_type"] == "F" and not r["dk_reason"]]
        assert [(Decimal(r["last_qty"]), Decimal(r["last_px"])) for r in applied] == [
            (Decimal(500), Decimal(190))] * 2


def test_a_failing_snapshot_does_not_end_the_dispatcher_and_a_dead_one_fails_healthz(
    tmp_path: Path,
) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports, FillPlan(fills=1)) as broker, \
            gateway_in_process(cfg, ports) as gw, oms_sim(tmp_path, ports) as oms:
        assert broker.engine.wait_logged_on(30) and oms.engine.wait_logged_on(30)
        dispatcher = gw.node.dispatcher
        assert dispatcher is not None
        publish, calls = dispatcher._publish, []

        def fails_once() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise ArithmeticError("a summary that cannot be computed")
            publish()

        dispatcher._publish = fails_once  # type: ignore[method-assign]
        dispatcher.inbox.put(SessionStateChanged(session="nobody", logged_on=False,
                                                 ts_recv=datetime.now(UTC)))
        eventually(lambda: calls, 10, description="the snapshot was attempted")
        oms.send_order(BlotterOrder(cl_ord_id="LIVE-1", book="SMA-CORE", symbol="AAPL",
                                    side="buy", qty=QTY, price=Decimal(191)))
        assert oms.wait(lambda: oms.allocation_for("LIVE-1") is not None, 30)
        assert dispatcher.alive() and http_get(ports.http, "/healthz")[0] == 200
        dispatcher.inbox.put(Stop())
        eventually(lambda: not dispatcher.alive(), 10, description="the dispatcher ended")
        assert http_get(ports.http, "/healthz") == (503, {"status": "dispatcher stopped"})
        status, body = http_get(ports.http, "/readyz")
        assert status == 503 and "<dispatcher stopped>" in body["sessions_not_logged_on"]
