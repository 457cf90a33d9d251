"""One contract suite for the database, run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect

from gateway.persistence.store import Database, ReportOutcome

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def _order(order_id: str = "O1", cl_ord_id: str = "C1") -> dict[str, object]:
    return {
        "order_id": order_id, "oms_session": "FIX.4.4:FIXALLOC->OMS1", "oms_cl_ord_id": cl_ord_id,
        "book": "SMA-CORE", "symbol": "AAPL", "side": "buy", "order_qty": "500000",
        "ord_type": "2", "price": "190.25", "time_in_force": "0", "broker": "BRKA",
        "status": "new", "cum_qty": "0", "avg_px": "0", "leaves_qty": "500000",
        "trade_date": "2026-11-20", "created_at": NOW, "updated_at": NOW,
    }


def _report(exec_id: str, last_qty: str = "100", last_px: str = "190.01") -> dict[str, object]:
    return {
        "session_id": "FIX.4.4:FIXALLOC->BRKA", "broker_order_id": "B1", "exec_id": exec_id,
        "trade_date": "2026-11-20", "order_id": "O1", "cl_ord_id": "O1", "exec_type": "F",
        "ord_status": "1", "last_qty": last_qty, "last_px": last_px, "cum_qty": last_qty,
        "avg_px": last_px, "leaves_qty": "0", "text": None, "seq_num": 7, "poss_dup": False,
        "received_at": NOW, "transact_time": None,
    }


def test_migration_creates_every_table(db: Database) -> None:
    """Upgrading to head creates the audit, order and allocation tables."""
    names = set(inspect(db.engine).get_table_names())
    assert {"fix_messages", "orders", "broker_reports", "decisions", "allocations",
            "allocation_lines", "audit_events", "rulebook_versions", "alembic_version"} <= names


def test_migrate_twice_is_a_no_op(db: Database) -> None:
    """Running migrations on an up-to-date schema changes nothing and does not fail."""
    db.migrate()
    assert db.count("orders") == 0


def test_wire_record_round_trips_raw_text(db: Database) -> None:
    """A raw FIX message is stored verbatim with its session, direction and sequence number."""
    raw = "8=FIX.4.4\x019=5\x0135=0\x0134=2\x0110=000\x01"
    db.append_wire(session_id="S", direction="in", msg_type="0", seq_num=2, poss_dup=False,
                   raw=raw, recorded_at=NOW)
    [row] = db.wire_messages(session_id="S")
    assert (row["raw"], row["direction"], row["seq_num"], row["msg_type"]) == (raw, "in", 2, "0")
    assert db.sent_message_contains("S", "0", "35=0") is False  # inbound only


def test_duplicate_cl_ord_id_is_refused(db: Database) -> None:
    """The OMS cannot reuse a ClOrdID on the same session."""
    assert db.insert_order(_order()) is True
    assert db.insert_order(_order(order_id="O2")) is False


def test_report_dedupe_classifies_repeats(db: Database) -> None:
    """The same ExecID is new once, then a duplicate; different economics is a conflict."""
    db.insert_order(_order())
    first = db.record_broker_report(_report("E1"))
    again = db.record_broker_report(_report("E1"))
    changed = db.record_broker_report(_report("E1", last_qty="200"))
    assert first.outcome is ReportOutcome.NEW
    assert again.outcome is ReportOutcome.DUPLICATE and again.report_id == first.report_id
    assert changed.outcome is ReportOutcome.CONFLICT
    assert changed.existing is not None and changed.existing["last_qty"] == "100"
    assert db.count("broker_reports") == 1


def test_allocation_saved_atomically_with_lines(db: Database) -> None:
    """Decision, allocation and lines are written together and read back exactly."""
    db.insert_order(_order())
    decision = {"decision_id": "D1", "order_id": "O1", "method": "pro_rata",
                "rulebook_version": "r1", "inputs_hash": "h", "config_hash": "c",
                "decided_at": NOW, "canonical_json": "{}"}
    alloc = {"alloc_id": "A1", "order_id": "O1", "decision_id": "D1", "broker": "BRKA",
             "alloc_trans_type": "0", "alloc_type": "1", "quantity": "300", "avg_px": "190.0100",
             "trade_date": "2026-11-20", "settl_date": "2026-11-23", "status": "pending_send",
             "created_at": NOW}
    lines = [{"individual_alloc_id": f"A1-{i}", "alloc_id": "A1", "account_id": f"SMA{i}",
              "qty": "100", "avg_px": "190.0100"} for i in range(3)]
    db.save_allocation(decision, alloc, lines)
    db.update_allocation("A1", status="accepted", ack_status="0")
    [stored] = db.load_allocations()
    assert stored["status"] == "accepted" and stored["quantity"] == "300"
    assert [x["qty"] for x in db.load_allocation_lines("A1")] == ["100", "100", "100"]


def test_rulebook_version_stored_once(db: Database) -> None:
    """A rulebook version hash is recorded once with who loaded it and when."""
    kw = {"version": "v1", "loaded_at": NOW, "actor": "file-watch", "source": "rules/",
          "content_json": "{}", "diff_summary": None}
    assert db.save_rulebook_version(**kw) is True
    assert db.save_rulebook_version(**kw) is False


def test_rotation_offset_counts_the_books_allocations(db: Database) -> None:
    """The fair-rotation offset for a book is the number of its allocations so far."""
    assert db.allocations_for_book("SMA-CORE") == 0
    db.insert_order(_order())
    decision = {"decision_id": "D1", "order_id": "O1", "method": "pro_rata",
                "rulebook_version": "r1", "inputs_hash": "h", "config_hash": "c",
                "decided_at": NOW, "canonical_json": "{}"}
    alloc = {"alloc_id": "A1", "order_id": "O1", "decision_id": "D1", "broker": "BRKA",
             "alloc_trans_type": "0", "alloc_type": "1", "quantity": "0", "avg_px": "1",
             "trade_date": "2026-11-20", "settl_date": "2026-11-23", "status": "sent",
             "created_at": NOW}
    db.save_allocation(decision, alloc, [])
    assert db.allocations_for_book("SMA-CORE") == 1
    assert db.allocations_for_book("OTHER") == 0
