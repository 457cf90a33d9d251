"""Blocks handed to the gateway over HTTP (POST /orders, the desk), on real sessions.

They go the way of an OMS's D: the D is recorded on the desk's session with the person
as SenderSubID, routed to the book's broker, allocated to the pre-allocated accounts and
reported in a J; the desk's execution reports and J copy are recorded on its session and
never reach the OMS.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.users import UserStore
from gateway.config import load_config
from gateway.fix.sim.broker import FillPlan
from gateway.persistence.store import Database
from tests.support.eventually import eventually
from tests.support.harness import CONFIG, Ports, http_get, running, write_config

pytestmark = pytest.mark.fix

PRE = [{"account_id": "SMA0001", "qty": "300"}, {"account_id": "SMA0002", "qty": "200"},
       {"account_id": "SMA0003", "qty": "100"}]


def _setup(tmp_path: Path) -> tuple[Ports, Path, dict[str, str]]:
    rules = tmp_path / "rules"
    shutil.copytree(CONFIG / "rules", rules)
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, rules=rules)
    db = Database(load_config(cfg).database_url)
    db.migrate()
    users = UserStore(db)
    tokens = {}
    for name, roles in (("tom", ["trader"]), ("vic", ["viewer"])):
        users.add(name, f"{name}-password-1", roles, actor="test")
        tokens[name] = users.create_token(name, "test", actor="test")
    db.dispose()
    return ports, cfg, tokens


def _post(port: int, token: str, body: Any) -> tuple[int, Any]:
    return http_get(port, "/orders", method="POST", body=body,
                    headers={"Authorization": f"Bearer {token}"})


def _block(cl: str, **kw: Any) -> dict[str, Any]:
    return {"cl_ord_id": cl, "book": "SMA-CORE", "symbol": "AAPL", "side": "buy",
            "qty": "600", "preallocations": PRE,
            "preallocation_reason": "rebalance to model core-growth", **kw}


def test_a_desk_block_is_routed_allocated_to_its_accounts_and_kept_from_the_oms(
        tmp_path: Path) -> None:
    ports, cfg, tokens = _setup(tmp_path)
    with running(tmp_path, ports, cfg, FillPlan(fills=3, interval_ms=5)) as (broker, gw, oms):
        assert gw.node is not None
        code, body = _post(ports.http, tokens["tom"], {"orders": [_block("RB-1-AAPL-BUY")],
                                                       "reason": "quarterly rebalance"})
        assert code == 200, body
        [answer] = body["orders"]
        assert answer["status"] in ("pending_new", "new", "partially_filled", "filled"), answer
        assert answer["broker"] == "BRKA" and answer["qty"] == "600"

        j = eventually(lambda: next(iter(broker.allocations), None), timeout=30)
        assert {x["account"]: x["qty"] for x in j.lines} == {
            "SMA0001": Decimal(300), "SMA0002": Decimal(200), "SMA0003": Decimal(100)}
        assert j.quantity == Decimal(600)

        db = gw.node.db
        desk = gw.node.sessions.desk.key if gw.node.sessions else ""
        [d] = db.wire_messages(session_id=desk, direction="in", msg_type="D")
        assert "\x0150=tom\x01" in bytes(d["raw"]).decode() and d["ref_id"] == "RB-1-AAPL-BUY"
        assert "\x0178=3\x01" in bytes(d["raw"]).decode()  # NoAllocs: the pre-allocation
        # The desk hears what an OMS would (acks, fills, the J's copy), on its own session.
        out_types = {r["msg_type"] for r in db.wire_messages(session_id=desk, direction="out")}
        eventually(lambda: "J" in {r["msg_type"] for r in db.wire_messages(
            session_id=desk, direction="out")}, timeout=30)
        assert "8" in out_types
        # ... and the OMS hears nothing of it.
        assert "RB-1-AAPL-BUY" not in oms.executions

        # A retried request makes no second order: the answer is the order as it stands.
        code, again = _post(ports.http, tokens["tom"], {"orders": [_block("RB-1-AAPL-BUY")]})
        assert code == 200 and again["orders"][0]["order_id"] == answer["order_id"]
        assert len(broker.orders) == 1
        actions = [e for e in db.events("user_action")]
        assert any("orders.submit" in e["detail_json"] and "tom" in e["detail_json"]
                   for e in actions)


def test_a_bad_desk_block_is_refused_with_its_reason_and_nothing_is_routed(
        tmp_path: Path) -> None:
    ports, cfg, tokens = _setup(tmp_path)
    with running(tmp_path, ports, cfg, FillPlan(fills=1)) as (broker, gw, _oms):
        outsider = [{"account_id": "NOPE9", "qty": "600"}]
        code, body = _post(ports.http, tokens["tom"], {"orders": [
            _block("RB-2-X", preallocations=outsider),
            _block("RB-2-Y", book="NO-SUCH-BOOK")]})
        assert code == 200, body
        first, second = body["orders"]
        assert first["status"] == "rejected" and "NOPE9" in first["reason"]
        assert second["status"] == "rejected" and "NO-SUCH-BOOK" in second["reason"]
        assert broker.orders == {}

        # Malformed requests never reach the dispatcher: 422 with what is wrong.
        code, body = _post(ports.http, tokens["tom"], {"orders": [
            _block("RB-3", preallocations=[{"account_id": "SMA0001", "qty": "1"}])]})
        assert code == 422 and "sum to 1, not qty 600" in body["detail"]
        code, body = _post(ports.http, tokens["tom"], {"orders": [_block("A"), _block("A")]})
        assert code == 422 and "used twice" in body["detail"]
        code, body = _post(ports.http, tokens["tom"], {"orders": [_block("RB-4", side="up")]})
        assert code == 422
        # A viewer may not place orders.
        code, body = _post(ports.http, tokens["vic"], {"orders": [_block("RB-5")]})
        assert code == 403 and body["action"] == "submit_orders"
        assert gw.node is not None and broker.orders == {}
