"""The tamper-evident record on SQLite and PostgreSQL: every write chained, every kind of
tampering (edit, delete, insert, reorder) on every audited table found and named."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from gateway.audit import chain
from gateway.audit.chain_checkpoints import check_exported, write_checkpoint
from gateway.audit.chain_seal import seal
from gateway.audit.chain_verify import verify
from gateway.notify.outbox import Outbox
from gateway.persistence.store import Database
from tests.support.postgres import create_database

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


def _order(order_id: str, book: str) -> dict[str, Any]:
    return {"order_id": order_id, "oms_session": "FIX.4.4:FIXALLOC->OMS1",
            "oms_cl_ord_id": f"C-{order_id}", "book": book, "symbol": "AAPL",
            "side": "buy", "order_qty": "1000", "ord_type": "2", "price": "190.25",
            "time_in_force": "0", "broker": "BRKA", "status": "new", "cum_qty": "0",
            "avg_px": "0", "leaves_qty": "1000", "trade_date": "2026-11-20",
            "created_at": NOW, "updated_at": NOW}


def populate(db: Database) -> None:
    """At least two rows in every audited table, written the way the gateway writes them."""
    for n in (1, 2):
        oid = f"O{n}"
        db.insert_order(_order(oid, f"BOOK{n}"))
        db.append_wire(session_id="S", direction="in", msg_type="D", seq_num=n,
                       poss_dup=False, raw=b"8=FIX.4.4\x0135=D\x0111=C\x01", ref_id=f"C-{oid}",
                       recorded_at=NOW)
        db.record_broker_report({
            "session_id": "S", "broker_order_id": f"B{n}", "exec_id": f"E{n}",
            "trade_date": "2026-11-20", "order_id": oid, "cl_ord_id": oid, "exec_type": "F",
            "ord_status": "2", "last_qty": "1000", "last_px": "190.01", "cum_qty": "1000",
            "avg_px": "190.01", "leaves_qty": "0", "text": None, "seq_num": n,
            "poss_dup": False, "received_at": NOW, "transact_time": None})
        db.update_order(oid, status="filled", cum_qty="1000", updated_at=NOW)
        alloc = f"A{n}"
        db.save_allocation(
            {"decision_id": f"D{n}", "order_id": oid, "method": "pro_rata",
             "rulebook_version": "r1", "inputs_hash": "h", "config_hash": "c",
             "decided_at": NOW, "canonical_json": '{"lines":[]}'},
            {"alloc_id": alloc, "order_id": oid, "decision_id": f"D{n}", "broker": "BRKA",
             "alloc_trans_type": "0", "alloc_type": "1", "quantity": "1000",
             "avg_px": "190.01", "trade_date": "2026-11-20", "settl_date": "2026-11-23",
             "status": "pending_send", "created_at": NOW},
            [{"individual_alloc_id": f"{alloc}-{i:05d}", "alloc_id": alloc,
              "account_id": f"ACC{i}", "qty": "500", "avg_px": "190.01",
              "ticket_state": "awaiting_ak"} for i in (1, 2)])
        db.update_allocation(alloc, status="sent", sent_at=NOW)
        db.update_lines(alloc, ticket_state="affirmed", affirmed_at=NOW)
        db.record_confirmation({
            "session_id": "S", "confirm_id": f"CF{n}", "trans_type": "0",
            "confirm_type": "2", "confirm_status": "4", "alloc_id": alloc,
            "individual_alloc_id": f"{alloc}-00001", "account_id": "ACC1",
            "economics_json": "{}", "outcome": "affirmed", "received_at": NOW})
        db.open_exception("missing_ak", reason="no AK", next_step="call", opened_at=NOW,
                          alloc_id=alloc, individual_alloc_id=f"{alloc}-00002")
        db.record_rejection(session_id="S", cl_ord_id=f"BAD{n}", trade_date="2026-11-20",
                            seq_num=n, order_id=None, reason_code="5", text="bad",
                            created_at=NOW)
        db.append_event("operator.resend", recorded_at=NOW, alloc_id=alloc,
                        detail={"actor": "ops"})
        db.save_rulebook_version(version=f"r{n}", loaded_at=NOW, actor="t", source="x",
                                 content_json="{}", diff_summary=None)
        db.save_refdata_version(version=f"v{n}", loaded_at=NOW, actor="t",
                                files={"a.csv": "x"}, diff_summary=None)
        db.save_sweep_report(trade_date="2026-11-20", checkpoint=f"1{n}:00", ran_at=NOW,
                             report={"n": n})
        Outbox(db).add([{
            "notification_id": f"N{n}", "kind": "exception_opened", "book": None,
            "route": 0, "channel": "webhook", "target": "http://127.0.0.1:9/h",
            "subject": "s", "summary_json": "{}", "body": "b", "state": "pending",
            "attempts": 0, "next_attempt_at": NOW, "created_at": NOW, "updated_at": NOW}])
    db.resolve_exceptions(at=NOW, by="ops", resolution="done", alloc_id="A1")
    _people(db)
    _approvals(db)


def _approvals(db: Database) -> None:
    """A held allocation with a vote for each block (gateway/approvals/)."""
    from gateway.approvals import records
    from gateway.persistence.approval_tables import approvals

    with db.engine.begin() as conn:
        for n in (1, 2):
            conn.execute(approvals.insert().values(
                alloc_id=f"A{n}", order_id=f"O{n}", decision_id=f"D{n}", state="pending",
                policies_json="[]", facts_json="{}", barred="OMS1", requested_at=NOW))
    for n in (1, 2):
        records.record_vote(db, {"alloc_id": f"A{n}", "actor": "alice", "roles": "pm",
                                 "vote": "approve", "reason": "", "voted_at": NOW},
                            "approved", decided_by="alice", at_=NOW)


def _people(db: Database) -> None:
    """Two users with a token and a session each (gateway/auth/). Inserted directly: the
    chain needs rows, not argon2's deliberately slow hashes."""
    from sqlalchemy import insert

    from gateway.persistence import auth_tables as at

    with db.engine.begin() as conn:
        for n in (1, 2):
            conn.execute(insert(at.users).values(
                username=f"user{n}", password_hash="$argon2id$v=19$stub", roles="viewer",
                enabled=True, created_at=NOW, password_changed_at=NOW))
            conn.execute(insert(at.api_tokens).values(
                token_id=f"fxt_{n}", username=f"user{n}", secret_hash="0" * 64, label="t",
                created_at=NOW))
            conn.execute(insert(at.auth_sessions).values(
                session_id=f"fxs_{n}", username=f"user{n}", secret_hash="1" * 64,
                csrf_token="c", created_at=NOW, expires_at=NOW))


