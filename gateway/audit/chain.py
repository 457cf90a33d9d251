"""The tamper-evident record: every write to an audited row appends a hash-linked entry.

How it works. `install(engine)` listens to every INSERT, UPDATE and DELETE that goes
through SQLAlchemy on an audited table (every table of the schema but the chain's own).
After the statement runs, the rows it touched are read back exactly as stored and one
entry per row is appended to `audit_chain` in the same transaction: the SHA-256 of the
row's content (`row_hash`) and an `entry_hash` over the entry's fields and the previous
entry's hash. A row and its entry therefore commit or roll back together, and a write made
outside the gateway (the sqlite3 shell, psql) has no entry, or a stale one.

Order. Entries need one total order. On PostgreSQL the first audited write of a
transaction takes a transaction-scoped advisory lock, so writers queue at their first
write (before they hold any row lock, so no lock cycle is possible) and the head read
after it is the true head. On SQLite the write itself takes the database's write lock.

What verification proves (`verify`): the links (every entry follows the one before, none
missing, none moved, none edited) and the rows (each audited row's content equals the
hash in its latest entry; a row without an entry was inserted outside the gateway; an
entry whose row is gone was deleted outside it). An administrator who rewrites rows *and*
recomputes the whole chain after them is caught by the checkpoints exported to a file he
cannot change (chain_checkpoints.py).

Content hash. Columns that are NULL are left out, so a migration that adds a nullable
column does not change the hash of existing rows; a migration that rewrites rows is
followed by `adopt` (entries with op "adopt"), after a verification of the chain as it
stood, recorded in audit_events.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Table, event, select
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.elements import BinaryExpression, BindParameter
from sqlalchemy.sql.operators import eq

from gateway.persistence import audit_tables, lifecycle_tables, tables  # noqa: F401 (registers)

GENESIS = "0" * 64
_EXCLUDED = frozenset({"audit_chain", "audit_checkpoints"})
# Any constant: the key of the PostgreSQL advisory lock that orders the chain's writers.
_PG_LOCK_KEY = 0x66697861


def audited_tables() -> dict[str, Table]:
    """Every table of the schema but the chain's own, by name."""
    from gateway.notify import outbox  # noqa: F401 - its table is part of the schema

    return {name: tb for name, tb in sorted(tables.metadata.tables.items())
            if name not in _EXCLUDED}


def _pk(table: Table) -> str:
    cols = list(table.primary_key.columns)
    if len(cols) != 1:  # every table here has a one-column key; say so if that changes
        raise TypeError(f"{table.name}: the audit chain expects a one-column primary key")
    return cols[0].name


def _encode(value: Any) -> tuple[str, bytes]:
    if isinstance(value, bool):
        return "b", b"1" if value else b"0"
    if isinstance(value, int):
        return "i", str(value).encode()
    if isinstance(value, str):
        return "s", value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return "x", bytes(value)
    if isinstance(value, datetime):
        # psycopg gives aware datetimes in the session's time zone: hash the UTC instant
        # so a verifier in another zone sees the same content.
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return "t", value.isoformat().encode()
    if isinstance(value, float | Decimal):
        return "n", repr(value).encode()
    return "o", str(value).encode("utf-8")


def row_hash(table: str, columns: Sequence[str], values: Sequence[Any]) -> str:
    """SHA-256 of a row's non-NULL columns, sorted by name, each with a type tag."""
    digest = hashlib.sha256(table.encode() + b"\x1d")
    for name, value in sorted(zip(columns, values, strict=True)):
        if value is None:
            continue
        tag, payload = _encode(value)
        digest.update(f"{name}\x1f{tag}\x1f{len(payload)}\x1f".encode())
        digest.update(payload)
    return digest.hexdigest()


def entry_hash(seq: int, recorded_at: str, table: str, key: str, op: str,
               content_hash: str | None, prev_hash: str) -> str:
    text = "\x1f".join((str(seq), recorded_at, table, key, op, content_hash or "", prev_hash))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _mark(dialect: str) -> str:
    return "?" if dialect == "sqlite" else "%s"


def fetch_rows(conn: Connection, table: Table, keys: Sequence[Any]
               ) -> Iterator[tuple[str, str]]:
    """(row key, row hash) for the rows with these keys, read as stored."""
    if not keys:
        return
    mark, pk = _mark(conn.dialect.name), _pk(table)
    cur = conn.connection.cursor()
    try:
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            cur.execute(f"SELECT * FROM {table.name} WHERE {pk} IN "  # noqa: S608 - names from the schema
                        f"({','.join([mark] * len(chunk))})", chunk)
            columns = [d[0] for d in cur.description]
            at = columns.index(pk)
            for row in cur.fetchall():
                yield str(row[at]), row_hash(table.name, columns, row)
    finally:
        cur.close()


def scan_rows(conn: Connection, table: Table) -> Iterator[tuple[str, str]]:
    """(row key, row hash) for every row of `table`, streamed."""
    pk = _pk(table)
    cur = conn.connection.cursor()
    try:
        cur.execute(f"SELECT * FROM {table.name}")  # noqa: S608 - a name from the schema
        columns = [d[0] for d in cur.description]
        at = columns.index(pk)
        while batch := cur.fetchmany(2000):
            for row in batch:
                yield str(row[at]), row_hash(table.name, columns, row)
    finally:
        cur.close()


