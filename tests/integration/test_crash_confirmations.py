"""The daemon killed between an AK and its AU, then restarted: one AU per confirmation.

The steps (gateway/faults.py): `confirmation_stored`, the AK committed by the FIX
callback but never handed to the dispatcher; `au_sent`, the AU handed to quickfix but its
confirmation not marked answered. After the restart every ticket is affirmed, the broker
received exactly one AU for each of its confirmations, and no ticket was left behind.
"""

from __future__ import annotations

import signal
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from gateway.fix.sim.plans import PostTradePlan
from tests.support.eventually import eventually
from tests.support.harness import (
    Gateway,
    Ports,
    broker_sim,
    oms_sim,
    start_daemon,
    stop_daemon,
    write_config,
)

pytestmark = pytest.mark.fix


def _affirmed(cfg: Path) -> int:
    db = Gateway(cfg, Ports(0, 0, 0)).db
    try:
        [alloc] = db.load_allocations() or [None]
        if alloc is None:
            return 0
        lines = db.load_allocation_lines(alloc["alloc_id"])
        return len(lines) if all(x["ticket_state"] == "affirmed" for x in lines) else 0
    finally:
        db.dispose()


@pytest.mark.parametrize("fault", ["confirmation_stored:7", "au_sent:7"])
def test_kill_between_ak_and_au_then_restart_answers_each_ak_once(
    tmp_path: Path, fault: str,
) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    log = tmp_path / "daemon.log"
    order = BlotterOrder(cl_ord_id="CA-1", book="SMA-CORE", symbol="AAPL", side="buy",
                         qty=Decimal(30_000), price=Decimal("190.50"))
    with broker_sim(tmp_path, ports, FillPlan(fills=3, interval_ms=20),
                    post_trade=PostTradePlan()) as broker, oms_sim(tmp_path, ports) as oms:
        daemon = start_daemon(cfg, log, fault=fault)
        try:
            assert oms.engine.wait_logged_on(60), log.read_text()[-3000:]
            oms.send_order(order)
            assert daemon.wait(90) == -signal.SIGKILL, log.read_text()[-3000:]
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert f"fault injected at {fault.split(':', maxsplit=1)[0]}" in log.read_text()
        daemon = start_daemon(cfg, log)
        try:
            lines = eventually(lambda: _affirmed(cfg), timeout=90,
                               description="every ticket affirmed after the restart")
            eventually(lambda: len(broker.affirmation_log) >= lines, timeout=30,
                       description="the broker received an AU for every confirmation")
            assert stop_daemon(daemon) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    per_confirm = Counter(au.confirm_id for au in broker.affirmation_log)
    assert len(per_confirm) == lines
    assert set(per_confirm.values()) == {1}, f"AU sent twice: {per_confirm.most_common(3)}"
    assert {au.affirm_status for au in broker.affirmation_log} == {"3"}
