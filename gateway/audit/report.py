"""The audit report's content, read from the record: one plain, JSON-ready structure.

What a reviewer or auditor asks of an allocation months later (DESIGN.md, "who uses it"):
the order, the method and the rulebook/refdata versions, every account evaluated and why
each omitted or reduced one got what it got, the fills that were split, the time of every
FIX message about it, approvals, and where each line's affirmation stands. The first page
is the record's own integrity check (gateway/audit/chain.py), so a report printed from a
tampered database says so before anything else.

Everything here only reads. Quantities are summed as Decimal and kept as the decimal
strings the record holds; times are ISO 8601 UTC. The renderers (report_render.py) format
this structure and add nothing to it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, select

from gateway.persistence import tables as t
from gateway.persistence.store import Database


class ReportError(Exception):
    """The scope names nothing in the record (unknown AllocID, no allocation on a date)."""


# Application messages that can be about an order or an allocation; admin messages (A, 0,
# 5, ...) carry no ref_id. Listing them lets the query use ix_fix_messages_ref whole.
MSG_NAMES = {
    "D": "NewOrderSingle", "F": "OrderCancelRequest", "G": "OrderCancelReplaceRequest",
    "9": "OrderCancelReject", "8": "ExecutionReport", "Q": "DontKnowTrade",
    "J": "AllocationInstruction", "P": "AllocationInstructionAck", "AS": "AllocationReport",
    "AT": "AllocationReportAck", "AK": "Confirmation", "AU": "ConfirmationAck",
    "BH": "ConfirmationRequest", "j": "BusinessMessageReject",
}
TRANS_TYPES = {"0": "New", "1": "Replace", "2": "Cancel"}
# ExecTypes that move shares: trade (F; 1/2 in FIX 4.2), correction (G), bust (H).
FILL_KINDS = {"F": "fill", "1": "fill", "2": "fill", "G": "correction", "H": "bust"}
NO_APPROVALS = "no approvals recorded (no approval policy held this allocation)"
_CHUNK = 500  # ids per IN list: well under every backend's bound-parameter limit


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    return str(value)


# -- scope ------------------------------------------------------------------------------------

def allocations_in_scope(db: Database, *, alloc_id: str | None = None,
                         day: date | None = None, start: date | None = None,
                         end: date | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(scope description, the allocation rows it covers, oldest first)."""
    if alloc_id is not None:
        row = db.load_allocation(alloc_id)
        if row is None:
            raise ReportError(f"no allocation with AllocID {alloc_id!r} in the record")
        return {"kind": "allocation", "alloc_id": alloc_id,
                "text": f"allocation {alloc_id}"}, [row]
    if day is not None:
        rows = db.allocations_on(day.isoformat())
        scope = {"kind": "date", "date": day.isoformat(),
                 "text": f"allocations with trade date {day.isoformat()}"}
    else:
        assert start is not None and end is not None
        a = t.allocations.c
        query = (select(t.allocations)
                 .where(and_(a.trade_date >= start.isoformat(), a.trade_date <= end.isoformat()))
                 .order_by(a.trade_date, a.created_at, a.alloc_id))
        with db.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        scope = {"kind": "range", "from": start.isoformat(), "to": end.isoformat(),
                 "text": f"allocations with trade dates {start.isoformat()} to "
                         f"{end.isoformat()}"}
    if not rows:
        raise ReportError(f"no allocation in the record for {scope['text']}")
    return scope, rows


# -- the record's own check -------------------------------------------------------------------

def verification(db: Database) -> dict[str, Any]:
    """chain_verify.verify over the whole record, and its latest checkpoint."""
    from gateway.audit.chain_verify import verify

    result = verify(db)
    brk = result.first_break
    return {
        "ok": bool(result.ok), "summary": result.summary(), "breaks": result.breaks,
        "entries": result.entries, "rows": result.rows,
        "head_seq": result.head_seq, "head_hash": result.head_hash,
        "first_break": None if brk is None else {
            "seq": brk.seq, "table": brk.table, "key": brk.key, "problem": brk.problem},
        "checkpoint": None if result.checkpoint is None else {
            k: _iso(v) if k == "written_at" else v for k, v in dict(result.checkpoint).items()},
    }


