"""Every block gets an answer, even when its broker cannot be reached.

Before: a block for a book whose broker session was down was queued silently (the OMS
heard nothing until the broker came back), and a broker answering our Logon with
ResetSeqNumFlag=Y made the session re-logon every second with no alert while the child
order never left. Now the OMS hears "pending new" at once, the order goes out when the
session logs on, a deadline answers the OMS when the broker never acknowledges, and a
reconnect loop raises an alert with its reason.
"""

from __future__ import annotations

import socket
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import simplefix

from gateway.fix.sim.oms import BlotterOrder
from tests.support.eventually import eventually
from tests.support.harness import (
    BROKER_KEY,
    Ports,
    broker_sim,
    gateway_in_process,
    http_get,
    oms_sim,
    write_config,
)

pytestmark = pytest.mark.fix

ORDER = BlotterOrder(cl_ord_id="DOWN-1", book="SMA-CORE", symbol="AAPL", side="buy",
                     qty=Decimal(20_000), price=Decimal("190.50"))


def _status_order(port: int) -> dict[str, object] | None:
    code, body = http_get(port, "/status")
    if code != 200:
        return None
    return next((o for o in body["orders"] if o["cl_ord_id"] == ORDER.cl_ord_id), None)


def test_queued_while_the_broker_is_down_then_routed_when_it_logs_on(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, extra="ack_timeout_seconds = 60")
    with gateway_in_process(cfg, ports), oms_sim(tmp_path, ports) as oms:
        assert oms.engine.wait_logged_on(30)
        oms.send_order(ORDER)
        pending = eventually(lambda: oms.last_execution(ORDER.cl_ord_id), timeout=10,
                             description="the OMS heard back at once")
        assert (pending.exec_type, pending.ord_status) == ("A", "A")
        assert "broker session BRKA is not logged on" in (pending.text or "")
        assert eventually(lambda: (_status_order(ports.http) or {}).get("queued_for_broker"))
        with broker_sim(tmp_path, ports) as broker:
            eventually(lambda: broker.orders, timeout=30,
                       description="the held order reached the broker once it logged on")
            assert oms.wait(lambda: oms.allocation_for(ORDER.cl_ord_id) is not None, 30)
            assert len(broker.orders) == 1


@pytest.mark.parametrize(("policy", "status"), [("reject", "8"), ("done_for_day", "3")])
def test_no_broker_by_the_deadline_answers_the_oms_and_alerts(
    tmp_path: Path, policy: str, status: str
) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports,
                       extra=f'ack_timeout_seconds = 1.5\non_ack_timeout = "{policy}"')
    with gateway_in_process(cfg, ports) as gw, oms_sim(tmp_path, ports) as oms:
        assert oms.engine.wait_logged_on(30)
        oms.send_order(ORDER)
        final = eventually(lambda: next((e for e in oms.executions.get(ORDER.cl_ord_id, [])
                                         if e.ord_status == status), None), timeout=15,
                           description=f"the OMS got 39={status} at the deadline")
        assert "did not log on within 1.5 s" in (final.text or "")
        [alert] = gw.node.db.events("alert.broker_ack_overdue")
        assert alert["order_id"] and '"queued": true' in alert["detail_json"]
        with broker_sim(tmp_path, ports) as broker:
            assert broker.engine.wait_logged_on(30)
            # The order was never handed to quickfix, so nothing is replayed to the broker.
            eventually(lambda: gw.node.db.wire_messages(session_id=BROKER_KEY, direction="out",
                                                        msg_type="A"), timeout=10)
            assert broker.orders == {}
        from gateway.metrics import METRICS
        assert METRICS.alerts.labels(kind="broker_ack_overdue")._value.get() >= 1


class ResettingBroker:
    """A broker that answers every Logon with ResetSeqNumFlag=Y and then hangs up."""

    def __init__(self, port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.logons = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                parser = simplefix.FixParser()
                try:
                    while (msg := parser.get_message()) is None:
                        data = conn.recv(4096)
                        if not data:
                            break
                        parser.append_buffer(data)
                except OSError:
                    continue
                if msg is None:
                    continue
                self.logons += 1
                reply = simplefix.FixMessage()
                for tag, value in ((8, "FIX.4.4"), (35, "A"), (49, "BRKA"), (56, "FIXALLOC"),
                                   (34, "1")):
                    reply.append_pair(tag, value, header=True)
                reply.append_utc_timestamp(52, header=True)
                reply.append_pair(98, "0")
                reply.append_pair(108, "5")
                reply.append_pair(141, "Y")
                conn.sendall(reply.encode())
                self._stop.wait(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


def test_reconnect_loop_raises_an_alert_with_the_reason(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, fix_extra="reconnect_alert_logons = 3",
                       extra="ack_timeout_seconds = 2")
    broker = ResettingBroker(ports.broker)
    try:
        with gateway_in_process(cfg, ports) as gw, oms_sim(tmp_path, ports) as oms:
            assert oms.engine.wait_logged_on(30)
            alerts = eventually(lambda: gw.node.db.events("alert.reconnect_loop"), timeout=30,
                                description="a reconnect loop alert")
            assert "ResetSeqNumFlag(141)=Y" in alerts[0]["detail_json"]
            assert alerts[0]["session_id"] == BROKER_KEY
            health = http_get(ports.http, "/status")[1]["session_health"][BROKER_KEY]
            assert health["reconnect_loop"] is True
            # A block sent meanwhile is answered by the deadline, not left hanging.
            oms.send_order(ORDER)
            eventually(lambda: any(e.ord_status in ("8", "6") for e in
                                   oms.executions.get(ORDER.cl_ord_id, [])), timeout=20,
                       description="the OMS got an answer for the block")
    finally:
        broker.close()
