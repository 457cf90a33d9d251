"""The OMS's own answers to its copy of the J are recorded against the allocation.

Before: the OMS's AllocationInstructionAck (P 87=0) was answered with a
BusinessMessageReject in every run, and an OMS's session Reject of our J was stored with
empty ids while the allocation still showed `accepted`; rejected allocations were not
counted in `fixalloc_alerts_total`.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.oms import BlotterOrder
from gateway.metrics import METRICS
from tests.support.eventually import eventually
from tests.support.harness import ROOT, Ports, broker_sim, gateway_in_process, oms_sim, write_config

pytestmark = pytest.mark.fix

ORDER = BlotterOrder(cl_ord_id="ACK-1", book="SMA-CORE", symbol="AAPL", side="buy",
                     qty=Decimal(20_000), price=Decimal(190))


def test_oms_p_is_recorded_not_answered_with_a_business_reject(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports) as gw, \
            oms_sim(tmp_path, ports, ack_allocations=True) as oms:
        assert broker.engine.wait_logged_on(30) and oms.engine.wait_logged_on(30)
        oms.send_order(ORDER)
        assert oms.wait(lambda: oms.allocation_for("ACK-1") is not None, 30)
        alloc = eventually(lambda: next((a for a in gw.node.db.load_allocations()
                                         if a["oms_status"] == "accepted"), None),
                           timeout=10, description="the OMS's P recorded on the allocation")
        assert alloc["oms_ack_text"] == "booked" and alloc["oms_acked_at"] is not None
        assert oms.business_rejects == []


def test_oms_session_reject_of_our_j_shows_on_the_allocation(tmp_path: Path) -> None:
    """An OMS on the stock dictionary refuses our UDFs: its Reject is linked to the J."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    before = METRICS.alerts.labels(kind="session_reject")._value.get()
    with broker_sim(tmp_path, ports) as broker, gateway_in_process(cfg, ports) as gw, \
            oms_sim(tmp_path, ports, dictionary=ROOT / "fix_specs" / "FIX44-stock.xml") as oms:
        assert broker.engine.wait_logged_on(30) and oms.engine.wait_logged_on(30)
        oms.send_order(ORDER)
        alloc = eventually(lambda: next((a for a in gw.node.db.load_allocations()
                                         if a["oms_status"] == "session_rejected"), None),
                           timeout=30, description="the OMS's Reject linked to the allocation")
        assert "session Reject" in alloc["oms_ack_text"]
        # The alert is written just after the allocation's state, in its own transaction.
        [event] = eventually(lambda: gw.node.db.events("alert.session_reject") or None,
                             timeout=10, description="the session_reject alert")
        assert event["alloc_id"] == alloc["alloc_id"] and event["order_id"] == alloc["order_id"]
    assert METRICS.alerts.labels(kind="session_reject")._value.get() == before + 1


def test_broker_block_reject_is_counted_as_an_alert(tmp_path: Path) -> None:
    """A P 87=1 from the broker counts in fixalloc_alerts_total, not only in the events."""
    from gateway.fix.sim.broker import BrokerSimulator

    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    before = METRICS.alerts.labels(kind="allocation_block_rejected")._value.get()

    class Refusing(BrokerSimulator):
        def _on_allocation(self, message):  # type: ignore[no-untyped-def]
            from datetime import UTC, datetime

            from gateway.fix import allocation_codec
            j = allocation_codec.parse_allocation_instruction(message)
            self.allocations.append(j)
            self.engine.send(allocation_codec.build_allocation_ack(
                alloc_id=j.alloc_id, status="1", rej_code="0", text="unknown account",
                transact_time=datetime.now(UTC)))

    broker = Refusing(port=ports.broker, state_dir=tmp_path / "broker")
    broker.start()
    try:
        with gateway_in_process(cfg, ports) as gw, oms_sim(tmp_path, ports) as oms:
            assert broker.engine.wait_logged_on(30) and oms.engine.wait_logged_on(30)
            oms.send_order(ORDER)
            eventually(lambda: gw.node.db.events("alert.allocation_block_rejected"), timeout=30)
    finally:
        broker.stop()
    assert METRICS.alerts.labels(kind="allocation_block_rejected")._value.get() == before + 1
