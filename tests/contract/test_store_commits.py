"""The live path's shared commits, on SQLite and PostgreSQL: an ER's wire row written by the
fill's own transaction, a relay's mark riding on its wire row, and what happens when either
partner fails (the wire record is never the one lost)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, delete, text

from gateway.persistence import tables as t
from gateway.persistence.store import Database, OrderGone, ReportOutcome
from tests.contract.test_store import _order, _report

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
BROKER = "FIX.4.4:FIXALLOC->BRKA"
OMS = "FIX.4.4:FIXALLOC->OMS1"


def _wire(db: Database, seq: int, session: str = BROKER, direction: str = "in",
          msg_type: str = "8") -> dict[str, object]:
    raw = f"8=FIX.4.4\x0135={msg_type}\x0134={seq}\x0117=E{seq}\x0110=000\x01".encode()
    return db.wire_row(session_id=session, direction=direction, msg_type=msg_type,
                       seq_num=seq, poss_dup=False, raw=raw, ref_id=f"E{seq}", recorded_at=NOW)


def _seqs(db: Database, session: str = BROKER) -> list[int]:
    return [m["seq_num"] for m in db.wire_messages(session_id=session)]


def test_a_held_er_row_commits_with_its_fill(db: Database) -> None:
    db.insert_order(_order())
    db.defer_wire(_wire(db, 7))
    assert _seqs(db) == []  # held, not yet written
    assert db.record_broker_report(_report("E1")).outcome is ReportOutcome.NEW
    assert _seqs(db) == [7]
    assert db.take_deferred_wire(BROKER) is None


def test_a_repeat_keeps_its_wire_row_and_is_still_classified(db: Database) -> None:
    db.insert_order(_order())
    db.record_broker_report(_report("E1"))
    db.defer_wire(_wire(db, 8))
    again = db.record_broker_report(_report("E1"))
    assert again.outcome is ReportOutcome.DUPLICATE
    assert _seqs(db) == [8] and db.count("broker_reports") == 1


def test_a_failed_fill_puts_its_wire_row_back_for_the_next_record(db: Database) -> None:
    db.insert_order(_order())
    db.defer_wire(_wire(db, 9))
    bad = _report("E1") | {"text": object()}  # a value no driver can bind
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises for it
        db.record_broker_report(bad)
    assert _seqs(db) == []
    # The reject quickfix sends next is recorded after the held row, in wire order.
    db.append_wire(session_id=BROKER, direction="out", msg_type="3", seq_num=4,
                   poss_dup=False, raw=b"8=FIX.4.4\x0135=3\x0134=4\x01", recorded_at=NOW)
    assert _seqs(db) == [9, 4]


def test_a_held_row_is_written_before_any_later_record(db: Database) -> None:
    db.defer_wire(_wire(db, 10))
    db.defer_wire(_wire(db, 11))  # quickfix never handed 10 to the application
    db.append_wire(session_id=OMS, direction="in", msg_type="0", seq_num=3, poss_dup=False,
                   raw=b"8=FIX.4.4\x0135=0\x0134=3\x01", recorded_at=NOW)
    assert _seqs(db) == [10, 11]
    assert [m["seq_num"] for m in db.wire_messages(session_id=OMS)] == [3]
    assert db.take_deferred_wire(BROKER) is None


def test_a_rider_commits_with_the_next_outbound_row_of_its_session(db: Database) -> None:
    db.insert_order(_order())
    report = db.record_broker_report(_report("E1")).report_id
    written: list[str] = []

    def write(conn: Connection) -> None:
        db.write_fill_applied(conn, "O1", report, NOW, cum_qty="100", status="partially_filled")
        written.append("rider")

    with db.riding_on_wire(OMS, write) as ride:
        db.append_wire(session_id=OMS, direction="in", msg_type="0", seq_num=5,
                       poss_dup=False, raw=b"8=FIX.4.4\x0135=0\x01", recorded_at=NOW)
        db.append_wire(session_id=BROKER, direction="out", msg_type="0", seq_num=6,
                       poss_dup=False, raw=b"8=FIX.4.4\x0135=0\x01", recorded_at=NOW)
        assert not ride.done and written == []  # not inbound, not another session
        db.append_wire(session_id=OMS, direction="out", msg_type="8", seq_num=7,
                       poss_dup=False, raw=b"8=FIX.4.4\x0135=8\x01", recorded_at=NOW)
        assert ride.done and written == ["rider"]
        db.append_wire(session_id=OMS, direction="out", msg_type="8", seq_num=8,
                       poss_dup=False, raw=b"8=FIX.4.4\x0135=8\x01", recorded_at=NOW)
    assert written == ["rider"]  # once
    [rep] = db.load_reports("O1")
    assert rep["relayed_at"] is not None
    assert db.load_order("O1")["cum_qty"] == "100"


def test_a_failing_rider_never_costs_the_wire_its_record(db: Database) -> None:
    def write(conn: Connection) -> None:
        conn.execute(text("UPDATE no_such_table SET x = 1"))

    with db.riding_on_wire(OMS, write) as ride:
        db.append_wire(session_id=OMS, direction="out", msg_type="8", seq_num=7,
                       poss_dup=False, raw=b"8=FIX.4.4\x0135=8\x01", recorded_at=NOW)
    assert not ride.done  # its owner writes it itself
    assert [m["seq_num"] for m in db.wire_messages(session_id=OMS)] == [7]


def test_an_er_for_an_order_archived_since_its_date_was_kept_is_refused_as_gone(
        db: Database) -> None:
    db.insert_order(_order())
    assert db.order_trade_date("O1") == "2026-11-20"  # kept from here on
    with db.engine.begin() as conn:  # what `fixalloc archive` does to a closed day
        conn.execute(delete(t.orders).where(t.orders.c.order_id == "O1"))
    with pytest.raises(OrderGone):
        db.record_broker_report(_report("E9"))
    assert db.order_trade_date("O1") is None  # forgotten, and no longer found
    stored = db.record_broker_report(_report("E9") | {"order_id": None})
    assert stored.outcome is ReportOutcome.NEW
