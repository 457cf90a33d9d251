"""The daemon killed with SIGKILL mid-order and restarted: nothing lost, nothing twice, one J."""

from __future__ import annotations

import signal
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    Gateway,
    Ports,
    broker_sim,
    http_get,
    oms_sim,
    start_daemon,
    stop_daemon,
    wait_ready,
    write_config,
)

pytestmark = pytest.mark.fix

QTY = Decimal(200_000)
FILLS = 20


def test_sigkill_mid_order_then_restart_completes_with_one_j(
    tmp_path: Path, database_url: str
) -> None:
    """Fills sent while the daemon is dead arrive by resend, are applied once, one J goes out."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, database_url=database_url)
    order = BlotterOrder(cl_ord_id="CRASH-1", book="SMA-CORE", symbol="AAPL", side="buy",
                         qty=QTY, ord_type="2", price=Decimal("190.50"))
    log = tmp_path / "daemon.log"
    with broker_sim(tmp_path, ports, FillPlan(fills=FILLS, interval_ms=150)) as broker, \
            oms_sim(tmp_path, ports) as oms:
        daemon = start_daemon(cfg, log)
        try:
            assert wait_ready(ports.http), log.read_text()[-3000:]
            assert oms.engine.wait_logged_on(30)
            oms.send_order(order)
            eventually(lambda: broker.orders and
                            next(iter(broker.orders.values())).fills_sent >= 5, timeout=30)
            assert stop_daemon(daemon, signal.SIGKILL) == -signal.SIGKILL
            sim_order = next(iter(broker.orders.values()))
            # The broker keeps filling while we are down; its engine stores the reports.
            eventually(lambda: sim_order.fills_sent == FILLS, timeout=30)
            assert oms.allocation_for(order.cl_ord_id) is None

            daemon = start_daemon(cfg, log)
            assert wait_ready(ports.http), log.read_text()[-3000:]
            assert oms.wait(lambda: oms.allocation_for(order.cl_ord_id) is not None, 60), \
                log.read_text()[-3000:]

            def accepted() -> bool:
                code, body = http_get(ports.http, "/status")
                return code == 200 and body["allocations"].get("accepted") == 1

            eventually(accepted, timeout=30)
            assert stop_daemon(daemon) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()

        db = Gateway(cfg, ports).db
        try:
            fills = [r for r in db.load_reports() if r["exec_type"] == "F"]
            assert len(fills) == FILLS
            assert len({r["exec_id"] for r in fills}) == FILLS
            assert sum(Decimal(r["last_qty"]) for r in fills) == QTY == sim_order.cum_qty
            [stored_order] = db.load_orders()
            assert Decimal(stored_order["cum_qty"]) == QTY
            # Resent fills arrived with PossDupFlag=Y after the restart.
            resent = [m for m in db.wire_messages(session_id=BROKER_KEY, direction="in",
                                                  msg_type="8") if m["poss_dup"]]
            assert resent, "expected the broker to resend the fills sent while we were down"
            j_out = [m for m in db.wire_messages(session_id=BROKER_KEY, direction="out",
                                                 msg_type="J")]
            assert len(j_out) == 1
            assert len(db.load_allocations()) == 1
        finally:
            db.dispose()
        assert len(broker.allocations) == 1
        j = broker.allocations[0]
        assert j.quantity == QTY
        assert sum(Decimal(str(x["qty"])) for x in j.lines) == QTY
        relayed = oms.executions[order.cl_ord_id]
        assert relayed[-1].cum_qty == QTY
        assert sum(e.last_qty for e in relayed if e.exec_type == "F") == QTY


def test_sigterm_logs_out_and_restart_resumes_sequence_numbers(tmp_path: Path) -> None:
    """SIGTERM exits 0 after logout; the next start continues the stored sequence numbers."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    log = tmp_path / "daemon.log"
    with broker_sim(tmp_path, ports) as broker:
        daemon = start_daemon(cfg, log)
        try:
            assert broker.engine.wait_logged_on(30)
            # The OMS never connects in this test, so the gateway must say it is not ready.
            eventually(lambda: http_get(ports.http, "/healthz")[0] == 200, timeout=30)
            code, body = http_get(ports.http, "/readyz")
            assert code == 503 and body["sessions_not_logged_on"] == ["OMS1"]
            assert stop_daemon(daemon) == 0
            eventually(lambda: not broker.engine.is_logged_on(), timeout=10)
            daemon = start_daemon(cfg, log)
            eventually(broker.engine.is_logged_on, timeout=30)
            assert stop_daemon(daemon) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    db = Gateway(cfg, ports).db
    try:
        logons = [m for m in db.wire_messages(session_id=BROKER_KEY, direction="out",
                                              msg_type="A")]
        logouts = [m for m in db.wire_messages(session_id=BROKER_KEY, direction="out",
                                               msg_type="5")]
    finally:
        db.dispose()
    assert len(logons) == 2 and len(logouts) == 2
    assert logons[0]["seq_num"] == 1
    assert logons[1]["seq_num"] == logouts[0]["seq_num"] + 1  # resumed, not reset
    assert "node.stopped" in log.read_text()


def test_order_stored_by_the_callback_but_never_dispatched_is_routed_at_restart(
    tmp_path: Path,
) -> None:
    """A D persisted just before a crash is validated, routed and allocated on the next start."""
    from datetime import UTC, datetime

    from gateway.clock import trade_date_of
    from gateway.config import load_config
    from gateway.orders import make_order_id
    from gateway.persistence.store import Database
    from tests.support.harness import OMS_KEY, gateway_in_process

    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    config = load_config(cfg)
    now = datetime.now(UTC)
    trade_date = trade_date_of(now).isoformat()
    order_id = make_order_id(OMS_KEY, "ORPHAN-1", trade_date)
    db = Database(config.database_url)
    db.migrate()
    assert db.insert_order({
        "order_id": order_id, "oms_session": OMS_KEY, "oms_cl_ord_id": "ORPHAN-1",
        "book": "SMA-CORE", "symbol": "AAPL", "side": "buy", "order_qty": "30000",
        "ord_type": "2", "price": "190.50", "time_in_force": "0", "broker": "",
        "status": "received", "cum_qty": "0", "avg_px": "0", "leaves_qty": "30000",
        "trade_date": trade_date, "created_at": now, "updated_at": now,
    })
    db.dispose()
    with broker_sim(tmp_path, ports, FillPlan(fills=3, interval_ms=20)) as broker, \
            gateway_in_process(cfg, ports) as gw, oms_sim(tmp_path, ports) as oms:
        eventually(lambda: len(broker.allocations) == 1, timeout=30)
        assert broker.allocations[0].quantity == Decimal(30_000)
        # The OMS was offline when the ERs and the J were produced: it gets them by resend.
        assert oms.wait(lambda: oms.allocation_for("ORPHAN-1") is not None, 30)
        assert gw.node.db.load_orders()[0]["status"] == "filled"
