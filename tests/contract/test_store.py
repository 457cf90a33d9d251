"""One contract suite for the database, run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect

from gateway.persistence.store import Database, ReportOutcome

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


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


def test_wire_record_round_trips_the_exact_bytes(db: Database) -> None:
    """Raw FIX is stored as the bytes that crossed the wire, Latin-1 included."""
    raw = b"8=FIX.4.4\x019=5\x0135=D\x0134=2\x0111=C1\x0158=caf\xe9\x0110=000\x01"
    db.append_wire(session_id="S", direction="in", msg_type="D", seq_num=2, poss_dup=False,
                   raw=raw, ref_id="C1", recorded_at=NOW)
    [row] = db.wire_messages(session_id="S")
    assert (row["raw"], row["direction"], row["seq_num"], row["msg_type"]) == (raw, "in", 2, "D")
    assert row["raw_len"] == len(raw) and row["truncated"] is False
    assert "58=caf\\xe9" in row["text"]  # displayed with the odd byte named
    assert db.received_with_ref("S", "D", "C1")[0]["id"] == row["id"]
    assert db.sent_with_ref("S", "D", "C1") is False  # inbound only
    db.append_wire(session_id="S", direction="out", msg_type="8", seq_num=9, poss_dup=False,
                   raw=b"8=FIX.4.4\x0135=8\x0117=X1\x01", ref_id="X1", recorded_at=NOW)
    assert db.sent_with_ref("S", "8", "X1") is True
    assert db.sent_message_at("S", 9)["ref_id"] == "X1"


def test_duplicate_cl_ord_id_is_refused(db: Database) -> None:
    """The OMS cannot reuse a ClOrdID on the same session and trade date."""
    assert db.insert_order(_order()) is True
    assert db.insert_order(_order(order_id="O2")) is False


def test_cl_ord_id_may_come_back_on_a_later_trade_date(db: Database) -> None:
    """FIX asks ClOrdIDs to be unique per trading day: tomorrow's reuse is a new order."""
    assert db.insert_order(_order()) is True
    assert db.insert_order(_order(order_id="O2") | {"trade_date": "2026-11-23"}) is True


def test_rejections_get_ids_unique_for_the_life_of_the_database(db: Database) -> None:
    kw = {"session_id": "S", "cl_ord_id": "C1", "trade_date": "2026-11-20", "seq_num": 2,
          "order_id": None, "reason_code": "99", "text": "no", "created_at": NOW}
    first, second = db.record_rejection(**kw), db.record_rejection(**kw)
    assert first != second
    assert db.find_rejection("S", "C1", "2026-11-20")["id"] == first
    assert db.find_rejection("S", "C1", "2026-11-21") is None


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


def test_same_exec_id_on_another_trade_date_is_a_new_fill(db: Database) -> None:
    """ExecIDs are unique per trading day: the key carries the trade date, or a fill is lost."""
    db.insert_order(_order())
    first = db.record_broker_report(_report("E1"))
    later = db.record_broker_report(_report("E1") | {"trade_date": "2026-11-23"})
    assert (first.outcome, later.outcome) == (ReportOutcome.NEW, ReportOutcome.NEW)
    assert db.count("broker_reports") == 2


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


def test_rulebook_version_rows_are_activations(db: Database) -> None:
    """One row per activation: a reload of the same text adds none, a rollback adds one."""
    def kw(version: str) -> dict[str, object]:
        return {"version": version, "loaded_at": NOW, "actor": "file-watch",
                "source": "rules/", "content_json": "{}", "diff_summary": None}
    assert db.save_rulebook_version(**kw("v1")) is True
    assert db.save_rulebook_version(**kw("v1")) is False
    assert db.save_rulebook_version(**kw("v2")) is True
    assert db.save_rulebook_version(**kw("v1")) is True  # the rollback is recorded
    rows = db.version_rows("rulebook_versions")
    assert [(r["version"], r["reactivated"]) for r in rows] == [
        ("v1", False), ("v2", False), ("v1", True)]