@dataclass
class Chain:
    """The listener's switch: off only while migrations run (their rows are adopted after)."""

    enabled: bool = True
    audited: dict[str, Table] = field(default_factory=audited_tables)
    # Benchmarks only (FIXALLOC_BENCH_AUDIT_CHAIN=off): measures what the chain costs the
    # live path. Rows written so are outside the chain, and `audit verify` says so.
    bench_off: bool = field(
        default_factory=lambda: os.environ.get("FIXALLOC_BENCH_AUDIT_CHAIN") == "off")

    @property
    def on(self) -> bool:
        return self.enabled and not self.bench_off


def _head(conn: Connection) -> tuple[int, str]:
    head: tuple[int, str] | None = conn.info.get("chain_head")
    if head is None:
        cur = conn.connection.cursor()
        try:
            cur.execute("SELECT seq, entry_hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
            row = cur.fetchone()
        finally:
            cur.close()
        head = (int(row[0]), str(row[1])) if row else (0, GENESIS)
    return head


def append(conn: Connection, table: str, op: str,
           rows: Iterable[tuple[str, str | None]]) -> int:
    """Append one entry per (key, content hash) after the head; returns how many."""
    seq, prev = _head(conn)
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    batch = []
    for key, content in rows:
        seq += 1
        digest = entry_hash(seq, at, table, key, op, content, prev)
        batch.append((seq, at, table, key, op, content, prev, digest))
        prev = digest
    if not batch:
        return 0
    mark = _mark(conn.dialect.name)
    cur = conn.connection.cursor()
    try:
        cur.executemany(
            "INSERT INTO audit_chain (seq, recorded_at, table_name, row_key, op, "  # noqa: S608
            f"content_hash, prev_hash, entry_hash) VALUES ({','.join([mark] * 8)})", batch)
    finally:
        cur.close()
    conn.info["chain_head"] = (seq, prev)
    return len(batch)


def _pk_literal(table: Table, where: Any) -> Any | None:
    """The key value when the where clause is exactly `pk == value`, else None."""
    if (isinstance(where, BinaryExpression) and where.operator is eq
            and getattr(where.left, "table", None) is table
            and where.left.name == _pk(table) and isinstance(where.right, BindParameter)):
        return where.right.effective_value
    return None


def _matching_keys(conn: Connection, table: Table, where: Any) -> list[Any]:
    key = _pk_literal(table, where)
    if key is not None:
        return [key]
    query = select(table.c[_pk(table)])
    if where is not None:
        query = query.where(where)
    return list(conn.execute(query).scalars())


def _inserted_keys(table: Table, stmt: Insert, multiparams: Any, result: Any) -> list[Any]:
    pk = _pk(table)
    params = multiparams[0] if multiparams and isinstance(multiparams[0], list) else multiparams
    if params and isinstance(params, list | tuple) and len(params) > 1:
        missing = [p for p in params if pk not in p]
        if missing:
            raise TypeError(f"{table.name}: a multi-row insert must carry its keys to be "
                            "chained")
        return [p[pk] for p in params]
    return [result.inserted_primary_key[0]]


def install(engine: Engine) -> Chain:
    """Chain every audited write made through `engine`."""
    chain = Chain()
    postgres = engine.dialect.name == "postgresql"

    def _reset(conn: Connection, *_: Any) -> None:
        conn.info.pop("chain_head", None)
        conn.info.pop("chain_locked", None)
        conn.info.pop("chain_pre", None)

    for name in ("begin", "commit", "rollback", "rollback_savepoint"):
        event.listen(engine, name, _reset)

    @event.listens_for(engine, "before_execute")
    def _before(conn: Connection, clause: Any, multiparams: Any, params: Any,
                options: Any) -> None:
        if not chain.on or not isinstance(clause, Insert | Update | Delete):
            return
        table = clause.table
        if not isinstance(table, Table) or table.name not in chain.audited:
            return
        if postgres and not conn.info.get("chain_locked"):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
            conn.info["chain_locked"] = True
            conn.info.pop("chain_head", None)  # read the head only once the lock is held
        if not isinstance(clause, Insert):
            # Keys first: the statement may change the very columns its where clause names.
            conn.info.setdefault("chain_pre", {})[id(clause)] = _matching_keys(
                conn, table, clause.whereclause)

    @event.listens_for(engine, "after_execute")
    def _after(conn: Connection, clause: Any, multiparams: Any, params: Any, options: Any,
               result: Any) -> None:
        if not chain.on or not isinstance(clause, Insert | Update | Delete):
            return
        table = clause.table
        if not isinstance(table, Table) or table.name not in chain.audited:
            return
        if isinstance(clause, Insert):
            keys = _inserted_keys(table, clause, multiparams, result)
            append(conn, table.name, "insert", fetch_rows(conn, table, keys))
            return
        keys = conn.info.get("chain_pre", {}).pop(id(clause), [])
        if isinstance(clause, Delete):
            append(conn, table.name, "delete", ((str(k), None) for k in keys))
        else:
            append(conn, table.name, "update", fetch_rows(conn, table, keys))

    return chain
