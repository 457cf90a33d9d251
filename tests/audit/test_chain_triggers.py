"""The live path's notes come from triggers: every audited table has them, every write
the gateway makes through any kind of statement is noted, and no other connection's is."""

from __future__ import annotations

import sqlite3

from sqlalchemy import create_engine, text

from gateway.audit import chain
from gateway.audit.chain_seal import seal
from gateway.audit.chain_verify import verify
from gateway.persistence.store import Database
from tests.audit.test_chain import NOW, _order


def _gateway_db(url: str) -> Database:
    db = Database(url)
    db.migrate()
    db.insert_order(_order("O1", "BOOK1"))
    seal(db)
    return db


def test_every_audited_table_has_its_note_trigger(database_url: str) -> None:
    db = _gateway_db(database_url)
    audited = set(chain.audited_tables())
    with db.engine.connect() as conn:
        if db.dialect == "sqlite":
            names = set(conn.exec_driver_sql(
                "SELECT name FROM sqlite_temp_master WHERE type = 'trigger'").scalars())
            expected = {f"fixalloc_note_{t}_{k}" for t in audited for k in "iud"}
        else:
            names = {f"{t}:{n}" for t, n in conn.exec_driver_sql(
                "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c "
                "ON c.oid = t.tgrelid WHERE NOT t.tgisinternal")}
            expected = {f"{t}:fixalloc_note" for t in audited}
    assert expected - names == set(), "audited tables whose writes would not be noted"
    db.dispose()


def test_a_write_in_plain_sql_through_the_gateway_is_chained(database_url: str) -> None:
    # The notes once came from a listener on SQLAlchemy's insert/update/delete constructs:
    # a statement written as text went unnoted and verified as an edit from outside.
    db = _gateway_db(database_url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET status = 'filled', cum_qty = '1000' "
                          "WHERE book = 'BOOK1'"))
        conn.exec_driver_sql("DELETE FROM orders WHERE order_id = 'nobody'")
    with db.engine.connect() as conn:
        noted = list(conn.exec_driver_sql(
            "SELECT table_name, row_key, op FROM audit_pending"))
    assert [tuple(n) for n in noted] == [("orders", "O1", "update")]
    seal(db)
    result = verify(db)
    assert result.ok, result.summary()
    db.dispose()


def test_a_connection_that_is_not_the_gateways_leaves_no_note(database_url: str) -> None:
    db = _gateway_db(database_url)
    sql = "UPDATE orders SET price = '1.00' WHERE order_id = 'O1'"
    if db.dialect == "sqlite":
        with sqlite3.connect(db.url.split("///", 1)[1]) as lite:  # the shell's defaults
            lite.execute(sql)
    else:
        outsider = create_engine(db.url)  # psql, say: the schema's triggers, unarmed
        with outsider.begin() as conn:
            conn.execute(text(sql))
        outsider.dispose()
    assert db.count("audit_pending") == 0
    seal(db)
    result = verify(db)
    assert not result.ok
    assert result.first_break is not None
    assert (result.first_break.table, result.first_break.key) == ("orders", "O1")
    assert "edited outside the gateway" in result.first_break.problem
    db.dispose()


def test_writes_during_a_migration_are_adopted_not_noted(database_url: str) -> None:
    db = _gateway_db(database_url)
    assert db.chain.armed
    db.chain.enabled = False
    db.engine.dispose()
    with db.engine.begin() as conn:  # a connection opened while off, as a migration's
        conn.exec_driver_sql("UPDATE orders SET price = '2.00' WHERE order_id = 'O1'")
    db.chain.enabled = True
    db.engine.dispose()
    assert db.count("audit_pending") == 0
    db.update_order("O1", status="filled", updated_at=NOW)  # armed again
    assert db.count("audit_pending") == 1
    db.dispose()
