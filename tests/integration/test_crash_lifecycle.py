"""The daemon killed in the middle of the post-trade workflow (FIX_ALLOCATION.md scenario 30).

A bust after the J makes the daemon decide and send a J Replace; the kill lands exactly on
a step of that Replace (gateway/faults.py, the second arrival: the first was the J New).
After the restart the broker holds exactly one J New and one J Replace, the Replace is
accepted, every ticket of it is affirmed with one AU per confirmation. An exception open
when the daemon died reappears in the next sweep after the restart.
"""

from __future__ import annotations

import signal
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import NEW_YORK, SimulatedClock
from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from gateway.fix.sim.plans import PostTradePlan
from tests.support.eventually import eventually
from tests.support.harness import (
    Gateway,
    Ports,
    broker_sim,
    http_get,
    oms_sim,
    start_daemon,
    stop_daemon,
    write_config,
)

pytestmark = pytest.mark.fix

QTY = Decimal(30_000)


def _order(cl_ord_id: str) -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl_ord_id, book="SMA-CORE", symbol="AAPL", side="buy",
                        qty=QTY, price=Decimal("190.50"))


def _read(cfg: Path, fn: Any) -> Any:
    db = Gateway(cfg, Ports(0, 0, 0)).db
    try:
        return fn(db)
    finally:
        db.dispose()


def _replace_affirmed(cfg: Path) -> dict[str, Any] | None:
    def check(db: Any) -> dict[str, Any] | None:
        allocs = db.load_allocations()
        replace = next((a for a in allocs if a["alloc_trans_type"] == "1"), None)
        if replace is None or replace["status"] != "accepted":
            return None
        lines = db.load_allocation_lines(replace["alloc_id"])
        return replace if all(x["ticket_state"] == "affirmed" for x in lines) else None
    return _read(cfg, check)  # type: ignore[no-any-return]


@pytest.mark.parametrize("fault", ["decision_stored:2", "broker_j_sent:2", "oms_j_sent:2"])
def test_kill_during_a_replace_then_restart_sends_it_once_and_affirms_it(
    tmp_path: Path, fault: str,
) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    log = tmp_path / "daemon.log"
    plan = PostTradePlan(bust_after_j=(0,))
    with broker_sim(tmp_path, ports, FillPlan(fills=3, interval_ms=20),
                    post_trade=plan) as broker, oms_sim(tmp_path, ports) as oms:
        daemon = start_daemon(cfg, log, fault=fault)
        try:
            assert oms.engine.wait_logged_on(60), log.read_text()[-3000:]
            oms.send_order(_order("CL-1"))
            assert daemon.wait(90) == -signal.SIGKILL, log.read_text()[-3000:]
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert f"fault injected at {fault.split(':', maxsplit=1)[0]}" in log.read_text()
        daemon = start_daemon(cfg, log)
        try:
            replace = eventually(lambda: _replace_affirmed(cfg), timeout=90,
                                 description="the Replace accepted and all its tickets "
                                             "affirmed after the restart")
            confirm_ids = {x["confirm_id"] for x in _read(
                cfg, lambda db: db.load_allocation_lines(replace["alloc_id"]))}
            eventually(lambda: confirm_ids <= {au.confirm_id for au in broker.affirmation_log},
                       timeout=30, description="an AU for every AK of the Replace")
            eventually(lambda: any(j.alloc_id == replace["alloc_id"] for j in oms.allocations),
                       timeout=30, description="the OMS got the Replace")
            assert stop_daemon(daemon) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    kinds = [j.alloc_trans_type for j in broker.allocations]
    assert kinds == ["0", "1"], kinds
    assert broker.allocations[1].alloc_id == replace["alloc_id"]
    assert Decimal(replace["quantity"]) == QTY - Decimal(10_000)
    per_confirm = Counter(au.confirm_id for au in broker.affirmation_log)
    assert set(per_confirm.values()) == {1}, f"AU sent twice: {per_confirm.most_common(3)}"
    oms_kinds = Counter((j.alloc_id, j.alloc_trans_type) for j in oms.allocations)
    assert set(oms_kinds.values()) == {1} and len(oms_kinds) == 2, oms_kinds


def test_an_exception_open_when_the_daemon_dies_is_in_the_next_sweep(tmp_path: Path) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    log = tmp_path / "daemon.log"
    plan = PostTradePlan(reject_account={"SMA0001": "0"})
    # A trading day's afternoon on the daemon's and the OMS's clocks, whatever day it is.
    start = datetime(2026, 11, 24, 15, 0, tzinfo=NEW_YORK)
    with broker_sim(tmp_path, ports, FillPlan(fills=2, interval_ms=20), post_trade=plan), \
            oms_sim(tmp_path, ports, clock=SimulatedClock(start)) as oms:
        daemon = start_daemon(cfg, log, args=["--clock-start", start.isoformat()])
        try:
            assert oms.engine.wait_logged_on(60), log.read_text()[-3000:]
            oms.send_order(_order("EX-1"))
            eventually(lambda: _read(cfg, lambda db: db.exceptions(state="open")), timeout=60,
                       description="the account reject opened an exception")
            daemon.send_signal(signal.SIGKILL)
            assert daemon.wait(30) == -signal.SIGKILL
            later = start + timedelta(minutes=30)
            daemon = start_daemon(cfg, log, args=["--clock-start", later.isoformat()])
            trade_date = _read(cfg, lambda db: db.load_orders()[0]["trade_date"])
            body = {"at": "19:00", "date": str(trade_date)}

            answers: list[tuple[int, Any]] = []

            def sweep() -> Any:
                answers.append(http_get(ports.http, "/sweep/run", method="POST", body=body))
                return answers[-1][1] if answers[-1][0] == 200 else None

            try:
                ran = eventually(sweep, timeout=60, description="the restarted daemon ran "
                                                                "the sweep")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last answer {answers[-1:]}") from None
            assert stop_daemon(daemon) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    kinds = [item["kind"] for item in ran["report"]["open_items"]]
    assert "account_rejected" in kinds, ran["report"]["open_items"]
