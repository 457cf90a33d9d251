"""The audit report (report.py's structure) as JSON, CSV, HTML (jinja2) or PDF (fpdf2).

The renderers only lay out what report.py collected, so the four formats cannot disagree.
The PDF embeds DejaVu Sans, regular and bold (shipped with matplotlib): the record's
reasons carry characters such as the em dash that the PDF core fonts (Latin-1) cannot show.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import jinja2
import markupsafe
from fpdf import FPDF

FORMATS = ("html", "pdf", "csv", "json")
CSV_COLUMNS = ("alloc_id", "order_id", "trade_date", "symbol", "side", "account",
               "individual_alloc_id", "qty", "avg_px", "status", "rules", "reason", "rounding",
               "ticket_state", "confirm_id", "ak_received_at", "affirmed_at")


def verdict(v: dict[str, Any]) -> str:
    return "VERIFIED" if v["ok"] else "BROKEN"


def _spread(report: dict[str, Any]) -> list[Any]:
    from gateway.audit.fairness_chart import DateSpread

    return [DateSpread(**x) for x in report["fairness"]["spread"]]


def why(x: dict[str, Any]) -> str:
    """A rationale row's text: explain's sentence (it adds the figures behind a cap), else
    the decision's own reasons with its rounding note."""
    if x["explanation"]:
        return str(x["explanation"])
    return str(x["reason"]) + (f" ({x['rounding']})" if x["rounding"] else "")


def qty(value: Any) -> str:
    """1234567 -> 1,234,567 (exact: Decimal, never float); anything else as it is."""
    if value is None or value == "":
        return ""
    try:
        return f"{Decimal(str(value)):,}"
    except InvalidOperation:
        return str(value)


def ts(value: Any) -> str:
    """ISO 8601 UTC -> '2026-11-30 06:09:09.305062' (the page says all times are UTC)."""
    if not value:
        return ""
    return str(value).replace("T", " ").removesuffix("+00:00")


# -- json and csv -----------------------------------------------------------------------------

def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"


