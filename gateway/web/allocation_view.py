"""What the allocation page shows: the block's header, why it is held, and every account.

Everything is read from the record (the HTTP pool's database): the allocation and its
lines, the stored decision, the order, the approval with its votes (as GET /approvals/{id}
shows it) and the reference-data version the decision was made with, for each account's
intended quantity. The accounts table is sent to the browser as one JSON array of rows
(rendered and sorted there); a decision never changes, so the rows of an allocation are
kept in a small cache and a second look costs nothing.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.approvals import records
from gateway.http_approvals import shown
from gateway.persistence.store import Database
from gateway.web.figures import fill_rate, percent, pro_rata_diff, total_intended

# Row layout of the JSON table (allocation.js reads the same positions).
COLUMNS = ("account", "intended", "allocated", "fill_rate_pct", "vs_pro_rata", "status",
           "rules")
# The allocation's own states after which nothing more happens to it.
FINAL_STATES = frozenset({"accepted", "block_rejected", "session_rejected", "replaced",
                          "cancelled", "approval_rejected", "replace_refused"})
_WITH_REASONS = frozenset({"excluded", "capped", "dropped", "not_participating"})


def _dec(text: Any) -> Decimal | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        return Decimal(str(text))
    except InvalidOperation:
        return None


def intended_quantities(db: Database, refdata_version: str | None, book: str
                        ) -> dict[str, Decimal | None] | None:
    """Account id -> intended quantity in `book`, from the accounts file of the stored
    reference-data version the decision was made with; None when it is not stored."""
    if not refdata_version:
        return None
    row = db.version_row("refdata_versions", refdata_version)
    if row is None:
        return None
    for text in json.loads(row["content_json"]).values():
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        fields = reader.fieldnames or []
        if "intended_qty" not in fields or "book" not in fields:
            continue
        return {r["account_id"].strip(): _dec(r.get("intended_qty")) for r in reader
                if (r.get("book") or "").strip() == book}
    return None


def account_rows(decision: Mapping[str, Any], lines: list[dict[str, Any]],
                 intended: Mapping[str, Decimal | None]) -> tuple[list[list[Any]],
                                                                  dict[str, Any]]:
    """(one row per account of the decision in COLUMNS order, the totals)."""
    executed = Decimal(decision["executed_qty"])
    on_line = {ln["account_id"]: Decimal(ln["qty"]) for ln in lines}
    results = decision["results"]
    total = total_intended(intended.get(r["account_id"]) for r in results)
    rows: list[list[Any]] = []
    sum_intended, sum_allocated = Decimal(0), Decimal(0)
    statuses: dict[str, int] = {}
    for r in results:
        aid = r["account_id"]
        want = intended.get(aid)
        got = on_line.get(aid, Decimal(r["qty"]))
        rate = fill_rate(got, want)
        diff = pro_rata_diff(got, executed, want, total)
        rules = ([[x["rule_id"], x["rule_version"], x["text"]] for x in r["reasons"]]
                 if r["status"] in _WITH_REASONS else [])
        rows.append([aid, _s(want), _s(got), _s(percent(rate)), _s(diff), r["status"],
                     rules])
        sum_intended += want or 0
        sum_allocated += got
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    totals = {"accounts": len(rows), "intended": str(sum_intended),
              "allocated": str(sum_allocated), "executed": str(executed),
              "fill_rate_pct": _s(percent(fill_rate(sum_allocated, sum_intended))),
              "statuses": dict(sorted(statuses.items()))}
    return rows, totals


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def policy_reasons(policy: Mapping[str, Any], facts: Mapping[str, Any]) -> list[list[str]]:
    """The facts a policy's condition reads, with their values: why it held the block."""
    when = str(policy.get("when") or "")
    out = []
    for group, values in facts.items():
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            if f"{group}.{key}" in when:
                out.append([f"{group}.{key}", json.dumps(value)])
    return out


class AllocationPages:
    """Reads one allocation for the page; keeps the last few accounts tables."""

    CACHED = 16

    def __init__(self, db: Database) -> None:
        self.db = db
        self._tables: OrderedDict[str, tuple[list[list[Any]], dict[str, Any], str]] = \
            OrderedDict()
        self._lock = threading.Lock()

    def state(self, alloc_id: str) -> dict[str, Any] | None:
        """The allocation's and its approval's state (what the page polls)."""
        alloc = self.db.load_allocation(alloc_id)
        if alloc is None:
            return None
        approval = records.load(self.db, alloc_id)
        held = shown(self.db, approval) if approval else None
        return {"alloc_status": alloc["status"], "final": alloc["status"] in FINAL_STATES,
                "approval_state": held["state"] if held else None,
                "waiting_for": held["waiting_for"] if held else [],
                "votes": len(held["votes"]) if held else 0}

    def page(self, alloc_id: str) -> dict[str, Any] | None:
        alloc = self.db.load_allocation(alloc_id)
        if alloc is None:
            return None
        row = self.db.load_decision(alloc["decision_id"])
        decision = json.loads(row["canonical_json"]) if row and row.get("canonical_json") \
            else None
        order = self.db.load_order(alloc["order_id"]) or {}
        approval = records.load(self.db, alloc_id)
        held = shown(self.db, approval) if approval else None
        if held is not None:
            for p in held["policies"]:
                p["why"] = policy_reasons(p, held["facts"])
        rows: list[list[Any]] = []
        totals: dict[str, Any] = {}
        source = "the decision is not stored"
        if decision is not None and row is not None:
            rows, totals, source = self._table(alloc, decision, row, order)
        return {"alloc": alloc, "order": order, "decision": decision,
                "decision_row": row, "approval": held, "rows": rows, "totals": totals,
                "intended_source": source, "final": alloc["status"] in FINAL_STATES}

    def _table(self, alloc: Mapping[str, Any], decision: Mapping[str, Any],
               row: Mapping[str, Any], order: Mapping[str, Any]
               ) -> tuple[list[list[Any]], dict[str, Any], str]:
        key = f"{alloc['alloc_id']}|{decision['decision_id']}"
        with self._lock:
            if key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key]
        version = row.get("refdata_version")
        intended = intended_quantities(self.db, version, str(order.get("book", "")))
        source = (f"reference data version {str(version)[:12]}" if intended is not None
                  else "not known: the reference data of the decision is not stored")
        rows, totals = account_rows(decision, self.db.load_allocation_lines(alloc["alloc_id"]),
                                    intended or {})
        entry = (rows, totals, source)
        with self._lock:
            self._tables[key] = entry
            while len(self._tables) > self.CACHED:
                self._tables.popitem(last=False)
        return entry