def test_refdata_rollback_makes_the_newest_row_the_version_in_force(db: Database) -> None:
    for version in ("r1", "r2", "r1"):
        db.save_refdata_version(version=version, loaded_at=NOW, actor="t", files={"a": version},
                                diff_summary=None)
    assert db.latest_refdata_version()["version"] == "r1"


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
    # A Replace of the same block does not move the rotation on; a new block does.
    db.save_allocation(decision, {**alloc, "alloc_id": "A1-R", "alloc_trans_type": "1"}, [])
    assert db.allocations_for_book("SMA-CORE") == 1
    db.insert_order(_order("O2", "C2"))
    db.save_allocation({**decision, "decision_id": "D2", "order_id": "O2"},
                       {**alloc, "alloc_id": "A2", "order_id": "O2", "decision_id": "D2"}, [])
    assert db.allocations_for_book("SMA-CORE") == 2


def test_the_rotation_counter_starts_from_the_blocks_already_allocated(
        db: Database) -> None:
    """Migration 0009 fills the counter from the allocations stored before it."""
    from alembic import command

    from gateway.persistence.migrate import alembic_config

    command.downgrade(alembic_config(db.engine), "0008")
    db.chain.enabled = False  # these rows stand for a gateway from before the audit chain
    db.engine.dispose()  # the pooled connections were armed for tables 0008 does not have
    for n in (1, 2, 3):
        db.insert_order(_order(f"O{n}", f"C{n}"))
        decision = {"decision_id": f"D{n}", "order_id": f"O{n}", "method": "pro_rata",
                    "rulebook_version": "r1", "inputs_hash": "h", "config_hash": "c",
                    "decided_at": NOW, "canonical_json": "{}"}
        with db.engine.begin() as conn:
            from sqlalchemy import insert

            from gateway.persistence import tables as t

            conn.execute(insert(t.decisions).values(**decision))
            for k in range(2 if n == 1 else 1):  # O1 has a Replace: still one block
                conn.execute(insert(t.allocations).values(
                    alloc_id=f"A{n}-{k}", order_id=f"O{n}", decision_id=f"D{n}",
                    broker="BRKA", alloc_trans_type="0" if k == 0 else "1", alloc_type="1",
                    quantity="100", avg_px="1", trade_date="2026-11-20",
                    settl_date="2026-11-23", status="sent", created_at=NOW))
    db.chain.enabled = True
    db.migrate()
    assert db.allocations_for_book("SMA-CORE") == 3
    # The upgrade adopted every row written before the chain existed into it.
    from gateway.audit.chain_verify import verify

    result = verify(db)
    assert result.ok, result.summary()
    assert result.adopted == 3 + 3 + 4 + 1  # orders, decisions, allocations, book_rotations


def test_large_wire_messages_and_decisions_are_stored_compressed_and_read_back_exactly(
        db: Database) -> None:
    """A J with its lines and a decision document take a fraction of their size on disk
    and come back byte for byte; a small message is stored as it is."""
    from sqlalchemy import select

    from gateway.persistence import tables as t

    lines = b"".join(b"\x0179=SMA%04d\x0180=100\x01467=J1-%05d" % (i, i) for i in range(400))
    big = b"8=FIX.4.4\x019=9\x0135=J\x0170=J1" + lines + b"\x0158=caf\xe9\x0110=000\x01"
    small = b"8=FIX.4.4\x019=5\x0135=P\x0170=J1\x0187=0\x0110=000\x01"
    for raw, mtype in ((big, "J"), (small, "P")):
        db.append_wire(session_id="S", direction="in", msg_type=mtype, seq_num=3,
                       poss_dup=False, raw=raw, ref_id="J1", recorded_at=NOW)
    by_type = {m["msg_type"]: m for m in db.wire_messages(session_id="S")}
    assert by_type["J"]["raw"] == big and by_type["P"]["raw"] == small
    assert by_type["J"]["raw_len"] == len(big) and "\\xe9" in by_type["J"]["text"]
    assert [m["raw"] for m in db.received_with_ref("S", "J", "J1")] == [big]
    assert db.sent_message_at("S", 3) is None
    m = t.fix_messages.c
    with db.engine.connect() as conn:
        stored = {r[0]: (bytes(r[1]), r[2])
                  for r in conn.execute(select(m.msg_type, m.raw, m.compressed))}
    assert stored["J"][1] is True and len(stored["J"][0]) * 5 < len(big)
    # The preset dictionary of FIX text shrinks even a short message.
    assert stored["P"][1] is True and len(stored["P"][0]) < len(small)

    db.insert_order(_order())
    document = '{"lines": [' + ",".join(
        f'{{"account_id": "SMA{i:04d}", "qty": "100"}}' for i in range(200)) + "]}"
    decision = {"decision_id": "D9", "order_id": "O1", "method": "pro_rata",
                "rulebook_version": "r1", "inputs_hash": "h", "config_hash": "c",
                "decided_at": NOW, "canonical_json": document}
    alloc = {"alloc_id": "A9", "order_id": "O1", "decision_id": "D9", "broker": "BRKA",
             "alloc_trans_type": "0", "alloc_type": "1", "quantity": "100", "avg_px": "1",
             "trade_date": "2026-11-20", "settl_date": "2026-11-23", "status": "pending_send",
             "created_at": NOW}
    db.save_allocation(decision, alloc, [])
    loaded = db.load_decision("D9")
    assert loaded is not None and loaded["canonical_json"] == document
    assert "canonical_zlib" not in loaded
    with db.engine.connect() as conn:
        text, packed = conn.execute(select(t.decisions.c.canonical_json,
                                           t.decisions.c.canonical_zlib)).one()
    assert text is None and len(bytes(packed)) * 5 < len(document)


