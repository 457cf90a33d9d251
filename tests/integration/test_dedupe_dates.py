"""The dedupe key's date is the fill's own, never the date the copy happened to arrive.

Before: a fill without TradeDate(75) was keyed with the New York date of its arrival, so
a resend that arrived after midnight was applied twice. Orders were unique on
(session, ClOrdID) with no date, so an OMS reusing a ClOrdID on a later trading day (FIX
asks uniqueness per day only) was refused as a duplicate.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.clock import NEW_YORK
from gateway.fix import tags as T
from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from gateway.metrics import METRICS
from tests.support.clock import FakeClock
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    Ports,
    broker_sim,
    gateway_in_process,
    oms_sim,
    write_config,
)

pytestmark = pytest.mark.fix


def test_resend_of_a_fill_without_trade_date_after_midnight_is_a_duplicate(
    tmp_path: Path,
) -> None:
    today = datetime.now(NEW_YORK).date()
    clock = FakeClock(datetime.combine(today, time(23, 59, 50), tzinfo=NEW_YORK))
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports, FillPlan(fills=2, interval_ms=20)) as broker, \
            gateway_in_process(cfg, ports, clock) as gw, oms_sim(tmp_path, ports) as oms:
        assert broker.engine.wait_logged_on(30) and oms.engine.wait_logged_on(30)
        oms.send_order(BlotterOrder(cl_ord_id="MID-1", book="SMA-CORE", symbol="AAPL",
                                    side="buy", qty=Decimal(20_000), price=Decimal(190)))
        assert oms.wait(lambda: oms.allocation_for("MID-1") is not None, 30)
        order = next(iter(broker.orders.values()))
        fill = broker.send_raw_report(order, exec_id="NOTD-1", last_qty=Decimal(0),
                                      last_px=Decimal(1), with_trade_date=False)
        assert not fill.isSetField(T.TradeDate)
        eventually(lambda: [r for r in gw.node.db.load_reports() if r["exec_id"] == "NOTD-1"],
                   description="the fill without TradeDate stored")
        duplicates = METRICS.duplicates.labels(session=BROKER_KEY)._value.get()
        clock.advance(timedelta(minutes=1))  # past midnight in New York
        broker.resend_as_duplicate(fill)
        eventually(lambda: METRICS.duplicates.labels(session=BROKER_KEY)._value.get()
                   == duplicates + 1, description="the resend recognised as a duplicate")
        rows = [r for r in gw.node.db.load_reports() if r["exec_id"] == "NOTD-1"]
        assert len(rows) == 1 and rows[0]["trade_date"] == today.isoformat()


def test_a_cl_ord_id_may_be_reused_on_a_later_trade_date(tmp_path: Path) -> None:
    today = datetime.now(NEW_YORK).date()
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    order = BlotterOrder(cl_ord_id="DAILY-1", book="SMA-CORE", symbol="AAPL", side="buy",
                         qty=Decimal(10_000), price=Decimal(190))
    with broker_sim(tmp_path, ports, FillPlan(fills=1)) as broker, \
            gateway_in_process(cfg, ports) as gw, oms_sim(tmp_path, ports) as oms:
        assert broker.engine.wait_logged_on(30) and oms.engine.wait_logged_on(30)
        # Yesterday's order under the same ClOrdID, as the database would hold it.
        yesterday = (today - timedelta(days=1)).isoformat()
        row = {"order_id": "FA-YESTERDAY", "oms_session": "FIX.4.4:FIXALLOC->OMS1",
               "oms_cl_ord_id": "DAILY-1", "book": "SMA-CORE", "symbol": "AAPL",
               "side": "buy", "order_qty": "10000", "ord_type": "2", "price": "190",
               "time_in_force": "0", "broker": "BRKA", "status": "filled", "cum_qty": "10000",
               "avg_px": "190", "leaves_qty": "0", "trade_date": yesterday,
               "created_at": datetime.now(NEW_YORK), "updated_at": datetime.now(NEW_YORK)}
        assert gw.node.db.insert_order(row)
        oms.send_order(order)
        assert oms.wait(lambda: oms.allocation_for("DAILY-1") is not None, 30)
        assert oms.last_execution("DAILY-1").ord_status != "8"
