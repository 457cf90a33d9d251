"""The approval gate: does a decision stop for a person before its J goes out?

The rulebook in force names the policies (engine/approval_policies.py); this module
gathers the facts they read about one decision, evaluates them and, when any holds,
returns the approval request that AllocationFlow stores with the allocation in one
transaction (state `pending_approval`, so a restart finds it held). A rulebook without
policies costs nothing here: no fact is gathered.

Facts that need history are cached by (version, trade date): whether a rulebook or
reference-data version was used before today, and a book's usual order size.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from engine.approval_policies import PolicyMatch, evaluate
from gateway.orders import Order
from gateway.persistence import approval_tables as at
from gateway.persistence import tables as t
from gateway.persistence.store import Database

# How many of the book's most recent orders make its usual size (their median).
USUAL_OVER = 50


def fill_rate_dev_bps(order: Order, decision: Any, intended: Mapping[str, Decimal]) -> int:
    """The largest gap, in basis points, between an allocated account's fill rate
    (its quantity over its intended quantity) and the block's (executed over ordered).
    Accounts without an intended quantity have no fill rate of their own."""
    if order.order_qty <= 0:
        return 0
    block = Decimal(decision.allocated_qty) / order.order_qty
    worst = Decimal(0)
    for line in decision.lines:
        want = intended.get(line.account_id)
        if want:
            worst = max(worst, abs(Decimal(line.qty) / want - block))
    return int(worst * 10_000)


class ApprovalGate:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._used_before: dict[tuple[str, str, str], bool] = {}
        self._usual: dict[tuple[str, str], int] = {}

    def check(self, order: Order, decision: Any, rulebook: Any, refdata: Any,
              now: datetime, *, overrides: str | None = None) -> dict[str, Any] | None:
        """The approval row to store with the allocation, or None when nothing holds it."""
        policies = getattr(rulebook, "approval_policies", ())
        if not policies:
            return None
        facts = self.facts(order, decision, refdata)
        matches = evaluate(policies, facts)
        if not matches:
            return None
        deadlines = [now + timedelta(minutes=m.policy.escalate_after_minutes)
                     for m in matches if m.policy.escalate_after_minutes]
        return {
            "alloc_id": None,  # set by the flow, which names the allocation
            "order_id": order.order_id, "decision_id": decision.decision_id,
            "state": "pending", "policies_json": json.dumps(_policies(matches)),
            "facts_json": json.dumps(facts, sort_keys=True),
            "barred": ",".join(sorted(self.barred(facts["order"]["trader"], rulebook.version))),
            "requested_at": now, "escalate_at": min(deadlines) if deadlines else None,
            "overrides": overrides,
        }

    def facts(self, order: Order, decision: Any, refdata: Any) -> dict[str, dict[str, Any]]:
        accounts = {a.account_id: a for a in refdata.accounts_for(order.book)}
        intended = {k: a.intended_qty for k, a in accounts.items() if a.intended_qty}
        statuses = [r.status for r in decision.results]
        usual = self.usual_qty(order)
        qty = int(order.order_qty)
        return {
            "decision": {
                "method": decision.method, "manual": decision.method == "manual",
                "preallocated": bool(order.preallocations),
                "accounts": len(decision.lines),
                "excluded": sum(1 for s in statuses if s in ("excluded", "dropped")),
                "capped": statuses.count("capped"),
                "allocated_qty": int(decision.allocated_qty),
                "notional": int(Decimal(decision.allocated_qty) * Decimal(decision.avg_px)),
                "max_fill_rate_dev_bps": fill_rate_dev_bps(order, decision, intended),
                "rulebook_version": decision.rulebook_version,
                "refdata_version": refdata.version,
            },
            "order": {"book": order.book, "symbol": order.symbol, "side": order.side,
                      "broker": order.broker, "qty": qty, "trader": self.trader(order)},
            "history": {
                "rulebook_used_before_today": self.used_before(
                    "rulebook_version", decision.rulebook_version, order.trade_date),
                "refdata_used_before_today": self.used_before(
                    "refdata_version", refdata.version, order.trade_date),
                "usual_qty": usual,
                "size_vs_usual_pct": qty * 100 // usual if usual else 0,
            },
        }

    def used_before(self, column: str, version: str, trade_date: str) -> bool:
        key = (column, version, trade_date)
        if key not in self._used_before:
            col = t.decisions.c[column]
            with self.db.engine.connect() as conn:
                # Decisions of earlier trade dates: their orders' trade_date is older.
                found = conn.execute(
                    select(t.decisions.c.decision_id).join(
                        t.orders, t.orders.c.order_id == t.decisions.c.order_id)
                    .where(col == version, t.orders.c.trade_date < trade_date).limit(1)
                ).first()
            self._used_before[key] = found is not None
        return self._used_before[key]

    def usual_qty(self, order: Order) -> int:
        key = (order.book, order.trade_date)
        if key not in self._usual:
            with self.db.engine.connect() as conn:
                sizes = [Decimal(q) for q in conn.execute(
                    select(t.orders.c.order_qty).where(
                        t.orders.c.book == order.book, t.orders.c.trade_date < order.trade_date)
                    .order_by(t.orders.c.created_at.desc()).limit(USUAL_OVER)).scalars()]
            self._usual[key] = int(statistics.median(sizes)) if sizes else 0
        return self._usual[key]

    def trader(self, order: Order) -> str:
        """Who sent the order: the D's SenderSubID (50), else the OMS's CompID."""
        for msg in self.db.received_with_ref(order.oms_session, "D", order.oms_cl_ord_id)[:1]:
            for field in bytes(msg["raw"]).split(b"\x01"):
                if field.startswith(b"50="):
                    return field[3:].decode("utf-8", "backslashreplace")
        return order.oms_session.rsplit("->", 1)[-1]

    def barred(self, trader: str, rulebook_version: str) -> set[str]:
        """Who may not approve: the order's trader and the rulebook version's author."""
        out = {trader}  # read once, with the facts: one wire-log lookup per held decision
        with self.db.engine.connect() as conn:
            author = conn.execute(
                select(t.rulebook_versions.c.actor)
                .where(t.rulebook_versions.c.version == rulebook_version)
                .order_by(t.rulebook_versions.c.id).limit(1)).scalar()
        if author and author.startswith("http:"):
            out.add(author.split(":", 1)[1])  # a person; "startup" and "file-watch" are not
        return {name for name in out if name}

    def count_pending(self) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(
                at.approvals).where(at.approvals.c.state == "pending")).scalar_one())


def _policies(matches: list[PolicyMatch]) -> list[dict[str, Any]]:
    return [m.policy.to_json() | ({"error": m.error} if m.error else {}) for m in matches]
