"""The sweep's recordkeeping check (SEC Rule 204-2): every J, P, AK and AU of the trade
date has its raw message stored with a timestamp in the wire log."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from gateway.persistence.store import Database
from gateway.posttrade.sweep_read import _Day, _Problem, _stored_messages


def check_records(db: Database, day: _Day) -> tuple[dict[str, Any], list[_Problem]]:
    """The messages expected and stored per type, what is missing, and a problem per
    allocation that misses any."""
    problems: list[_Problem] = []
    expected: list[tuple[str, str, str, int, str | None, str | None]] = []
    for allocs in day.allocations.values():
        for alloc in allocs:
            aid = alloc["alloc_id"]
            sends = bool(alloc.get("sent_at")) + bool(alloc.get("oms_sent_at"))
            if sends:
                expected.append(("J", "out", aid, sends, aid, None))
            if alloc.get("received_at") or alloc.get("acked_at"):
                expected.append(("P", "in", aid, 1, aid, None))
    for confirm in day.all_confirmations:
        ids = (confirm["alloc_id"], confirm["individual_alloc_id"])
        expected.append(("AK", "in", confirm["confirm_id"], 1, *ids))
        if confirm.get("affirm_status"):
            expected.append(("AU", "out", confirm["confirm_id"], 1, *ids))
    stored = _stored_messages(db, (e[2] for e in expected))
    counts: dict[str, dict[str, int]] = {mt: {"expected": 0, "stored": 0}
                                         for mt in ("J", "P", "AK", "AU")}
    missing: list[dict[str, Any]] = []
    for mt, direction, ref, sessions, aid, line_id in expected:
        counts[mt]["expected"] += 1
        if len(stored.get((mt, direction, ref), ())) >= sessions:
            counts[mt]["stored"] += 1
        else:
            missing.append({"msg_type": mt, "direction": direction, "ref_id": ref,
                            "alloc_id": aid, "individual_alloc_id": line_id})
    by_alloc: dict[str, list[str]] = defaultdict(list)
    for m in missing:
        by_alloc[m["alloc_id"] or ""].append(f"{m['msg_type']} {m['direction']} "
                                             f"({m['ref_id']})")
    orders = {a["alloc_id"]: a["order_id"] for rows in day.allocations.values()
              for a in rows}
    for aid, what in sorted(by_alloc.items()):
        problems.append(_Problem(
            "record_missing", f"no stored raw message with a timestamp for: "
            f"{', '.join(what)}", "Recover the message from the session's FIX store or "
            "the counterparty and file it (Rule 204-2 recordkeeping)",
            order_id=orders.get(aid), alloc_id=aid or None, escalate=True))
    return {"ok": not missing, "messages": counts, "missing": missing}, problems
