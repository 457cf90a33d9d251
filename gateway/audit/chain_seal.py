"""The sealer: turns the live path's notes (`audit_pending`) into chain entries.

Sealing reads the notes in order, reads each noted row as it is stored now, appends one
entry per row (a row noted several times since the last seal gets one entry with its
current content) and deletes exactly the notes it sealed, all in one transaction. The
live path therefore pays one small insert per write, and the hashing, the chain's head
and its index are paid here, in batches, off the FIX and dispatcher threads.

The daemon seals every 0.2 s (ChainSealer), once at start-up (notes left by a crash or by
a command run while it was down) and once more when it stops.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import Connection

from gateway.audit import chain
from gateway.persistence.store import Database

log = structlog.get_logger("fixalloc.audit")

BATCH = 5000


def _typed(table: Any, keys: Sequence[str]) -> list[Any]:
    pk = table.primary_key.columns[chain._pk(table)]
    return [int(k) for k in keys] if pk.type.python_type is int else list(keys)


def _read(conn: Connection) -> tuple[list[int], list[tuple[str, str, str, str | None]]]:
    """The notes' ids and the entries they make: (table, key, op, content hash)."""
    cur = conn.connection.cursor()
    try:
        cur.execute("SELECT id, table_name, row_key, op FROM audit_pending "  # noqa: S608
                    f"ORDER BY id LIMIT {BATCH}")
        notes = cur.fetchall()
    finally:
        cur.close()
    # One entry per row, in the order of its first note since the last seal.
    order: dict[tuple[str, str], str] = {}
    for _id, table, key, op in notes:
        first = order.get((table, key))
        order[(table, key)] = op if first is None else ("insert" if first == "insert"
                                                        else op)
    tables = chain.audited_tables()
    hashes: dict[tuple[str, str], str] = {}
    for name in {t for t, _ in order}:
        keys = [k for t, k in order if t == name]
        for key, digest in chain.fetch_rows(conn, tables[name], _typed(tables[name], keys)):
            hashes[(name, key)] = digest
    entries = []
    for (table, key), noted in order.items():
        content = hashes.get((table, key))
        op = noted
        if content is None:
            op = "delete"  # gone by now, whatever the notes said
        elif noted == "delete":
            op = "insert"  # deleted and written again since the last seal
        entries.append((table, key, op, content))
    return [int(n[0]) for n in notes], entries


class _Taken(Exception):
    """Another sealer sealed some of the notes first: roll back and read again."""


def _write(conn: Connection, ids: list[int], entries: list[tuple[str, str, str, str | None]]
           ) -> None:
    """Delete the notes and append their entries (_Taken if another sealer took them)."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    gone = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        # Through SQLAlchemy: the first write takes the store's SQLite writer lock.
        gone += conn.exec_driver_sql(
            f"DELETE FROM audit_pending WHERE id IN ({','.join([mark] * len(chunk))})",  # noqa: S608
            tuple(chunk)).rowcount
    if gone != len(ids):
        raise _Taken
    chain.begin_appending(conn)
    chain.append_entries(conn, entries)


def seal(db: Database) -> int:
    """Seal every note there is now; returns how many notes were sealed.

    The notes are read and their rows hashed outside any write transaction; the write
    transaction only deletes the notes and appends the entries, so the live path's
    writers wait for the sealer as briefly as possible. A row written again in between
    has a newer note, which the next seal records.
    """
    total = 0
    while True:
        with db.engine.connect() as conn:
            ids, entries = _read(conn)
        if not ids:
            return total
        try:
            with db.engine.begin() as conn:
                _write(conn, ids, entries)
        except _Taken:
            continue  # another sealer (a command, say) sealed some of them: read again
        total += len(ids)
        if len(ids) < BATCH:
            return total


class ChainSealer:
    """A daemon thread that seals every `interval` seconds until stopped."""

    def __init__(self, db: Database, interval: float = 0.2) -> None:
        self._db = db
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        seal(self._db)
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                seal(self._db)
            except Exception as exc:  # the next round tries again; the notes stay
                log.error("audit.seal_failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            seal(self._db)
        except Exception as exc:
            log.error("audit.seal_failed", error=f"{type(exc).__name__}: {exc}")