def test_wire_records_read_back_whatever_form_they_were_stored_in(db: Database) -> None:
    """Bytes that do not compress are stored as they are; a record written before the
    preset dictionary (plain zlib, migration 0007) still reads back exactly."""
    import os
    import zlib

    from sqlalchemy import insert

    from gateway.persistence import tables as t

    noise = os.urandom(300)
    db.append_wire(session_id="S", direction="in", msg_type="8", seq_num=1, poss_dup=False,
                   raw=noise, ref_id="E1", recorded_at=NOW)
    old = b"8=FIX.4.4\x019=5\x0135=J\x0170=J0" + b"\x0179=SMA0001\x0180=100" * 50
    with db.engine.begin() as conn:
        conn.execute(insert(t.fix_messages).values(
            session_id="S", direction="in", msg_type="J", seq_num=2, poss_dup=False,
            raw=zlib.compress(old, 6), compressed=True, raw_len=len(old), ref_id="J0",
            recorded_at=NOW))
    by_type = {m["msg_type"]: m for m in db.wire_messages(session_id="S")}
    assert by_type["8"]["raw"] == noise and by_type["J"]["raw"] == old


def test_an_allocations_lines_are_exactly_its_own(db: Database) -> None:
    """Lines are found by their key's prefix on SQLite: an allocation whose id extends
    another's (J1 and J10) must not lend it lines, and updates touch only its own."""
    db.insert_order(_order())
    decision = {"decision_id": "D1", "order_id": "O1", "method": "pro_rata",
                "rulebook_version": "r1", "inputs_hash": "h", "config_hash": "c",
                "decided_at": NOW, "canonical_json": "{}"}
    for alloc_id in ("X-J1", "X-J10", "X-J1-"):
        alloc = {"alloc_id": alloc_id, "order_id": "O1", "decision_id": "D1",
                 "broker": "BRKA", "alloc_trans_type": "0", "alloc_type": "1",
                 "quantity": "300", "avg_px": "1", "trade_date": "2026-11-20",
                 "settl_date": "2026-11-23", "status": "sent", "created_at": NOW}
        lines = [{"individual_alloc_id": f"{alloc_id}-{i:05d}", "alloc_id": alloc_id,
                  "account_id": f"SMA{i:04d}", "qty": "100", "avg_px": "1",
                  "ticket_state": "awaiting_ak"} for i in range(1, 4)]
        db.save_allocation(decision, alloc, lines)
    assert [x["individual_alloc_id"] for x in db.load_allocation_lines("X-J1")] == [
        "X-J1-00001", "X-J1-00002", "X-J1-00003"]
    assert len(db.load_allocation_lines("X-J10")) == 3
    assert len(db.load_allocation_lines("X-J1-")) == 3
    db.update_lines("X-J1", ticket_state="affirmed")
    states = {x["alloc_id"]: x["ticket_state"]
              for a in ("X-J1", "X-J10", "X-J1-") for x in db.load_allocation_lines(a)}
    assert states == {"X-J1": "affirmed", "X-J10": "awaiting_ak", "X-J1-": "awaiting_ak"}