def csv_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per allocation line, then one per account evaluated that got no line
    (excluded, dropped, not participating), with its rule and reason: every account the
    decision looked at appears once per allocation."""
    rows: list[dict[str, str]] = []
    for a in report["allocations"]:
        common = {"alloc_id": a["alloc_id"], "order_id": a["order"]["order_id"],
                  "trade_date": a["allocation"]["trade_date"],
                  "symbol": a["order"]["symbol"] or "", "side": a["order"]["side"] or ""}
        lined = set()
        for x in a["lines"]:
            lined.add(x["account_id"])
            rows.append(common | {
                "account": x["account_id"], "individual_alloc_id": x["individual_alloc_id"],
                "qty": x["qty"], "avg_px": x["avg_px"], "status": x["status"],
                "rules": "; ".join(x["rules"]), "reason": x["reason"],
                "rounding": x["rounding"], "ticket_state": x["ticket_state"] or "",
                "confirm_id": x["confirm_id"] or "", "ak_received_at": x["ak_received_at"] or "",
                "affirmed_at": x["affirmed_at"] or ""})
        for x in a["rationale"]:
            if x["account_id"] in lined:
                continue
            rows.append(common | {
                "account": x["account_id"], "individual_alloc_id": "", "qty": x["qty"],
                "avg_px": "", "status": x["status"], "rules": "; ".join(x["rules"]),
                "reason": x["reason"], "rounding": x["rounding"], "ticket_state": "",
                "confirm_id": "", "ak_received_at": "", "affirmed_at": ""})
    return rows


def render_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return out.getvalue()


# -- html -------------------------------------------------------------------------------------

def render_html(report: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("gateway.audit", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["qty"] = qty
    env.filters["ts"] = ts
    env.globals["verdict"] = verdict
    env.globals["why"] = why
    chart = None
    if report["fairness"] is not None and not report["fairness"]["error"]:
        from gateway.audit.fairness_chart import chart_svg

        # The one piece of the page not escaped: matplotlib's SVG of our own figures (it
        # escapes the labels it draws: trade dates).
        chart = markupsafe.Markup(chart_svg(_spread(report)))  # noqa: S704
    return env.get_template("report.html.j2").render(r=report, chart=chart)


# -- pdf --------------------------------------------------------------------------------------

def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


class _Pdf(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.report_title = title
        fonts = _font_dir()
        self.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
        self.set_auto_page_break(auto=True, margin=14)
        self.set_margins(12, 12, 12)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("DejaVu", "", 7)
        self.set_text_color(90)
        self.cell(0, 4, f"{self.report_title} - page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0)

    def heading(self, text: str, size: float = 11) -> None:
        if self.will_page_break(22):  # never leave a heading alone at the foot of a page
            self.add_page()
        self.ln(2)
        self.set_font("DejaVu", "B", size)
        self.multi_cell(0, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
        self.set_font("DejaVu", "", 8)

    def para(self, text: str, style: str = "") -> None:
        self.set_font("DejaVu", style, 8)
        self.multi_cell(0, 4, text, new_x="LMARGIN", new_y="NEXT", align="L")

    def _fit(self, text: str, width: float) -> str:
        """The text cut (with an ellipsis) to one line of the cell; widths are chosen so
        that this only happens to a value far longer than any the record holds."""
        room = width - 2 * self.c_margin
        if self.get_string_width(text) <= room:
            return text
        while text and self.get_string_width(text + "…") > room:
            text = text[:-1]
        return text + "…"

    def grid(self, header: list[str] | None, rows: list[list[str]],
             widths: tuple[float, ...], wrap: int | None = None) -> None:
        """A table of one-line cells, except column `wrap`, which wraps; the header is
        repeated after a page break. Drawn cell by cell: fpdf2's table() lays out every
        cell as a paragraph, 2 ms a cell, too slow for a day of FIX messages."""
        h = 3.6

        def head() -> None:
            if header:
                self.set_font("DejaVu", "B", 7)
                self.set_fill_color(235, 235, 235)
                for text, w in zip(header, widths, strict=True):
                    self.cell(w, h, self._fit(text, w), border=1, fill=True)
                self.ln(h)
            self.set_font("DejaVu", "", 7)

        head()
        for values in rows:
            lines = 1
            if wrap is not None:
                wrapped = self.multi_cell(widths[wrap], h, str(values[wrap]), dry_run=True,
                                          output="LINES")
                lines = max(1, len(cast(list[str], wrapped)))
            if self.will_page_break(h * lines):
                self.add_page()
                head()
            x, y = self.get_x(), self.get_y()
            for i, (value, w) in enumerate(zip(values, widths, strict=True)):
                self.set_xy(x, y)
                if i == wrap:
                    self.multi_cell(w, h, str(value), border=0, align="L")
                    self.rect(x, y, w, h * lines)
                else:
                    self.cell(w, h * lines, self._fit(str(value), w), border=1)
                x += w
            self.set_xy(self.l_margin, y + h * lines)
        self.ln(1)


def _first_page(pdf: _Pdf, r: dict[str, Any]) -> None:
    v = r["verification"]
    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(0, 9, r["title"], new_x="LMARGIN", new_y="NEXT")
    pdf.grid(None, [["Scope", r["scope"]["text"]],
                    ["Generated", ts(r["generated_at"]) + " UTC"],
                    ["Database", r["database"]],
                    ["Allocations", f"{r['totals']['allocations']} ({r['totals']['lines']} lines"
                                    f", {r['totals']['accounts_excluded']} accounts excluded, "
                                    f"{r['totals']['lines_not_affirmed']} lines not affirmed)"]],
             (40, 233), wrap=1)
    pdf.heading("Record verification (tamper-evident chain)")
    pdf.set_text_color(*((20, 110, 20) if v["ok"] else (180, 20, 20)))
    pdf.para(f"{verdict(v)}: {v['summary']}", "B")
    pdf.set_text_color(0)
    brk, cp = v["first_break"], v["checkpoint"]
    pdf.grid(None, [
        ["Chain entries / rows checked", f"{v['entries']} / {v['rows']}"],
        ["Head", "empty chain" if v["head_hash"] is None
         else f"#{v['head_seq']} {v['head_hash']}"],
        ["Problems", str(v["breaks"])],
        ["First break", "none" if brk is None else
         f"{'no entry' if brk['seq'] is None else 'entry #' + str(brk['seq'])}, "
         f"{brk['table']} {brk['key']}: {brk['problem']}"],
        ["Latest checkpoint", "no checkpoint written" if cp is None else
         f"#{cp.get('seq')} {cp.get('head_hash')} written {ts(cp.get('written_at'))}"]],
        (50, 223), wrap=1)
    pdf.para("All times are UTC. Quantities and prices are shown exactly as recorded.")
    f = r["fairness"]
    if f is not None:
        from gateway.audit.fairness_chart import chart_png

        pdf.heading(f"Fill-rate dispersion, {r['scope']['from']} to {r['scope']['to']}")
        if f["error"]:
            pdf.para(f["error"])
            return
        pdf.para(f"{f['blocks_assessed']} of {f['blocks']} blocks assessed; flagged: "
                 f"{', '.join(f['flagged']) or 'none'}.")
        # PNG, not SVG: fpdf2 draws only a subset of SVG, and a chart is a picture here.
        pdf.image(io.BytesIO(chart_png(_spread(r))), w=180)


def _allocation(pdf: _Pdf, a: dict[str, Any]) -> None:
    o, al, d, acc = a["order"], a["allocation"], a["decision"], a["accounts"]
    pdf.add_page()
    pdf.heading(f"Allocation {a['alloc_id']}", 13)
    pdf.grid(None, [
        ["Order", f"ClOrdID {o['cl_ord_id']} (ours {o['order_id']}), book {o['book']}, "
                  f"broker {o['broker']}"],
        ["Instrument", f"{o['side']} {qty(o['qty'])} {o['symbol']} (order {o['status']}, "
                       f"cum qty {qty(o['cum_qty'])} @ {o['avg_px']})"],
        ["J", f"{al['trans_type']}{' of ' + al['ref_alloc_id'] if al['ref_alloc_id'] else ''}"
              f", {qty(al['quantity'])} @ {al['avg_px']}, status {al['status']}; trade "
              f"{al['trade_date']}, settle {al['settl_date']}"],
        ["Method", f"{d['method']} (scheme {d['scheme']})"],
        ["Rulebook version", d["rulebook_version"] or ""],
        ["Reference-data version", d["refdata_version"] or "not recorded"],
        ["Engine version / decided", f"{d['engine_version'] or 'not recorded'} / "
                                     f"{ts(d['decided_at'])}"],
        ["Executed / allocated / unallocated",
         f"{qty(d['executed_qty'])} / {qty(d['allocated_qty'])} / {qty(d['unallocated_qty'])}"
         f" {d['unallocated_reason']}"],
        ["Accounts", f"evaluated {acc['evaluated']}, allocated {acc['allocated']}, excluded "
                     f"{acc['excluded']}, capped {acc['capped']}, dropped {acc['dropped']}, not "
                     f"participating {acc['not_participating']}; Σ line qty "
                     f"{qty(a['lines_qty_total'])}"]], (55, 218), wrap=1)
    pdf.heading("How the split was made", 10)
    pdf.para(a["explanation"]["text"])
    pdf.heading("Rules applied", 10)
    pdf.grid(["Rule", "Version", "Code", "Accounts", "Outcome"],
             [[x["rule_id"], x["rule_version"], x["code"], str(x["accounts"]),
               ", ".join(x["statuses"])] for x in a["rules_applied"]], (60, 60, 60, 25, 68))
    pdf.heading("Omitted and reduced accounts: rationale", 10)
    if a["rationale"]:
        pdf.grid(["Account", "Status", "Qty", "Rule", "Reason"],
                 [[x["account_id"], x["status"], qty(x["qty"]), ", ".join(x["rules"]), why(x)]
                  for x in a["rationale"]], (22, 20, 18, 60, 153), wrap=4)
    else:
        pdf.para("Every account evaluated was allocated by the method alone.")
    f = a["fills"]
    pdf.heading(f"Fills distributed ({f['count']} fills, {qty(f['fill_qty_total'])} shares)", 10)
    pdf.grid(["ExecID", "Kind", "Qty", "Px", "TransactTime", "Received", "Note"],
             [[x["exec_id"], x["kind"], qty(x["qty"]), x["px"], x["transact_time"] or "",
               ts(x["received_at"]), (f"refers to {x['refers_to']} " if x["refers_to"] else "")
               + (f"refused (DK): {x['refused']}" if x["refused"] else "")]
              for x in f["fills"]], (40, 20, 25, 25, 45, 50, 68))
    pdf.heading("Approvals", 10)
    if a["approvals"]["records"]:
        pdf.grid(["When", "What", "Who / detail"],
                 [[ts(x["at"]), x["kind"], json.dumps(x["detail"])]
                  for x in a["approvals"]["records"]], (50, 50, 173), wrap=2)
    else:
        pdf.para(a["approvals"]["note"] + ".")
    af = a["affirmation"]
    pdf.heading(f"Affirmation ({af['affirmed']} of {af['lines']} lines affirmed)", 10)
    pdf.para("By ticket state: " + ", ".join(f"{k} {n}" for k, n in af["by_state"].items())
             + f". Confirmations received: {af['confirmations']}.")
    if af["not_affirmed"]:
        pdf.grid(["Line", "Account", "Qty", "Ticket state", "AK received"],
                 [[x["individual_alloc_id"], x["account_id"], qty(x["qty"]),
                   x["ticket_state"] or "none", ts(x["ak_received_at"])]
                  for x in af["not_affirmed"]], (70, 40, 30, 50, 83))
    for c in af["confirmations_not_affirmed"]:
        pdf.para(f"Confirmation {c['confirm_id']} ({c['account_id']}): {c['outcome']}"
                 f"{', reason ' + c['rej_reason'] if c['rej_reason'] else ''}.")
    if a["exceptions"]:
        pdf.heading("Exceptions", 10)
        pdf.grid(["Kind", "State", "Reason", "Opened", "Resolved"],
                 [[e["kind"], e["state"], e["reason"], ts(e["opened_at"]),
                   f"{ts(e['resolved_at'])} {e['resolved_by'] or ''} {e['resolution'] or ''}"]
                  for e in a["exceptions"]], (35, 20, 110, 45, 63), wrap=2)
    pdf.heading(f"FIX messages ({len(a['messages'])})", 10)
    pdf.grid(["Recorded", "Dir", "Type", "Session", "Seq", "Ref", "About"],
             [[ts(m["recorded_at"]), m["direction"],
               f"{m['msg_type']} {m['name']}{' (PossDup)' if m['poss_dup'] else ''}",
               m["session_id"], "" if m["seq_num"] is None else str(m["seq_num"]),
               m["ref_id"] or "", m["about"]] for m in a["messages"]],
             (38, 10, 55, 52, 14, 52, 52))


def render_pdf(report: dict[str, Any]) -> bytes:
    pdf = _Pdf(f"{report['title']}: {report['scope']['text']}")
    pdf.set_title(report["title"])
    pdf.set_creator("fixalloc audit report")
    pdf.add_page()
    _first_page(pdf, report)
    for a in report["allocations"]:
        _allocation(pdf, a)
    return bytes(pdf.output())


def render(report: dict[str, Any], fmt: str) -> str | bytes:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report)
    if fmt == "pdf":
        return render_pdf(report)
    raise ValueError(f"unknown report format {fmt!r}")
