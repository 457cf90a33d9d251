"""The daemon killed (SIGKILL) right after a live cross is committed, then restarted: the
crossed executions reach the OMS once each, the net reaches the broker once per block,
and every part is allocated with one J as New on each session. The reference price comes
over HTTP (POST /prices), as a feed would push it."""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.users import UserStore
from gateway.config import load_config
from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.oms import BlotterOrder
from gateway.persistence.store import Database
from tests.integration.test_live_crossing import BUY, POLICY, SELL
from tests.support.eventually import eventually
from tests.support.harness import (
    CONFIG,
    OMS_KEY,
    Ports,
    broker_sim,
    http_get,
    oms_sim,
    start_daemon,
    stop_daemon,
    write_config,
)

pytestmark = pytest.mark.fix

D = Decimal


def _setup(tmp: Path) -> tuple[Ports, Path, str]:
    rules = tmp / "rules"
    shutil.copytree(CONFIG / "rules", rules)
    (rules / "40-crossing.yaml").write_text(POLICY.format(window=60), encoding="utf-8")
    ports = Ports.free()
    cfg = write_config(tmp, ports, rules=rules)
    db = Database(load_config(cfg).database_url)
    db.migrate()
    users = UserStore(db)
    users.add("feed", "feed-password-1", ["operations"], actor="test")
    token = users.create_token("feed", "prices", actor="test")
    db.dispose()
    return ports, cfg, token


def _order(cl: str, side: str, pre: tuple[tuple[str, Decimal], ...], limit: str
           ) -> BlotterOrder:
    return BlotterOrder(cl_ord_id=cl, book="SMA-CORE", symbol="AAPL", side=side,
                        qty=sum((q for _a, q in pre), D(0)), price=D(limit), preallocations=pre,
                        text="the PM's split of the block")


def _push(port: int, token: str, quote: dict[str, str]) -> tuple[int, Any] | None:
    """POST /prices once the daemon's HTTP is up (None until then)."""
    got: tuple[int, Any] = http_get(port, "/prices", method="POST",
                                    body={"source": "feed", "quotes": [quote]},
                                    headers={"Authorization": f"Bearer {token}"})
    return got if got[0] else None


@pytest.mark.parametrize("fault", ["cross_stored", "venue_j_recorded"])
def test_kill_after_the_cross_is_stored(tmp_path: Path, fault: str) -> None:
    ports, cfg, token = _setup(tmp_path)
    log = tmp_path / "daemon.log"
    buy, sell = _order("KX-B", "buy", BUY, "191.00"), _order("KX-S", "sell", SELL, "189.00")
    plan = FillPlan(fills=1, interval_ms=5, prices=(D("190.50"),))
    with broker_sim(tmp_path, ports, plan) as broker, oms_sim(tmp_path, ports) as oms:
        daemon = start_daemon(cfg, log, fault=fault)
        try:
            assert oms.engine.wait_logged_on(60), log.read_text()[-3000:]
            quote = {"symbol": "AAPL", "last": "190.25", "as_of": datetime.now(UTC).isoformat()}
            code, body = eventually(lambda: _push(ports.http, token, quote), timeout=30)
            assert code == 200 and body["accepted"] == 1, body
            oms.send_order(buy)
            eventually(lambda: oms.executions.get("KX-B"), timeout=15)
            oms.send_order(sell)
            assert daemon.wait(60) == -signal.SIGKILL, log.read_text()[-3000:]
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert f"fault injected at {fault}" in log.read_text()
        if fault == "cross_stored":
            assert not broker.orders  # nothing was routed before the kill

        daemon = start_daemon(cfg, log)  # no price now: the cross is already in the record
        try:
            for cl in ("KX-B", "KX-S"):
                eventually(lambda cl=cl: len(oms.allocations_for(cl)) == 2, timeout=90,
                           description=f"both Js of {cl} reached the OMS")
            eventually(lambda: len(broker.allocations) == 2, timeout=30)
            assert sorted((o.side, o.qty) for o in broker.orders.values()) == [
                ("buy", D(1500)), ("sell", D(500))]
            for cl, total in (("KX-B", 3000), ("KX-S", 2000)):
                seen = oms.executions[cl]
                crossed = [e for e in seen if e.exec_type == "F" and e.last_px == D("190.25")]
                assert [e.last_qty for e in crossed] == [D(1500)], seen
                exec_ids = [e.exec_id for e in seen]
                assert len(exec_ids) == len(set(exec_ids))  # nothing relayed twice
                assert seen[-1].cum_qty == total
                news = Counter(j.alloc_id for j in oms.allocations_for(cl)
                               if j.alloc_trans_type == "0")
                assert set(news.values()) == {1}
            assert Counter(j.alloc_id for j in broker.allocations
                           if j.alloc_trans_type == "0").most_common(1)[0][1] == 1
            assert stop_daemon(daemon) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
    db = Database(load_config(cfg).database_url)
    try:
        parents = [db.find_order(OMS_KEY, cl) for cl in ("KX-B", "KX-S")]
        assert all(p is not None and p["status"] == "split" for p in parents)
        # The record of the cross survived the kill with the splits it belongs to.
        assert len(db.events("cross.executed")) == 2
        # Each crossed part's J was answered exactly once by the venue, and accepted.
        venue = [m for m in db.wire_messages(session_id="FIX.4.4:FIXALLOC->CROSS")]
        js = [m for m in venue if m["msg_type"] == "J"]
        ps = [m for m in venue if m["msg_type"] == "P"]
        assert len(js) == 2 and len(ps) == 2
        assert {m["ref_id"] for m in js} == {m["ref_id"] for m in ps}
        for p in parents:
            assert p is not None
            [crossed] = [c for c in db.children_of(p["order_id"]) if c["broker"] == "cross"]
            [alloc] = db.allocations_for_order(crossed["order_id"])
            assert alloc["status"] == "accepted"
    finally:
        db.dispose()
