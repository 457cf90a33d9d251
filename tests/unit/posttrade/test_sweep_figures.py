"""The sweep's counts and percentages by broker, custodian and account, and its metrics."""

from __future__ import annotations

from gateway.metrics import METRICS
from gateway.persistence.store import Database
from gateway.posttrade.sweep import apply_exception_actions, store
from tests.unit.posttrade.sweep_rows import DAY, Blotter, ny, sweep


def _day(db: Database) -> None:
    b = Blotter(db)
    b.order("O-1", qty="1000")
    one, _two = b.allocation("O-1", lines=(("SMA0001", "600", "CUST-A"),
                                          ("SMA0002", "400", "CUST-B")))
    b.affirm(one)
    b.order("O-2", qty="500")
    three, four = b.allocation("O-2", lines=(("SMA0001", "300", "CUST-A"),
                                             ("SMA0003", "200", "CUST-A")))
    b.affirm(three, au="16:40")
    b.affirm(four, au="21:30")
    b.order("O-3", qty="800", broker="BRKB")
    b.allocation("O-3", status="sent", broker="BRKB", lines=(("SMA0002", "800", "CUST-B"),),
                 ticket_state=None)
    b.order("O-4", qty="100", broker="BRKB", status="partially_filled", cum="50")


def test_counts_and_percentages_by_broker_custodian_and_account(any_db: Database) -> None:
    """Blocks allocated/accepted over done blocks, tickets affirmed over tickets, per group."""
    _day(any_db)
    report = sweep(any_db, "23:00").report
    totals = report["totals"]
    assert {k: totals[k] for k in ("blocks", "blocks_working", "blocks_done", "allocated",
                                   "allocated_pct", "accepted", "accepted_pct", "tickets",
                                   "affirmed", "affirmed_pct", "affirmed_by_cutoff",
                                   "affirmed_by_cutoff_pct", "affirmed_same_day")} == {
        "blocks": 4, "blocks_working": 1, "blocks_done": 3, "allocated": 3,
        "allocated_pct": "100.0", "accepted": 2, "accepted_pct": "66.7", "tickets": 5,
        "affirmed": 3, "affirmed_pct": "60.0", "affirmed_by_cutoff": 2,
        "affirmed_by_cutoff_pct": "40.0", "affirmed_same_day": 3}
    brka, brkb = report["by_broker"]["BRKA"], report["by_broker"]["BRKB"]
    assert (brka["blocks_done"], brka["accepted_pct"], brka["tickets"], brka["affirmed_pct"]) \
        == (2, "100.0", 4, "75.0")
    assert (brkb["blocks"], brkb["blocks_working"], brkb["blocks_done"], brkb["allocated_pct"],
            brkb["accepted_pct"], brkb["tickets"], brkb["affirmed_pct"]) \
        == (2, 1, 1, "100.0", "0.0", 1, "0.0")
    cust = report["by_custodian"]
    assert (cust["CUST-A"]["tickets"], cust["CUST-A"]["affirmed_pct"]) == (3, "100.0")
    assert (cust["CUST-B"]["blocks"], cust["CUST-B"]["accepted_pct"], cust["CUST-B"]["tickets"],
            cust["CUST-B"]["affirmed_pct"]) == (2, "50.0", 2, "0.0")
    accounts = {k: (v["tickets"], v["affirmed"], v["affirmed_pct"])
                for k, v in report["by_account"].items()}
    assert accounts == {"SMA0001": (2, 2, "100.0"), "SMA0002": (2, 0, "0.0"),
                        "SMA0003": (1, 1, "100.0")}
    # J sent 16:10; affirmed 16:21, 16:40 and 21:30.
    assert totals["time_to_affirmation_seconds"] == {"count": 3, "median": 1800, "p90": 19200,
                                                     "max": 19200}


def test_an_empty_day_has_no_percentages() -> None:
    """No done block and no ticket: the percentages are null, not a division by zero."""
    from gateway.posttrade.sweep import _Tally

    figures = _Tally().figures()
    assert figures["allocated_pct"] is None and figures["affirmed_pct"] is None


def test_storing_publishes_the_same_day_ratio_and_open_exceptions(db: Database) -> None:
    """After a stored run /metrics carries the same-day affirmation ratio and exceptions by kind."""
    _day(db)
    now = ny("23:00")
    result = sweep(db, "23:00", now=now)
    apply_exception_actions(db, result.actions, now)
    store(db, result, DAY, "23:00", now)
    assert METRICS.affirmed_same_day_ratio._value.get() == 3 / 5
    kinds = {kind: METRICS.open_exceptions.labels(kind=kind)._value.get()
             for kind in ("order_open_after_close", "no_p", "session_down")}
    assert kinds == {"order_open_after_close": 1, "no_p": 1, "session_down": 0}
    db.resolve_exceptions(at=now, by="ops", resolution="done", kinds=("no_p",))
    store(db, result, DAY, "23:00", now)
    assert METRICS.open_exceptions.labels(kind="no_p")._value.get() == 0