def _pk(table: str) -> str:
    return chain._pk(chain.audited_tables()[table])


# -- the record kept by the gateway verifies -----------------------------------------------


@pytest.fixture
def populated(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    db.migrate()
    populate(db)
    assert db.count("audit_chain") == 0 and db.count("audit_pending") > 0  # noted, not sealed
    seal(db)
    assert db.count("audit_pending") == 0
    yield db
    db.dispose()


def test_every_audited_table_is_covered_and_the_record_verifies(populated: Database) -> None:
    result = verify(populated)
    assert result.ok, result.summary()
    for name in chain.audited_tables():
        assert populated.count(name) >= 2, f"{name} has no rows to tamper with"
    with populated.engine.connect() as conn:
        ops = dict(conn.execute(text("SELECT op, COUNT(*) FROM audit_chain GROUP BY op")).all())
    assert ops["insert"] >= 2 * len(chain.audited_tables())  # one seal: one entry a row
    # Each row's latest entry names it: rows == distinct keys in the chain.
    assert result.rows == sum(populated.count(name) for name in chain.audited_tables())


def test_a_rolled_back_write_leaves_no_entry(populated: Database) -> None:
    before = verify(populated).entries
    with pytest.raises(RuntimeError), populated.engine.begin() as conn:
        conn.execute(text("SELECT 1"))
        from sqlalchemy import update

        from gateway.persistence import tables as t
        conn.execute(update(t.orders).where(t.orders.c.order_id == "O1").values(status="x"))
        raise RuntimeError("abandon the transaction")
    assert seal(populated) == 0  # the note went with the transaction
    after = verify(populated)
    assert after.ok and after.entries == before


# -- tampering: every kind, every table (property-based over positions) --------------------


def _copy(kind: str, source: Database, pg_admin: str | None, n: int) -> Database:
    if kind == "sqlite":
        path = source.url.split("///", 1)[1]
        dest = f"{path}.{n}.db"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                shutil.copyfile(path + suffix, dest + suffix)
        return Database(f"sqlite:///{dest}")
    assert pg_admin is not None
    source.engine.dispose()  # a template database must have no other sessions
    name = source.url.rsplit("/", 1)[1]
    copy = f"{name}_c{n}"
    engine = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{copy}"'))
        conn.execute(text(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"'))
    engine.dispose()
    return Database(source.url.rsplit("/", 1)[0] + "/" + copy)


def _raw(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run SQL as someone with the database's file or a superuser's login would: outside
    the gateway (no audit chain) and with foreign keys not enforced."""
    if db.dialect == "sqlite":
        with sqlite3.connect(db.url.split("///", 1)[1]) as lite:  # the shell's defaults
            return list(lite.execute(sql, params).fetchall())
    with db.engine.begin() as conn:
        cur = conn.connection.cursor()
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute(sql.replace("?", "%s"), params)
        rows = cur.fetchall() if cur.description else []
        cur.close()
    return list(rows)


def _edit(db: Database, table: str, index: int) -> str:
    pk = _pk(table)
    keys = [r[0] for r in _raw(db, f"SELECT {pk} FROM {table} ORDER BY {pk}")]
    key = keys[index % len(keys)]
    cols = [c for c in chain.audited_tables()[table].columns
            if c.name != pk and c.type.python_type in (str, int)]
    col = cols[index % len(cols)]
    value = "Z" if col.type.python_type is str else 987654  # fits every column
    _raw(db, f"UPDATE {table} SET {col.name} = ? WHERE {pk} = ?", (value, key))
    return str(key)


def _delete(db: Database, table: str, index: int) -> str:
    pk = _pk(table)
    keys = [r[0] for r in _raw(db, f"SELECT {pk} FROM {table} ORDER BY {pk}")]
    key = keys[index % len(keys)]
    _raw(db, f"DELETE FROM {table} WHERE {pk} = ?", (key,))
    return str(key)


def _insert(db: Database, table: str, index: int) -> str:
    """A copy of an existing row under a new key: what a forger would add."""
    pk = _pk(table)
    tb = chain.audited_tables()[table]
    cols = [c.name for c in tb.columns]
    rows = _raw(db, f"SELECT {', '.join(cols)} FROM {table} ORDER BY {pk}")
    row = list(rows[index % len(rows)])
    at = cols.index(pk)
    row[at] = 900000 + index if tb.c[pk].type.python_type is int else f"{row[at]}-X{index}"
    unique = [c for c in ("oms_cl_ord_id", "exec_id", "confirm_id", "checkpoint")
              if c in cols]
    for c in unique:  # keep the copy clear of the table's unique constraints
        row[cols.index(c)] = f"X{index}" if c != "checkpoint" else f"0{index % 10}:5{index % 10}"
    _raw(db, f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
         tuple(row))
    return str(row[at])


def _reorder(db: Database, _table: str, index: int) -> str:
    """Swap the contents of two neighbouring chain entries (their seq stays)."""
    seqs = [r[0] for r in _raw(db, "SELECT seq FROM audit_chain ORDER BY seq")]
    a = seqs[index % (len(seqs) - 1)]
    cols = "recorded_at, table_name, row_key, op, content_hash, prev_hash, entry_hash"
    first = _raw(db, f"SELECT {cols} FROM audit_chain WHERE seq = ?", (a,))[0]
    second = _raw(db, f"SELECT {cols} FROM audit_chain WHERE seq = ?", (a + 1,))[0]
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    _raw(db, f"UPDATE audit_chain SET {sets} WHERE seq = ?", (*second, a))
    _raw(db, f"UPDATE audit_chain SET {sets} WHERE seq = ?", (*first, a + 1))
    return str(a)


TAMPER: dict[str, Callable[[Database, str, int], str]] = {
    "edit": _edit, "delete": _delete, "insert": _insert, "reorder": _reorder}
_counter = iter(range(10**6))


@settings(max_examples=int(os.environ.get("FIXALLOC_TAMPER_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.sampled_from(sorted(chain.audited_tables())),
       how=st.sampled_from(sorted(TAMPER)), index=st.integers(0, 50))
def test_any_tampering_is_found_and_named(populated: Database, request: pytest.FixtureRequest,
                                          table: str, how: str, index: int) -> None:
    kind = populated.dialect if populated.dialect == "sqlite" else "postgresql"
    admin = request.getfixturevalue("pg_admin_url") if kind == "postgresql" else None
    copy = _copy(kind, populated, admin, next(_counter))
    try:
        key = TAMPER[how](copy, table, index)
        result = verify(copy)
        assert not result.ok, f"{how} on {table} {key} went unnoticed"
        assert result.first_break is not None
        named = result.first_break.describe()
        if how == "reorder":
            assert result.first_break.seq == int(key), named
        else:
            assert any(b.table == table and b.key == key for b in result.problems), named
    finally:
        copy.dispose()


# -- checkpoints: a rewritten chain ---------------------------------------------------------


def _rewrite_from(db: Database, seq: int) -> None:
    """Recompute every entry from `seq` on, as an administrator covering an edit would."""
    rows = _raw(db, "SELECT seq, recorded_at, table_name, row_key, op, content_hash, "
                    "prev_hash FROM audit_chain WHERE seq >= ? ORDER BY seq", (seq,))
    before = _raw(db, "SELECT entry_hash FROM audit_chain WHERE seq = ?", (seq - 1,))
    prev = before[0][0] if before else chain.GENESIS
    for s, at, table, key, op, stored, _old in rows:
        content = stored
        if op != "delete":
            tb = chain.audited_tables()[table]
            with db.engine.connect() as conn:
                typed = int(key) if tb.c[_pk(table)].type.python_type is int else key
                found = list(chain.fetch_rows(conn, tb, [typed]))
            content = found[0][1] if found else content
        digest = chain.entry_hash(int(s), at, table, key, op, content, prev)
        _raw(db, "UPDATE audit_chain SET content_hash = ?, prev_hash = ?, entry_hash = ? "
                 "WHERE seq = ?", (content, prev, digest, s))
        prev = digest


def test_a_chain_rewritten_after_an_edit_is_caught_by_the_exported_checkpoints(
        populated: Database, tmp_path: Path) -> None:
    export, key = tmp_path / "checkpoints.jsonl", b"k" * 32
    entry = write_checkpoint(populated, export=export, key=key, where="test")
    assert entry is not None and check_exported(populated, export, key) == []
    _raw(populated, "UPDATE orders SET order_qty = '2000' WHERE order_id = 'O1'")
    first = _raw(populated, "SELECT MIN(seq) FROM audit_chain WHERE table_name = 'orders' "
                            "AND row_key = 'O1'")[0][0]
    _rewrite_from(populated, int(first))
    assert verify(populated).ok  # the rewrite is consistent in itself...
    problems = check_exported(populated, export, key)  # ...but not with what was shipped
    assert len(problems) == 1 and "rewritten" in problems[0], problems
    # A forged checkpoint line (its hash changed to the rewritten head) fails its signature.
    line = json.loads(export.read_text())
    line["head_hash"] = _raw(populated, "SELECT entry_hash FROM audit_chain WHERE seq = ?",
                             (line["seq"],))[0][0]
    export.write_text(json.dumps(line) + "\n")
    assert "signature" in check_exported(populated, export, key)[0]


def test_a_chain_cut_short_is_caught_by_the_exported_checkpoints(
        populated: Database, tmp_path: Path) -> None:
    export = tmp_path / "checkpoints.jsonl"
    entry = write_checkpoint(populated, export=export, where="test")
    assert entry is not None
    _raw(populated, "DELETE FROM audit_chain WHERE seq >= ?", (entry["seq"] - 1,))
    assert any("cut short" in p for p in check_exported(populated, export))


# -- as a user runs it on the demo's record ---------------------------------------------------


@pytest.mark.fix
def test_verify_passes_on_the_demo_and_fails_naming_a_row_edited_in_the_sqlite3_shell(
        demo_copy: tuple[Path, dict[str, Any]]) -> None:
    import subprocess
    import sys

    state, summary = demo_copy

    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "audit", *args,
                               "--state-dir", str(state)],
                              capture_output=True, text=True, timeout=120, check=False)

    ok = audit("verify")
    assert ok.returncode == 0, ok.stderr
    assert "audit chain intact" in ok.stdout
    line = f"{summary['alloc_id']}-00003"
    edit = subprocess.run(
        ["sqlite3", str(state / "gateway" / "fixalloc.db"),
         f"UPDATE allocation_lines SET qty = qty + 100 WHERE individual_alloc_id = '{line}';"],
        capture_output=True, text=True, timeout=30, check=False)
    assert edit.returncode == 0, edit.stderr
    broken = audit("verify")
    assert broken.returncode == 1
    assert f"allocation_lines {line}): row differs from its latest entry" in broken.stdout
    assert audit("verify", "--from", "2026-13-01").returncode == 2


def test_a_missing_state_dir_is_a_config_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--state-dir",
                             str(tmp_path / "nothing")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 78 and "no gateway database" in result.stderr
    assert "Traceback" not in result.stderr


# -- the daemon's watch -------------------------------------------------------------------------


def test_the_watch_raises_an_alert_on_a_break_and_writes_no_checkpoint_over_it(
        populated: Database, tmp_path: Path) -> None:
    from gateway.alerts import Alerts
    from gateway.audit.chain_watch import INTACT, ChainWatch
    from gateway.audit.settings import AuditSettings
    from gateway.clock import SystemClock

    export = tmp_path / "cp.jsonl"
    watch = ChainWatch(populated, AuditSettings(verify_every_minutes=0), Alerts(
        populated, SystemClock()), checkpoint_file=export, key_file=None, where="t")
    assert watch.check().ok and INTACT._value.get() == 1
    assert len(export.read_text().splitlines()) == 1
    _raw(populated, "UPDATE decisions SET method = 'Z' WHERE decision_id = 'D2'")
    result = watch.check()
    assert not result.ok and INTACT._value.get() == 0
    [alert] = populated.events("alert.audit_chain_broken")
    assert "decisions D2" in json.loads(alert["detail_json"])["first_break"]
    assert len(export.read_text().splitlines()) == 1  # nothing vouches for the break


# -- PostgreSQL: the daemon's role adds to the record but cannot rewrite it ------------------


@pytest.mark.postgres
def test_the_daemon_role_writes_through_the_gateway_but_cannot_rewrite_the_record(
        pg_admin_url: str) -> None:
    from sqlalchemy.exc import ProgrammingError

    from gateway.audit.pg_role import APPEND_ONLY, grants_sql

    role = f"fixalloc_daemon_{os.getpid()}"
    url = create_database(pg_admin_url, f"role_{os.getpid()}")
    owner = Database(url)
    owner.migrate()
    with owner.engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        for statement in grants_sql(role):
            conn.execute(text(statement))
    owner.dispose()
    daemon = Database(url.replace("//fixalloc@", f"//{role}@"))
    try:
        populate(daemon)  # every kind of write the gateway makes
        seal(daemon)
        assert verify(daemon).ok
        for table in APPEND_ONLY:
            pk = "seq" if table == "audit_chain" else _pk(table)
            for sql in (f"UPDATE {table} SET {pk} = {pk}", f"DELETE FROM {table}"):
                with pytest.raises(ProgrammingError, match="permission denied"), \
                        daemon.engine.begin() as conn:
                    conn.exec_driver_sql(sql)
        with daemon.engine.begin() as conn:  # state tables stay writable (and chained)
            conn.exec_driver_sql("UPDATE orders SET status = status")
    finally:
        daemon.dispose()
        cleanup = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
        with cleanup.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "role_{os.getpid()}"'))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        cleanup.dispose()


def test_rows_written_since_the_last_seal_are_counted_not_compared_then_sealed(
        populated: Database) -> None:
    """Between a write and its seal the row is reported as pending, not as a break; a row
    noted several times gets one entry with its content at the seal."""
    for status in ("a", "b", "c"):
        populated.update_order("O1", status=status, updated_at=NOW)
    waiting = verify(populated)
    assert waiting.ok and waiting.pending == 1, waiting.summary()
    entries = waiting.entries
    assert seal(populated) == 3
    sealed = verify(populated)
    assert sealed.ok and sealed.pending == 0 and sealed.entries == entries + 1
