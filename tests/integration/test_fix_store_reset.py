"""The FIX stores hold one session period: quickfix empties them at the session's end time.

The stores keep every message body the gateway sent, to answer a ResendRequest; the record
is the wire log. The retention plan (docs/storage.md) relies on the scheduled reset
trimming them, so this checks it with the gateway's own settings: a session period that
ends a few seconds into the test.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from tests.support.eventually import eventually
from tests.support.harness import BROKER_KEY, Ports, running, write_config

pytestmark = pytest.mark.fix


def _bodies(state: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_size for p in (state / "fix_store").glob("*/*.body")}


def test_the_stores_are_emptied_when_the_session_period_ends(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    end = now + timedelta(seconds=25)
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, fix_extra=(
        f'start_time = "{(now - timedelta(minutes=5)):%H:%M:%S}"\n'
        f'end_time = "{end:%H:%M:%S}"\ntime_zone = "UTC"'))
    block = BlotterOrder(cl_ord_id="BLK-R1", book="SMA-CORE", symbol="AAPL", side="buy",
                         qty=Decimal(20_000), ord_type="2", price=Decimal("190.50"))
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=20)) as (broker, gw, oms):
        oms.send_order(block)
        assert oms.wait(lambda: oms.allocation_for(block.cl_ord_id) is not None, 20)
        eventually(lambda: len(broker.allocations) == 1, 20, description="the broker got a J")
        sizes = _bodies(tmp_path / "state")
        assert sizes["brokers"] > 5_000 and sizes["oms"] > 5_000, sizes
        assert datetime.now(UTC) < end, "the block took longer than the session period"

        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
        eventually(lambda: _bodies(tmp_path / "state") == {"brokers": 0, "oms": 0}, 15,
                   description="both stores emptied at the end of the session period")
        # The record is the wire log, which keeps everything.
        assert len(gw.node.db.wire_messages(session_id=BROKER_KEY, direction="out",
                                            msg_type="J")) == 1
