"""Stored sweep reports as the API, the CLI and a spreadsheet want them: table, JSON, CSV.

A stored report is a row of `sweep_reports` (id, trade date, checkpoint, when it ran, how
many times) around the report dict `run_sweep` made; `stored` turns the row into a plain
dict with the report parsed, and `render` formats a list of them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

FORMATS = ("table", "json", "csv")
_SCOPES = (("total", None), ("broker", "by_broker"), ("custodian", "by_custodian"),
           ("account", "by_account"))
_FIGURES = ("blocks", "blocks_done", "allocated", "allocated_pct", "accepted", "accepted_pct",
            "tickets", "confirmed", "affirmed", "affirmed_pct", "affirmed_same_day_pct",
            "affirmed_by_cutoff_pct", "booked_elsewhere")
_ITEM = ("kind", "order_id", "alloc_id", "individual_alloc_id", "account_id", "broker",
         "reason", "next_step")
CSV_COLUMNS = ("trade_date", "checkpoint", "ran_at", "record", "scope", "name", *_FIGURES,
               *_ITEM)


def stored(row: Mapping[str, Any]) -> dict[str, Any]:
    """A `sweep_reports` row as {id, trade_date, checkpoint, ran_at, runs, report}."""
    ran_at = row["ran_at"]
    return {"id": int(row["id"]), "trade_date": row["trade_date"],
            "checkpoint": row["checkpoint"],
            "ran_at": ran_at.isoformat() if isinstance(ran_at, datetime) else str(ran_at),
            "runs": int(row["runs"]), "report": json.loads(row["report_json"])}


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures a list of reports shows for each."""
    totals = report.get("totals", {})
    return {"blocks": totals.get("blocks"), "blocks_done": totals.get("blocks_done"),
            "allocated_pct": totals.get("allocated_pct"),
            "accepted_pct": totals.get("accepted_pct"), "tickets": totals.get("tickets"),
            "affirmed": totals.get("affirmed"), "affirmed_pct": totals.get("affirmed_pct"),
            "open_items": len(report.get("open_items", ())),
            "sessions_not_logged_on": list(report.get("sessions_not_logged_on", ())),
            "recordkeeping_ok": report.get("recordkeeping", {}).get("ok")}


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored report without its body, for lists."""
    return {k: row[k] for k in ("id", "trade_date", "checkpoint", "ran_at", "runs")} | {
        "headline": headline(row["report"])}


def render(rows: Sequence[Mapping[str, Any]], fmt: str, *, single: bool = False) -> str:
    """Format stored reports; `single` prints one JSON object rather than a list."""
    if fmt == "json":
        body: Any = rows[0] if single and len(rows) == 1 else list(rows)
        return json.dumps(body, indent=2, sort_keys=True, default=str)
    if fmt == "csv":
        return _csv(rows)
    if fmt == "table":
        return "\n\n\n".join(_table(row) for row in rows)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


# -- csv ---------------------------------------------------------------------------------------


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        report = row["report"]
        head = {"trade_date": row["trade_date"], "checkpoint": row["checkpoint"],
                "ran_at": row["ran_at"]}
        for scope, key in _SCOPES:
            groups = {"": report["totals"]} if key is None else report.get(key, {})
            for name, figures in groups.items():
                writer.writerow({**head, "record": "figures", "scope": scope, "name": name,
                                 **{f: figures.get(f) for f in _FIGURES}})
        for item in report.get("open_items", ()):
            writer.writerow({**head, "record": "open_item", **{f: item.get(f) for f in _ITEM}})
        for ticket in report.get("unaffirmed_tickets") or ():
            writer.writerow({**head, "record": "unaffirmed_ticket",
                             **{f: ticket.get(f) for f in _ITEM},
                             "kind": ticket.get("ticket_state") or ""})
    return out.getvalue()


# -- table -------------------------------------------------------------------------------------


def _count(figures: Mapping[str, Any], key: str, whole: str) -> str:
    pct = figures.get(f"{key}_pct")
    return f"{figures.get(key, 0)}/{figures.get(whole, 0)}" + (f" ({pct}%)" if pct else "")


def _grid(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in (header, *body)) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in (header, *body)]


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _table(row: Mapping[str, Any]) -> str:
    r = row["report"]
    lines = [
        f"Sweep {row['trade_date']} {row['checkpoint']} {r.get('time_zone', '')} "
        f"(report {row['id']}, ran {row['ran_at']}, run {row['runs']})",
        f"settlement date {r.get('settlement_date') or 'unknown'}; past close "
        f"{_yes(r.get('past_market_close'))}; past allocation deadline "
        f"{_yes(r.get('past_allocation_deadline'))}; past affirmation cutoff "
        f"{_yes(r.get('past_affirmation_cutoff'))}",
        "",
    ]
    body = []
    for scope, key in _SCOPES:
        groups = {"": r["totals"]} if key is None else r.get(key, {})
        for name, f in groups.items():
            body.append([scope, name, str(f.get("blocks", 0)),
                         _count(f, "allocated", "blocks_done"),
                         _count(f, "accepted", "blocks_done"), str(f.get("tickets", 0)),
                         str(f.get("confirmed", 0)), _count(f, "affirmed", "tickets"),
                         str(f.get("booked_elsewhere", 0))])
    # booked_elsewhere: lines of Ready-To-Book Js, booked outside FIX (no AK owed), which
    # are not among the tickets.
    lines += _grid(["scope", "name", "blocks", "allocated", "accepted", "tickets", "confirmed",
                    "affirmed", "booked_elsewhere"], body)
    items = r.get("open_items", [])
    lines += ["", f"Open items: {len(items)}"]
    for item in items:
        ref = " ".join(f"{label} {item[k]}" for k, label in (
            ("broker", "broker"), ("order_id", "order"), ("alloc_id", "J"),
            ("individual_alloc_id", "ticket")) if item.get(k))
        lines += [f"  [{item['kind']}] {ref}", f"      {item['reason']}",
                  f"      next: {item['next_step']}"]
    down = r.get("sessions_not_logged_on") or []
    lines += ["", f"Sessions not logged on: {', '.join(down) if down else 'none'}"]
    rec = r.get("recordkeeping", {})
    messages = rec.get("messages", {})
    counts = "  ".join(f"{mt} {messages[mt]['stored']}/{messages[mt]['expected']}"
                       for mt in ("J", "P", "AK", "AU") if mt in messages)
    lines.append(f"Recordkeeping: {'ok' if rec.get('ok') else 'MISSING'}  {counts}")
    for m in rec.get("missing", []):
        lines.append(f"  missing {m['msg_type']} {m['direction']} {m['ref_id']}")
    tickets = r.get("unaffirmed_tickets")
    if tickets is not None:
        lines += ["", f"Unaffirmed tickets: {len(tickets)}"]
        if tickets:
            lines += ["  " + x for x in _grid(
                ["ticket", "account", "broker", "qty", "reason", "next step"],
                [[t["individual_alloc_id"], t["account_id"], t["broker"], t["qty"],
                  t["reason"], t["next_step"]] for t in tickets])]
    return "\n".join(lines)
