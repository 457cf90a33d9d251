"""The tamper-evident record: every write to an audited row ends up as a hash-linked entry.

How it works. Every INSERT, UPDATE and DELETE the gateway makes on an audited table
(every table of the schema but the chain's own) leaves a note of the row's key in
`audit_pending`, in the same transaction, written by a trigger (chain_triggers.py says
how only the gateway's connections note). The sealer
(chain_seal.py; a daemon thread, every 0.2 s) reads the notes in order, reads each row as
stored, and appends one entry per row to `audit_chain`: the SHA-256 of the row's content
(`row_hash`) and an `entry_hash` over the entry's fields and the previous entry's hash.
A write made outside the gateway (the sqlite3 shell, psql) has no note, so its row keeps
a stale entry, or none.

What verification proves (chain_verify.py): the links (every entry follows the one
before, none missing, none moved, none edited) and the rows (each audited row's content
equals the hash in its latest entry; a row without an entry was inserted outside the
gateway; an entry whose row is gone was deleted outside it). An administrator who
rewrites rows *and* recomputes the chain after them is caught by the checkpoints exported
to a file he cannot change (chain_checkpoints.py). What it cannot prove is in
docs/audit.md: an edit made in the fraction of a second before its row is sealed, or
just before the gateway itself writes the same row again, is sealed with the row.

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
from typing import Any

from sqlalchemy import Connection, Engine, Table, event

from gateway.persistence import (  # noqa: F401 (registers their tables)
    approval_tables,
    audit_tables,
    auth_tables,
    lifecycle_tables,
    tables,
)

GENESIS = "0" * 64
_EXCLUDED = frozenset({"audit_chain", "audit_checkpoints", "audit_pending"})
# Any constant: the key of the PostgreSQL advisory lock that lets one sealer at a time
# append (the daemon's, `fixalloc audit seal`, a migration's adoption).
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


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        # psycopg gives aware datetimes in the session's time zone: hash the UTC instant
        # so a verifier in another zone sees the same content.
        return value.astimezone(UTC)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


_PLAIN = (str, int, bytes, float)


def row_hash(table: str, columns: Sequence[str], values: Sequence[Any]) -> str:
    """SHA-256 of a row's non-NULL columns, sorted by name.

    Each value is written as Python's repr, which carries its type ('1' and 1 and b'1'
    differ); it is computed on every audited write, so it is kept to one C-level pass.
    """
    pairs = sorted((name, v if type(v) in _PLAIN else _canonical(v))
                   for name, v in zip(columns, values, strict=True) if v is not None)
    return hashlib.sha256(f"{table}\x1d{pairs!r}".encode("utf-8", "surrogatepass")).hexdigest()


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
            where = f"= {mark}" if len(chunk) == 1 else f"IN ({','.join([mark] * len(chunk))})"
            cur.execute(f"SELECT * FROM {table.name} WHERE {pk} {where}", chunk)  # noqa: S608
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
    """The notes' switch: off only while migrations run (their rows are adopted after)."""

    enabled: bool = True
    audited: dict[str, Table] = field(default_factory=audited_tables)
    # Benchmarks only (FIXALLOC_BENCH_AUDIT_CHAIN=off): measures what the chain costs the
    # live path. Rows written so are outside the chain, and `audit verify` says so.
    bench_off: bool = field(
        default_factory=lambda: os.environ.get("FIXALLOC_BENCH_AUDIT_CHAIN") == "off")

    armed: bool = False  # this engine's connections note their writes
    # A transaction of this engine committed while armed, so it may have left notes:
    # Database.dispose seals them (a command that only reads, like `audit verify`, does
    # not write to the chain on its way out).
    committed: bool = False

    @property
    def on(self) -> bool:
        return self.enabled and not self.bench_off


def begin_appending(conn: Connection) -> None:
    """Take the appenders' lock (PostgreSQL) and forget any head read in an earlier
    transaction of this connection; call first in every transaction that appends."""
    conn.info.pop("chain_head", None)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")


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
    return append_entries(conn, [(table, key, op, content) for key, content in rows])


def append_entries(conn: Connection,
                   entries: Sequence[tuple[str, str, str, str | None]]) -> int:
    """Append (table, key, op, content hash) entries after the head, in one statement."""
    if not entries:
        return 0
    seq, prev = _head(conn)
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    batch = []
    for table, key, op, content in entries:
        seq += 1
        digest = entry_hash(seq, at, table, key, op, content, prev)
        batch.append((seq, at, table, key, op, content, prev, digest))
        prev = digest
    mark = _mark(conn.dialect.name)
    cur = conn.connection.cursor()
    sql = ("INSERT INTO audit_chain (seq, recorded_at, table_name, row_key, op, "  # noqa: S608
           f"content_hash, prev_hash, entry_hash) VALUES ({','.join([mark] * 8)})")
    try:
        if len(batch) == 1:
            cur.execute(sql, batch[0])
        else:
            cur.executemany(sql, batch)
    finally:
        cur.close()
    conn.info["chain_head"] = (seq, prev)
    return len(batch)


def install(engine: Engine) -> Chain:
    """Make every connection `engine` opens note its audited writes (chain_triggers.py)."""
    from gateway.audit import chain_triggers

    chain = Chain()
    if chain.bench_off:
        import structlog

        structlog.get_logger("fixalloc.audit").warning(
            "audit.chain_off", reason="FIXALLOC_BENCH_AUDIT_CHAIN=off (benchmarks only): "
            "rows written now are outside the tamper-evident record")
    chain_triggers.arm(engine, chain, chain.audited, _pk)

    @event.listens_for(engine, "commit")
    def _committed(_conn: Connection) -> None:
        chain.committed = chain.armed

    return chain
