"""Scenario 28: strategy/vehicle UDFs against a broker whose dictionary lacks them."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.oms import BlotterOrder
from tests.support.eventually import eventually
from tests.support.harness import (
    ROOT,
    Ports,
    running,
    write_config,
)

pytestmark = pytest.mark.fix
STOCK = ROOT / "fix_specs" / "FIX44-stock.xml"
ORDER = BlotterOrder(cl_ord_id="UDF-1", book="SMA-CORE", symbol="AAPL", side="buy",
                     qty=Decimal(20_000), price=Decimal(190))


def test_broker_without_udfs_rejects_a_j_that_carries_them(tmp_path: Path) -> None:
    """Sent UDFs to a broker that has not declared them: it rejects the J; we raise an alert."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with running(tmp_path, ports, cfg, dictionary=STOCK) as (broker, gw, oms):
        oms.send_order(ORDER)
        db = gw.node.db
        eventually(lambda: db.events("alert.session_reject"), timeout=30)
        [alert] = db.events("alert.session_reject")
        assert json.loads(alert["detail_json"])["ref_msg_type"] == "J"
        assert broker.allocations == []  # the broker's application never saw it


def test_broker_without_udfs_gets_them_in_alloc_text_when_configured(tmp_path: Path) -> None:
    """send_udfs = false: the same broker accepts the J, strategy/vehicle ride in AllocText."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, broker_extra="send_udfs = false")
    with running(tmp_path, ports, cfg, dictionary=STOCK) as (broker, gw, oms):
        oms.send_order(ORDER)
        eventually(lambda: broker.allocations, timeout=30)
        line = broker.allocations[0].lines[0]
        assert line["strategy"] is None and line["text"].startswith("STRAT=")
        eventually(lambda: gw.node.db.load_allocations()[0]["status"] == "accepted", timeout=10)
        assert gw.node.db.events("alert.session_reject") == []
