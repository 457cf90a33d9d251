"""`fixalloc demo --scenario approval`: a block a four-eyes policy holds, approved over
HTTP by two PMs, then its J going out exactly as decided.

Everything is real and on 127.0.0.1: the daemon (`fixalloc run`), the broker and OMS
simulators over FIX, two users with API tokens, and the HTTP API the page and scripts use.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.demo import CONFIG_DIR, DemoFailed, demo_config
from gateway.demo_stack import api_call, demo_stack, demo_users
from gateway.fix.sim.broker import FillPlan
from gateway.fix.sim.common import wait_for
from gateway.fix.sim.oms import BlotterOrder
from gateway.ports import free_port

POLICY = """# Added by `fixalloc demo --scenario approval`.
approval_policies:
  - id: FOUR-EYES-LARGE
    version: "1"
    description: Blocks above USD 1m notional are approved by two PMs
    when: decision.notional > 1000000
    approvers: {role: pm, count: 2}
    escalate: {after_minutes: 30, role: compliance}
"""
PEOPLE = (("alice", "pm"), ("bob", "pm"))


def run_approval(*, state: Path, say: Callable[[str], None], timeout: float = 60.0
                 ) -> dict[str, Any]:
    state.mkdir(parents=True, exist_ok=True)
    config_dir = state / "config"
    shutil.copytree(CONFIG_DIR, config_dir, dirs_exist_ok=True)
    (config_dir / "rules" / "30-approvals.yaml").write_text(POLICY, encoding="utf-8")
    oms_port, broker_port, http_port = free_port(), free_port(), free_port()
    cfg = demo_config(state, oms_port=oms_port, broker_port=broker_port, http_port=http_port,
                      config_dir=config_dir)
    say(f"fixalloc demo --scenario approval: state in {state}")
    say(f"  policy {config_dir / 'rules' / '30-approvals.yaml'}: FOUR-EYES-LARGE "
        "(notional above USD 1m: two PMs)")
    tokens = demo_users(f"sqlite:///{state / 'gateway' / 'fixalloc.db'}", PEOPLE)
    say("  users alice and bob (role pm), each with an API token")
    out: dict[str, Any] = {"state_dir": str(state), "http_port": http_port}
    with demo_stack(state, cfg, broker_port=broker_port, oms_port=oms_port,
                    http_port=http_port, plan=FillPlan(fills=5, interval_ms=20)) as stack:
        broker, oms, daemon = stack.broker, stack.oms, stack.daemon
        order = BlotterOrder(cl_ord_id=f"APPROVAL-{int(time.time())}", book="SMA-CORE",
                             symbol="AAPL", side="buy", qty=Decimal(20_000), ord_type="2",
                             price=Decimal("190.50"))
        say("  sending block: buy 20,000 AAPL limit 190.50 for book SMA-CORE")
        oms.send_order(order)
        held: dict[str, Any] = {}

        def is_held() -> bool:
            code, body = api_call(http_port, "/approvals?state=pending", tokens["alice"])
            if code == 200 and body["approvals"]:
                held.update(body["approvals"][0])
            return bool(held)

        if not wait_for(is_held, timeout):
            raise DemoFailed("the block was not held for approval")
        alloc_id = held["alloc_id"]
        notional = held["facts"]["decision"]["notional"]
        say(f"  held: {alloc_id}, notional USD {notional:,}, waiting for "
            f"{'; '.join(held['waiting_for'])}; the broker has {len(broker.allocations)} J")
        out.update(alloc_id=alloc_id, held_j_at_broker=len(broker.allocations))
        votes = []
        for name, _role in PEOPLE:
            code, body = api_call(http_port, f"/approvals/{alloc_id}/approve", tokens[name],
                                  {"reason": "split checked against the model"})
            if code != 200:
                raise DemoFailed(f"{name}'s approval was refused ({code}): {body}")
            votes.append({"actor": name, "state": body["state"]})
            say(f"  POST /approvals/{alloc_id}/approve as {name}: {body['state']}"
                + (f" (waiting for {'; '.join(body['waiting_for'])})"
                   if body["waiting_for"] else ""))
        approved_at = time.monotonic()
        if not wait_for(lambda: len(broker.allocations) == 1
                        and oms.allocation_for(order.cl_ord_id) is not None, timeout):
            raise DemoFailed("no J after the approvals")
        j = broker.allocations[0]
        say(f"  J {j.alloc_id} at the broker {time.monotonic() - approved_at:.2f} s after the "
            f"second approval: {len(j.lines)} accounts, {j.quantity:,} shares @ {j.avg_px}")
        code, shown = api_call(http_port, f"/approvals/{alloc_id}", tokens["bob"])
        out.update(votes=votes, j_alloc_id=j.alloc_id, j_lines=len(j.lines),
                   j_quantity=str(j.quantity), approval=shown if code == 200 else None)
        out["ok"] = (out["held_j_at_broker"] == 0 and j.alloc_id == alloc_id
                     and votes[-1]["state"] == "approved" and shown["state"] == "approved")
        say(f"  page: http://127.0.0.1:{http_port}/ui/allocations/{alloc_id} "
            "(while the daemon runs)")
    out["daemon_exit"] = daemon.returncode
    out["ok"] = bool(out.get("ok")) and daemon.returncode == 0
    return out
