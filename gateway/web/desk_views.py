"""What the blotter, rulebook and users pages show, read from the record.

The blotter is the daemon's own /status (one page of today's orders with their latest J),
the pending approvals as GET /approvals shows them, and the open exceptions. The rulebook
page lists every activation of the rulebook with its author and change summary; the diff
of one activation against the one before is computed from the stored content_json
(pretty-printed, then difflib).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select

from gateway.approvals import records
from gateway.http_approvals import shown
from gateway.persistence import tables as t
from gateway.persistence.store import Database

BLOTTER_ROWS = 500
DIFF_CONTEXT = 3


def _qty(text: Any) -> str:
    """A quantity or price as the record keeps it, without trailing zeros."""
    try:
        value = Decimal(str(text))
    except (InvalidOperation, ValueError):
        return str(text or "")
    return f"{value.normalize():f}" if value == value.to_integral() else str(value)


def blotter(db: Database, status: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Today's blocks, the approvals waiting for a person, and the open exceptions."""
    now = status(limit=BLOTTER_ROWS)
    pending = [shown(db, r) for r in records.listing(db, state="pending")]
    waiting = {p["alloc_id"]: p for p in pending}
    blocks = []
    for o in now.get("orders", []):
        blocks.append({
            "order_id": o["order_id"], "cl_ord_id": o.get("cl_ord_id"), "book": o["book"],
            "symbol": o["symbol"], "side": o["side"], "status": o["status"],
            "cum_qty": _qty(o.get("cum_qty")), "order_qty": _qty(o.get("order_qty")),
            "avg_px": _qty(o.get("avg_px")), "alloc_id": o.get("alloc_id"),
            "alloc_status": o.get("alloc_status"),
            "held": o.get("alloc_id") in waiting})
    exceptions = db.exceptions(state="open")
    return {"trade_date": now.get("trade_date"), "gateway": now.get("gateway"),
            "now": now.get("now"), "rulebook_version": now.get("rulebook_version"),
            "sessions": now.get("sessions", []), "allocations": now.get("allocations", {}),
            "orders_total": now.get("orders_total", len(blocks)), "blocks": blocks,
            "pending": pending, "exceptions": exceptions}


def rulebook_versions(db: Database) -> list[dict[str, Any]]:
    """Every activation of the rulebook, newest first, without the texts."""
    c = t.rulebook_versions.c
    query = select(c.id, c.version, c.reactivated, c.loaded_at, c.actor, c.source,
                   c.diff_summary).order_by(c.id.desc())
    with db.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for i, r in enumerate(rows):
        r["has_previous"] = i + 1 < len(rows)
    return rows


def pretty(content_json: str) -> list[str]:
    """A rulebook's stored content, one key per line, keys sorted."""
    try:
        return json.dumps(json.loads(content_json), indent=2, sort_keys=True).splitlines()
    except ValueError:
        return content_json.splitlines()


def rulebook_diff(db: Database, row_id: int) -> dict[str, Any] | None:
    """The activation `row_id` against the one before it: a unified diff of the content."""
    tbl = t.rulebook_versions
    with db.engine.connect() as conn:
        row = conn.execute(select(tbl).where(tbl.c.id == row_id)).mappings().first()
        if row is None:
            return None
        before = conn.execute(select(tbl).where(tbl.c.id < row_id)
                              .order_by(tbl.c.id.desc()).limit(1)).mappings().first()
    new = pretty(row["content_json"])
    old = pretty(before["content_json"]) if before is not None else []
    lines = list(difflib.unified_diff(
        old, new, fromfile=f"version {before['version'][:12]}" if before else "(nothing)",
        tofile=f"version {row['version'][:12]}", n=DIFF_CONTEXT, lineterm=""))
    kinds = [_kind(line) for line in lines]
    return {"row": dict(row), "before": dict(before) if before else None,
            "lines": list(zip(kinds, lines, strict=True)),
            "added": sum(1 for k in kinds if k == "add"),
            "removed": sum(1 for k in kinds if k == "del")}


def _kind(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return "same"
