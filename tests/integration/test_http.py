"""The HTTP API served by the running gateway, hit over real TCP on 127.0.0.1."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from gateway.metrics import METRICS
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


def _histogram_count(metrics_text: str) -> float:
    """The observation count of the last-fill-to-J histogram in a Prometheus exposition."""
    for line in metrics_text.splitlines():
        if line.startswith("fixalloc_last_fill_to_j_seconds_count "):
            return float(line.split()[1])
    raise AssertionError("histogram missing from /metrics")


def test_health_ready_status_metrics_and_allocation_lookup(tmp_path: Path) -> None:
    """Ready only with every session up; status, metrics and allocations reflect a real block."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with broker_sim(tmp_path, ports, FillPlan(fills=2, interval_ms=10)) as broker, \
            gateway_in_process(cfg, ports):
        assert broker.engine.wait_logged_on(30)
        assert http_get(ports.http, "/healthz") == (200, {"status": "ok"})
        code, body = http_get(ports.http, "/readyz")
        assert code == 503 and body == {"ready": False, "sessions_not_logged_on": ["OMS1"]}
        accepted_before = METRICS.allocations.labels(state="accepted")._value.get()
        latency_before = _histogram_count(http_get(ports.http, "/metrics")[1])
        with oms_sim(tmp_path, ports) as oms:
            assert oms.engine.wait_logged_on(30)
            eventually(lambda: http_get(ports.http, "/readyz")[0] == 200, timeout=10)
            oms.send_order(BlotterOrder(cl_ord_id="H-1", book="SMA-CORE", symbol="AAPL",
                                        side="buy", qty=Decimal(10_000), price=Decimal(190)))
            assert oms.wait(lambda: oms.allocation_for("H-1") is not None, 30)
            alloc_id = oms.allocation_for("H-1").alloc_id
            eventually(lambda: http_get(ports.http, "/status")[1]["allocations"]
                            .get("accepted") == 1, timeout=10)
            code, status = http_get(ports.http, "/status")
            sessions = {s["name"]: s for s in status["sessions"]}
            assert sessions["BRKA"]["logged_on"] and sessions["OMS1"]["logged_on"]
            assert sessions["BRKA"]["next_target_seq_num"] > 3
            assert status["orders_total"] == 1 and status["open_orders"] == []
            [order] = status["orders"]
            excluded = {x["account_id"]: x for x in order["excluded_accounts"]}
            # Pre-trade compliance: the frozen and closed accounts are shown with their reason.
            assert {"SMA0007", "SMA0150"} <= excluded.keys()
            assert "frozen" in excluded["SMA0007"]["reasons"][0]["text"]
            code, alloc = http_get(ports.http, f"/allocations/{alloc_id}")
            assert code == 200 and alloc["allocation"]["status"] == "accepted"
            assert sum(Decimal(x["qty"]) for x in alloc["lines"]) == Decimal(10_000)
            assert alloc["decision"]["rulebook_version"] == status["rulebook_version"]
            code, text = http_get(ports.http, "/metrics")
            assert code == 200
            expected = f'fixalloc_allocations_total{{state="accepted"}} {accepted_before + 1}'
            assert expected in text
            assert _histogram_count(text) == latency_before + 1
        code, body = http_get(ports.http, "/allocations/NOPE")
        assert code == 404 and body == {"detail": "no allocation 'NOPE'"}
        code, spec = http_get(ports.http, "/openapi.json")
        assert code == 200 and "/status" in spec["paths"]
