"""HTTP readers cannot starve the FIX path of database connections.

Found by `fixalloc bench bigbook`: a client polling /allocations/{id} of a 100,000-line
allocation every 20 ms held every connection of the daemon's one pool, the wire log's
next write waited 30 s for a connection and the daemon exited 75. HTTP now reads through
its own small pool: when that is exhausted a request gets 503 with a body, and orders
still flow to their J.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from gateway.node import HTTP_DB_CONNECTIONS
from tests.support.harness import Ports, http_get, running, write_config

pytestmark = pytest.mark.fix


def test_http_pool_exhausted_gives_503_and_orders_still_reach_their_j(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with running(tmp_path, ports, cfg, FillPlan(fills=3, interval_ms=10)) as (_b, gw, oms):
        assert gw.node is not None and gw.node.http_db is not None
        assert gw.node.http_db.engine is not gw.node.db.engine
        held = [gw.node.http_db.engine.connect() for _ in range(HTTP_DB_CONNECTIONS)]
        try:
            code, body = http_get(ports.http, "/allocations/NOPE")
            assert (code, body) == (503, {
                "detail": "the database is busy with other requests; retry"})
            order = BlotterOrder(cl_ord_id="POOL-1", book="SMA-CORE", symbol="AAPL",
                                 side="buy", qty=Decimal(20_000), price=Decimal("190.50"))
            oms.send_order(order)
            assert oms.wait(lambda: oms.allocation_for("POOL-1") is not None, 60)
            assert http_get(ports.http, "/healthz") == (200, {"status": "ok"})
        finally:
            for conn in held:
                conn.close()
        j = oms.allocation_for("POOL-1")
        code, body = http_get(ports.http, f"/allocations/{j.alloc_id}")
        assert code == 200 and body["allocation"]["alloc_id"] == j.alloc_id
