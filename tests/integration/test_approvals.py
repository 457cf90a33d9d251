"""The approval gate over real FIX sessions and the real HTTP server: a block that a
four-eyes policy holds goes out only after two different PMs approve it, exactly as
decided; a rejected block stays unallocated until an override; a restart keeps the
held allocation and its votes and sends nothing twice."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.users import UserStore
from gateway.clock import NEW_YORK
from gateway.config import load_config
from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import BlotterOrder
from gateway.persistence.store import Database
from tests.integration.test_notifications import SECRET, SECRET_ENV, HookServer, hook
from tests.support.approvals import FOUR_EYES
from tests.support.clock import FakeClock
from tests.support.harness import (
    CONFIG,
    Ports,
    broker_sim,
    gateway_in_process,
    http_get,
    oms_sim,
    running,
    write_config,
)

pytestmark = pytest.mark.fix
__all__ = ["hook"]  # the webhook receiver fixture, shared with the notification tests



def _setup(tmp_path: Path, database_url: str = "") -> tuple[Ports, Path, dict[str, str]]:
    rules = tmp_path / "rules"
    shutil.copytree(CONFIG / "rules", rules)
    (rules / "30-approvals.yaml").write_text(FOUR_EYES, encoding="utf-8")
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, rules=rules, database_url=database_url)
    db = Database(load_config(cfg).database_url)
    db.migrate()
    users = UserStore(db)
    tokens = {}
    for name, roles in (("alice", ["pm"]), ("bob", ["pm"]), ("carol", ["compliance"]),
                        ("OMS1", ["pm"]), ("tom", ["trader"])):
        users.add(name, f"{name}-password-1", roles, actor="test")
        tokens[name] = users.create_token(name, "test", actor="test")
    db.dispose()
    return ports, cfg, tokens


def _as(port: int, token: str, path: str, body: Any = None, method: str = "POST"
        ) -> tuple[int, Any]:
    return http_get(port, path, method=method, body=body,
                    headers={"Authorization": f"Bearer {token}"})


def _held(port: int, token: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = _as(port, token, "/approvals?state=pending", method="GET")
        if code == 200 and body["approvals"]:
            return dict(body["approvals"][0])
        time.sleep(0.1)
    raise AssertionError("no allocation was held")


def _order(n: int) -> BlotterOrder:
    return BlotterOrder(cl_ord_id=f"AP-{n}", book="SMA-CORE", symbol="AAPL", side="buy",
                        qty=Decimal(20_000), price=Decimal(190))


def test_a_four_eyes_block_goes_out_after_two_pms_exactly_as_decided(tmp_path: Path) -> None:
    ports, cfg, tok = _setup(tmp_path)
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=10)) as (broker, gw, oms):
        oms.send_order(_order(1))
        held = _held(ports.http, tok["alice"])
        alloc_id = held["alloc_id"]
        assert held["policies"][0]["id"] == "FOUR-EYES-ALL"
        assert held["facts"]["decision"]["allocated_qty"] == 20_000
        assert held["barred"] == ["OMS1"]  # the order came from OMS1
        time.sleep(0.5)
        assert broker.allocations == [] and oms.allocation_for("AP-1") is None

        # Who may not vote, and why.
        code, body = _as(ports.http, tok["tom"], f"/approvals/{alloc_id}/approve")
        assert code == 403 and "may not do action approve" in body["detail"]
        code, body = _as(ports.http, tok["OMS1"], f"/approvals/{alloc_id}/approve")
        assert code == 403 and "sent the order" in body["detail"]
        code, body = _as(ports.http, tok["carol"], f"/approvals/{alloc_id}/approve")
        assert code == 403 and "holds none of the roles" in body["detail"]

        code, body = _as(ports.http, tok["alice"], f"/approvals/{alloc_id}/approve",
                         {"reason": "checked the split"})
        assert code == 200 and body["state"] == "pending"
        assert body["waiting_for"] == ["FOUR-EYES-ALL: 1 more pm"]
        code, body = _as(ports.http, tok["alice"], f"/approvals/{alloc_id}/approve")
        assert code == 403 and "already voted" in body["detail"]
        time.sleep(0.3)
        assert broker.allocations == []

        code, body = _as(ports.http, tok["bob"], f"/approvals/{alloc_id}/approve")
        assert code == 200 and body["state"] == "approved"
        assert wait_for(lambda: len(broker.allocations) == 1, 15)
        assert oms.wait(lambda: oms.allocation_for("AP-1") is not None, 15)
        j = broker.allocations[0]
        assert j.alloc_id == alloc_id
        stored = {ln["account_id"]: Decimal(ln["qty"])
                  for ln in gw.node.db.load_allocation_lines(alloc_id)}
        assert {str(ln["account"]): Decimal(str(ln["qty"])) for ln in j.lines} == stored

        shown = _as(ports.http, tok["alice"], f"/approvals/{alloc_id}", method="GET")[1]
        assert shown["state"] == "approved" and shown["decided_by"] == "alice,bob"
        assert [v["actor"] for v in shown["votes"]] == ["alice", "bob"]
        actions = [json.loads(e["detail_json"]) for e in gw.node.db.events("user_action")]
        assert {(a["actor"], a["operation"]) for a in actions} >= {
            ("alice", "approval.approve"), ("bob", "approval.approve")}
        # The audit report of the allocation carries the hold and both votes.
        from gateway.audit.report import allocation_section

        db = gw.node.db
        section = allocation_section(db, db.load_allocation(alloc_id))
        records = section["approvals"]["records"]
        assert [r["kind"] for r in records] == ["held", "approval.approve", "approval.approve"]
        assert records[0]["detail"]["policies"] == [
            "FOUR-EYES-ALL v1: Every computed split is approved by two PMs"]
        assert records[0]["detail"]["decided_by"] == "alice,bob"
        assert [r["detail"]["actor"] for r in records[1:]] == ["alice", "bob"]


def test_a_rejected_block_stays_unallocated_until_an_override(tmp_path: Path) -> None:
    ports, cfg, tok = _setup(tmp_path)
    with running(tmp_path, ports, cfg, FillPlan(fills=2, interval_ms=10)) as (broker, gw, oms):
        oms.send_order(_order(2))
        alloc_id = _held(ports.http, tok["alice"])["alloc_id"]
        code, body = _as(ports.http, tok["alice"], f"/approvals/{alloc_id}/reject",
                         {"reason": ""})
        assert code == 422  # a rejection needs a reason
        code, body = _as(ports.http, tok["alice"], f"/approvals/{alloc_id}/reject",
                         {"reason": "SMA0002 is under review"})
        assert code == 200 and body["state"] == "rejected"
        exceptions = gw.node.db.exceptions(state="open")
        assert [e["kind"] for e in exceptions] == ["approval_rejected"]
        order_id = alloc_id.rsplit("-J", 1)[0]

        # A PM may not override; compliance may, with a split of its own (manual: the
        # policy does not hold it again).
        split = {"SMA0001": "12000", "SMA0003": "8000"}
        code, _ = _as(ports.http, tok["bob"], f"/orders/{order_id}/override",
                      {"lines": split, "reason": "PM instruction"})
        assert code == 403
        code, body = _as(ports.http, tok["carol"], f"/orders/{order_id}/override",
                         {"lines": {"NOPE": "1"}, "reason": "typo"})
        assert code == 422 and "not in the order's book" in body["detail"]
        code, body = _as(ports.http, tok["carol"], f"/orders/{order_id}/override",
                         {"lines": split, "reason": "PM instruction"})
        assert code == 200 and body["overrides"] == alloc_id, body
        assert wait_for(lambda: len(broker.allocations) == 1, 15)
        j = broker.allocations[0]
        assert j.alloc_id == body["alloc_id"] != alloc_id
        # The person's split is the decision's input; the restrictions still apply to it
        # (an issuer cap may clip an account), and the J carries what was decided.
        db = gw.node.db
        stored = {ln["account_id"]: Decimal(ln["qty"]) for ln in
                  db.load_allocation_lines(j.alloc_id)}
        assert {str(ln["account"]): Decimal(str(ln["qty"])) for ln in j.lines} == stored
        assert sum(stored.values()) == 20_000 and set(stored) <= set(split)
        decision = db.load_decision(db.load_allocation(j.alloc_id)["decision_id"])
        assert json.loads(decision["canonical_json"])["method"] == "manual"
        assert json.loads(decision["preallocations_json"])["lines"] == [
            ["SMA0001", "12000"], ["SMA0003", "8000"]]
        assert db.exceptions(state="open") == []


def test_a_restart_keeps_the_hold_and_its_votes_and_sends_once(tmp_path: Path,
                                                               database_url: str) -> None:
    ports, cfg, tok = _setup(tmp_path, database_url)
    with broker_sim(tmp_path, ports, FillPlan(fills=2, interval_ms=10)) as broker, \
            oms_sim(tmp_path, ports) as oms:
        with gateway_in_process(cfg, ports):
            assert oms.engine.wait_logged_on(30) and broker.engine.wait_logged_on(30)
            oms.send_order(_order(3))
            alloc_id = _held(ports.http, tok["alice"])["alloc_id"]
            assert _as(ports.http, tok["alice"], f"/approvals/{alloc_id}/approve")[0] == 200
        assert broker.allocations == []
        with gateway_in_process(cfg, ports):
            held = _held(ports.http, tok["bob"])
            assert held["alloc_id"] == alloc_id and [v["actor"] for v in held["votes"]] == [
                "alice"]
            time.sleep(1.0)  # recovery has run: still nothing sent
            assert broker.allocations == []
            assert _as(ports.http, tok["alice"], f"/approvals/{alloc_id}/approve")[0] == 403
            code, body = _as(ports.http, tok["bob"], f"/approvals/{alloc_id}/approve")
            assert code == 200 and body["state"] == "approved"
            assert wait_for(lambda: len(broker.allocations) == 1, 15)
        with gateway_in_process(cfg, ports):
            assert oms.engine.wait_logged_on(30) and broker.engine.wait_logged_on(30)
            time.sleep(1.0)
        assert len(broker.allocations) == 1 and broker.repeated_allocations == []


ESCALATING = """
approval_policies:
  - id: BIG-BLOCK
    version: "1"
    description: Blocks above 10,000 shares are approved by a PM within 30 minutes
    when: "decision.allocated_qty > 10000"
    approvers: {role: pm, count: 1}
    escalate: {after_minutes: 30, role: compliance}