# -- one allocation ---------------------------------------------------------------------------

def _accounts(results: list[dict[str, Any]], lines: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = Counter(r["status"] for r in results)
    return {
        "evaluated": len(results),
        "allocated": len(lines),
        "excluded": statuses.get("excluded", 0),
        "capped": statuses.get("capped", 0),
        "dropped": statuses.get("dropped", 0),
        "not_participating": statuses.get("not_participating", 0),
        "by_status": dict(sorted(statuses.items())),
    }


def _rules(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule a reason cites, with how many accounts and which outcomes it explains."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in results:
        for reason in r.get("reasons") or ():
            key = (reason["rule_id"], str(reason["rule_version"]), reason["code"])
            entry = seen.setdefault(key, {"rule_id": key[0], "rule_version": key[1],
                                          "code": key[2], "accounts": 0, "statuses": set()})
            entry["accounts"] += 1
            entry["statuses"].add(r["status"])
    out = sorted(seen.values(), key=lambda e: (-e["accounts"], e["rule_id"], e["code"]))
    for entry in out:
        entry["statuses"] = sorted(entry["statuses"])
    return out


def _explanations(db: Database, alloc_id: str) -> dict[str, Any]:
    """explain.py's account of the decision: its narrative (method, rounding, whether the
    stored inputs reproduce it) and one sentence per account not allocated in full, with
    the figures the decision itself does not keep (its share before a cap clipped it)."""
    from gateway.audit.explain import ExplainError, explain_allocation
    from gateway.audit.explain_text import brief, header

    try:
        found = explain_allocation(db, alloc_id)
    except ExplainError as exc:
        return {"available": False, "text": f"no explanation: {exc}", "by_account": {}}
    by_account = {}
    for a in found.accounts:
        sentence = brief(found, a)
        # brief() opens with "<account> <status>, <qty> shares: ", which the table's own
        # columns already show.
        if sentence.startswith(f"{a.account_id} {a.status}, ") and ": " in sentence:
            sentence = sentence.split(": ", 1)[1]
        for r in a.reasons:  # ... and the rules it cites, which the rule column shows
            sentence = sentence.replace(f"{r['rule_id']} (version {r['rule_version']}): ", "")
        by_account[a.account_id] = sentence
    return {"available": True, "text": " ".join(header(found)), "by_account": by_account}


def _rationale(results: list[dict[str, Any]], explained: dict[str, str]) -> list[dict[str, Any]]:
    """Every account that got less than the method alone would give it, and why."""
    out = []
    for r in results:
        if r["status"] == "allocated":
            continue
        reasons = r.get("reasons") or []
        out.append({
            "account_id": r["account_id"], "status": r["status"], "qty": str(r["qty"]),
            "rules": [f"{x['rule_id']} (version {x['rule_version']})" for x in reasons],
            "codes": [x["code"] for x in reasons],
            "reason": " ".join(x["text"] for x in reasons) or r.get("rounding") or "",
            "rounding": r.get("rounding") or "",
            "explanation": explained.get(r["account_id"], ""),
        })
    return out


def _fills(reports: list[dict[str, Any]]) -> dict[str, Any]:
    fills, total = [], Decimal(0)
    for rep in reports:
        kind = FILL_KINDS.get(rep["exec_type"])
        if kind is None:
            continue
        refused = rep.get("dk_reason")
        fills.append({
            "exec_id": rep["exec_id"], "kind": kind, "qty": rep["last_qty"],
            "px": rep["last_px"], "transact_time": rep.get("transact_time"),
            "received_at": _iso(rep["received_at"]), "refers_to": rep.get("exec_ref_id"),
            "refused": refused})
        if kind == "fill" and not refused:
            total += Decimal(rep["last_qty"])
    # The total counts trades we kept; busts and corrections are listed beside them.
    return {"fills": fills, "count": sum(1 for f in fills if f["kind"] == "fill"),
            "fill_qty_total": str(total)}


def _wire_refs(db: Database, order: dict[str, Any], alloc_id: str,
               about: dict[str, str]) -> list[dict[str, Any]]:
    """Every application message whose ref_id names this order or this allocation.

    ref_id is the ClOrdID for D/F/G (the OMS's on the way in, ours on the way out), the
    ExecID for an 8 (the broker's in, ours - `<order_id>-E<n>` - out to the OMS), the
    AllocID for J/P/AS/BH and the ConfirmID for AK/AU. `about`: ExecIDs and ConfirmIDs
    to look for, each with what its messages are about (the fill, the account).
    """
    m = t.fix_messages.c
    cols = (m.id, m.session_id, m.direction, m.msg_type, m.seq_num, m.poss_dup, m.ref_id,
            m.recorded_at)
    refs = sorted({order["order_id"], alloc_id, *about})
    with db.engine.connect() as conn:
        sessions = [s for (s,) in conn.execute(select(m.session_id).distinct())]
        rows: list[Any] = []
        for part in (refs[i:i + _CHUNK] for i in range(0, len(refs), _CHUNK)):
            rows += conn.execute(select(*cols).where(and_(
                m.session_id.in_(sessions), m.direction.in_(("in", "out")),
                m.msg_type.in_(tuple(MSG_NAMES)), m.ref_id.in_(part)))).mappings().all()
        # The OMS may reuse a ClOrdID on another trade date (FIX asks uniqueness per day):
        # only its messages near this order's creation are about this order.
        near = order["created_at"]
        rows += conn.execute(select(*cols).where(and_(
            m.session_id == order["oms_session"], m.direction == "in",
            m.msg_type.in_(("D", "F", "G")), m.ref_id == order["oms_cl_ord_id"],
            m.recorded_at >= near - timedelta(days=1),
            m.recorded_at <= near + timedelta(days=1)))).mappings().all()
        # Our ExecIDs to the OMS are `<order_id>-E<n>`: a key range on the same index.
        rows += conn.execute(select(*cols).where(and_(
            m.session_id == order["oms_session"], m.direction == "out", m.msg_type == "8",
            m.ref_id >= order["order_id"] + "-E", m.ref_id < order["order_id"] + "-F"))
        ).mappings().all()
    unique = {r["id"]: r for r in rows}
    return [{"recorded_at": _iso(r["recorded_at"]), "direction": r["direction"],
             "session_id": r["session_id"], "msg_type": r["msg_type"],
             "name": MSG_NAMES.get(r["msg_type"], r["msg_type"]), "seq_num": r["seq_num"],
             "poss_dup": bool(r["poss_dup"]), "ref_id": r["ref_id"],
             "about": about.get(r["ref_id"], "") if r["direction"] == "in"
             or r["msg_type"] != "8" else ""}
            for _id, r in sorted(unique.items(), key=lambda kv: (kv[1]["recorded_at"], kv[0]))]


def _affirmation(lines: list[dict[str, Any]],
                 confirmations: list[dict[str, Any]]) -> dict[str, Any]:
    states = Counter(str(x.get("ticket_state") or "none") for x in lines)
    pending = [{"individual_alloc_id": x["individual_alloc_id"], "account_id": x["account_id"],
                "qty": x["qty"], "ticket_state": x.get("ticket_state"),
                "ak_received_at": _iso(x.get("ak_received_at"))}
               for x in lines if x.get("ticket_state") != "affirmed"]
    disputed = [{"confirm_id": c["confirm_id"], "account_id": c["account_id"],
                 "outcome": c["outcome"], "rej_reason": c.get("rej_reason"),
                 "mismatches": json.loads(c["mismatches_json"]) if c.get("mismatches_json")
                 else None, "received_at": _iso(c["received_at"])}
                for c in confirmations if c["outcome"] != "affirmed"]
    return {"lines": len(lines), "affirmed": states.get("affirmed", 0),
            "by_state": dict(sorted(states.items())), "not_affirmed": pending,
            "confirmations": len(confirmations), "confirmations_not_affirmed": disputed}


def _approvals(db: Database, events: list[dict[str, Any]], alloc_id: str) -> dict[str, Any]:
    """The hold (which policies, on which facts, decided how) and every vote or override
    (who, when, why), from the approval gate's rows and its `approval.*` audit events."""
    from gateway.approvals import records

    found = []
    held = records.load(db, alloc_id)
    if held is not None:
        found.append({"at": _iso(held["requested_at"]), "kind": "held", "detail": {
            "policies": [f"{p['id']} v{p['version']}: {p['description']}"
                         for p in json.loads(held["policies_json"])],
            "state": held["state"], "decided_by": held["decided_by"],
            "decided_at": _iso(held["decided_at"]), "reason": held["reason"],
            "overrides": held["overrides"]}})
    found += [{"at": _iso(e["recorded_at"]), "kind": e["kind"],
               "detail": json.loads(e["detail_json"] or "{}")}
              for e in events if e["kind"].startswith("approval")
              and e.get("alloc_id") in (None, alloc_id)]
    return {"records": found, "note": "" if found else NO_APPROVALS}


def allocation_section(db: Database, alloc: dict[str, Any]) -> dict[str, Any]:
    alloc_id = alloc["alloc_id"]
    order = db.load_order(alloc["order_id"]) or {}
    decision_row = db.load_decision(alloc["decision_id"]) or {}
    doc = json.loads(decision_row.get("canonical_json") or "{}")
    results: list[dict[str, Any]] = doc.get("results") or []
    lines = db.load_allocation_lines(alloc_id)
    reports = db.load_reports(alloc["order_id"])
    confirmations = db.confirmations(alloc_id)
    events = db.events(order_id=alloc["order_id"])
    explained = _explanations(db, alloc_id)
    by_account = {r["account_id"]: r for r in results}
    line_rows = []
    for x in lines:
        result = by_account.get(x["account_id"], {})
        line_rows.append({
            "individual_alloc_id": x["individual_alloc_id"], "account_id": x["account_id"],
            "qty": x["qty"], "avg_px": x["avg_px"], "status": result.get("status", ""),
            "rules": [f"{r['rule_id']} (version {r['rule_version']})"
                      for r in result.get("reasons") or ()],
            "reason": " ".join(r["text"] for r in result.get("reasons") or ()),
            "rounding": result.get("rounding", ""), "ticket_state": x.get("ticket_state"),
            "confirm_id": x.get("confirm_id"), "ak_received_at": _iso(x.get("ak_received_at")),
            "affirmed_at": _iso(x.get("affirmed_at"))})
    params = doc.get("method_params") or {}
    fills = _fills(reports)
    about = {f["exec_id"]: f"{f['kind']} {f['qty']} @ {f['px']}" for f in fills["fills"]}
    about |= {c["confirm_id"]: f"account {c['account_id']}" for c in confirmations}
    return {
        "alloc_id": alloc_id,
        "allocation": {
            "trans_type": TRANS_TYPES.get(alloc["alloc_trans_type"], alloc["alloc_trans_type"]),
            "ref_alloc_id": alloc.get("ref_alloc_id"), "why": alloc.get("reason"),
            "status": alloc["status"], "ack_status": alloc.get("ack_status"),
            "ack_text": alloc.get("ack_text"), "quantity": alloc["quantity"],
            "avg_px": alloc["avg_px"], "trade_date": alloc["trade_date"],
            "settl_date": alloc["settl_date"], "created_at": _iso(alloc["created_at"]),
            "sent_at": _iso(alloc.get("sent_at")), "acked_at": _iso(alloc.get("acked_at")),
            "oms_status": alloc.get("oms_status"), "fragments": alloc.get("fragments")},
        "order": {
            "order_id": alloc["order_id"], "cl_ord_id": order.get("oms_cl_ord_id"),
            "oms_session": order.get("oms_session"), "symbol": order.get("symbol"),
            "side": order.get("side"), "qty": order.get("order_qty"),
            "ord_type": order.get("ord_type"), "price": order.get("price"),
            "book": order.get("book"), "broker": order.get("broker", alloc["broker"]),
            "status": order.get("status"), "cum_qty": order.get("cum_qty"),
            "avg_px": order.get("avg_px"), "created_at": _iso(order.get("created_at"))},
        "decision": {
            "decision_id": alloc["decision_id"], "method": doc.get("method"),
            "scheme": params.get("scheme"), "method_params": params,
            "rulebook_version": decision_row.get("rulebook_version"),
            "refdata_version": decision_row.get("refdata_version"),
            "engine_version": decision_row.get("engine_version"),
            "inputs_hash": decision_row.get("inputs_hash"),
            "config_hash": decision_row.get("config_hash"),
            "decided_at": _iso(decision_row.get("decided_at")),
            "executed_qty": doc.get("executed_qty"), "allocated_qty": doc.get("allocated_qty"),
            "unallocated_qty": doc.get("unallocated_qty"),
            "unallocated_reason": doc.get("unallocated_reason") or ""},
        "rules_applied": _rules(results),
        "accounts": _accounts(results, lines),
        "lines_qty_total": str(sum((Decimal(x["qty"]) for x in lines), Decimal(0))),
        "fills": fills,
        "rationale": _rationale(results, explained["by_account"]),
        "explanation": {"available": explained["available"], "text": explained["text"]},
        "messages": _wire_refs(db, order or {**alloc, "oms_session": "", "oms_cl_ord_id": ""},
                               alloc_id, about),
        "approvals": _approvals(db, events, alloc_id),
        "affirmation": _affirmation(lines, confirmations),
        "lines": line_rows,
        "exceptions": [{"kind": e["kind"], "state": e["state"], "reason": e["reason"],
                        "opened_at": _iso(e["opened_at"]),
                        "resolved_at": _iso(e.get("resolved_at")),
                        "resolved_by": e.get("resolved_by"), "resolution": e.get("resolution")}
                       for e in db.exceptions(alloc_id=alloc_id)],
        "events": [{"at": _iso(e["recorded_at"]), "kind": e["kind"], "severity": e["severity"]}
                   for e in events if e.get("alloc_id") in (None, alloc_id)],
    }


# -- the whole report -------------------------------------------------------------------------

def fairness(db: Database, start: date, end: date) -> dict[str, Any]:
    """Fill-rate dispersion per trade date over the range (gateway/audit/fairness.py) and
    the accounts or groups its tests flag; the renderers draw the chart from `spread`."""
    from gateway.audit.fairness import fairness_report

    try:
        found = fairness_report(db, start, end)
    except (ValueError, KeyError) as exc:
        # A block fairness cannot assess must not cost the auditor the allocation log.
        return {"error": f"the fairness analysis failed: {exc}", "blocks": 0,
                "blocks_assessed": 0, "flagged": [], "method": "", "spread": []}
    return {"error": "", "blocks": found.blocks, "blocks_assessed": found.blocks_assessed,
            "flagged": [f.key for f in found.flagged()], "method": found.method,
            "spread": [asdict(x) for x in found.spread]}


def build_report(db: Database, *, where: str, alloc_id: str | None = None,
                 day: date | None = None, start: date | None = None, end: date | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    """The report for one allocation, one trade date or a range of trade dates."""
    scope, allocations = allocations_in_scope(db, alloc_id=alloc_id, day=day, start=start,
                                              end=end)
    generated = now or datetime.now(UTC)
    sections = [allocation_section(db, a) for a in allocations]
    report: dict[str, Any] = {
        "title": "fixalloc allocation audit report",
        "scope": scope,
        "generated_at": _iso(generated),
        "database": where,
        "verification": verification(db),
        "totals": {
            "allocations": len(sections),
            "lines": sum(len(s["lines"]) for s in sections),
            "accounts_excluded": sum(s["accounts"]["excluded"] for s in sections),
            "lines_not_affirmed": sum(len(s["affirmation"]["not_affirmed"]) for s in sections),
        },
        # Fairness over time only means something across days: ranges only.
        "fairness": fairness(db, start, end) if start and end else None,
        "allocations": sections,
    }
    return report
