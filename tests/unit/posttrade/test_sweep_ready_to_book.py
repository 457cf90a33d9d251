"""The sweep and a Ready-To-Book J's lines (ticket_state booked_elsewhere): no AK is owed
for them, so they are neither unaffirmed nor missing an AK; they have a figure of their own."""

from __future__ import annotations

import csv
import io

from gateway.persistence.store import Database
from gateway.posttrade.sweep import RequestConfirmation, store
from gateway.posttrade.sweep_report import render, stored
from tests.unit.posttrade.sweep_rows import DAY, Blotter, actions, items, ny, sweep

RTB = (("SMA0001", "500", "CUST-A"), ("SMA0002", "300", "CUST-B"), ("SMA0003", "200", "CUST-A"))


def _day(db: Database) -> None:
    b = Blotter(db)
    b.order("O-1")  # BRKA, ordinary: one line affirmed, one awaiting its AK
    one, _two = b.allocation("O-1")
    b.affirm(one)
    b.order("O-2", broker="BRKB")  # BRKB, Ready-To-Book
    b.allocation("O-2", broker="BRKB", lines=RTB, ticket_state="booked_elsewhere")


def test_booked_elsewhere_lines_are_counted_apart_and_ask_for_nothing(db: Database) -> None:
    """At 22:00, long past the AK wait: the RTB block counts as allocated and accepted,
    its lines as booked elsewhere; only the ordinary block's open line is unaffirmed."""
    _day(db)
    result = sweep(db, "22:00")
    report = result.report
    totals = report["totals"]
    assert (totals["blocks_done"], totals["allocated_pct"], totals["accepted_pct"]) == (
        2, "100.0", "100.0")
    assert (totals["tickets"], totals["affirmed"], totals["unaffirmed"],
            totals["booked_elsewhere"]) == (2, 1, 1, 3)
    assert totals["affirmed_pct"] == "50.0"
    brkb = report["by_broker"]["BRKB"]
    assert (brkb["accepted_pct"], brkb["tickets"], brkb["unaffirmed"], brkb["affirmed_pct"],
            brkb["booked_elsewhere"]) == ("100.0", 0, 0, None, 3)
    assert report["by_broker"]["BRKA"]["booked_elsewhere"] == 0
    cust = report["by_custodian"]
    assert (cust["CUST-A"]["booked_elsewhere"], cust["CUST-B"]["booked_elsewhere"]) == (2, 1)
    assert cust["CUST-A"]["accepted_pct"] == "100.0"
    accounts = {k: (v["tickets"], v["booked_elsewhere"])
                for k, v in report["by_account"].items()}
    assert accounts == {"SMA0001": (1, 1), "SMA0002": (1, 1), "SMA0003": (0, 1)}
    assert [t["individual_alloc_id"] for t in report["unaffirmed_tickets"]] == ["A-O-1-2"]
    assert [i["individual_alloc_id"] for i in items(result, "missing_ak")] == ["A-O-1-2"]
    assert [a.individual_alloc_id for a in actions(result, RequestConfirmation)] == ["A-O-1-2"]


def test_an_rtb_line_an_ak_affirmed_later_is_an_ordinary_ticket(db: Database) -> None:
    """The allocation done elsewhere (e.g. CTM) and an AK affirmed for one RTB line."""
    _day(db)
    Blotter(db).affirm("A-O-2-1")
    totals = sweep(db, "22:00").report["totals"]
    assert (totals["tickets"], totals["affirmed"], totals["booked_elsewhere"]) == (3, 2, 2)


def test_the_table_and_csv_show_booked_elsewhere(db: Database) -> None:
    _day(db)
    now = ny("21:00")
    store(db, sweep(db, "21:00", now=now), DAY, "21:00", now)
    rows = [stored(r) for r in db.sweep_reports(DAY.isoformat())]
    lines = render(rows, "table").splitlines()
    assert next(x for x in lines if x.startswith("scope")).split()[-1] == "booked_elsewhere"
    assert next(x for x in lines if x.startswith("total")).split()[-1] == "3"
    assert next(x for x in lines if x.startswith("broker") and "BRKB" in x).split()[-1] == "3"
    assert "Unaffirmed tickets: 1" in "\n".join(lines)
    figures = {(r["scope"], r["name"]): r["booked_elsewhere"]
               for r in csv.DictReader(io.StringIO(render(rows, "csv")))
               if r["record"] == "figures"}
    assert figures[("total", "")] == "3" and figures[("broker", "BRKB")] == "3"
    assert figures[("account", "SMA0003")] == "1"