"""


def test_a_deadline_escalates_on_a_frozen_clock_and_the_approvers_are_notified(
        tmp_path: Path, hook: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ports, _cfg, tok = _setup(tmp_path)
    (tmp_path / "rules" / "30-approvals.yaml").write_text(ESCALATING, encoding="utf-8")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    cfg = write_config(tmp_path, ports, rules=tmp_path / "rules", extra=f"""
[notifications]
webhook_secret_env = "{SECRET_ENV}"

[[notifications.routes]]
kinds = ["approval_pending"]
webhook_url = "{hook.url}"
""")
    # Frozen at 17:00 New York today: the J may not go out, and only the test moves time.
    start = datetime.now(NEW_YORK).replace(hour=17, minute=0, second=0, microsecond=0)
    clock = FakeClock(start.astimezone(UTC))
    with broker_sim(tmp_path, ports, FillPlan(fills=2, interval_ms=10)) as broker, \
            gateway_in_process(cfg, ports, clock) as gw, oms_sim(tmp_path, ports) as oms:
        assert oms.engine.wait_logged_on(30) and broker.engine.wait_logged_on(30)
        oms.send_order(_order(4))
        alloc_id = _held(ports.http, tok["alice"])["alloc_id"]
        assert wait_for(lambda: len(hook.requests) == 1, 15)
        first = json.loads(hook.requests[0].body)
        assert hook.requests[0].signature_ok and first["kind"] == "approval_pending"
        assert first["summary"]["alloc_id"] == alloc_id
        assert first["summary"]["approvers"] == ["pm"]

        # Compliance may not vote before the deadline...
        code, body = _as(ports.http, tok["carol"], f"/approvals/{alloc_id}/approve")
        assert code == 403 and "holds none of the roles" in body["detail"]
        clock.advance(timedelta(minutes=29))
        time.sleep(1.2)  # two ticks: nothing due yet
        assert gw.node.db.events("alert.approval_escalated") == []
        clock.advance(timedelta(minutes=2))
        assert wait_for(lambda: gw.node.db.events("alert.approval_escalated") != [], 10)
        assert wait_for(lambda: len(hook.requests) == 2, 15)
        second = json.loads(hook.requests[1].body)
        assert second["summary"]["escalated"] and second["summary"]["approvers"] == [
            "compliance"]
        # Past the allocation cut-off (19:00) it is listed, by name, once.
        clock.advance(timedelta(hours=2))
        assert wait_for(lambda: gw.node.db.events("alert.approvals_pending_at_cutoff"), 10)
        (cut,) = gw.node.db.events("alert.approvals_pending_at_cutoff")
        assert json.loads(cut["detail_json"])["allocations"] == [alloc_id]
        # ...and after it compliance may approve: the J goes out.
        code, body = _as(ports.http, tok["carol"], f"/approvals/{alloc_id}/approve")
        assert code == 200 and body["state"] == "approved"
        assert wait_for(lambda: len(broker.allocations) == 1, 15)
