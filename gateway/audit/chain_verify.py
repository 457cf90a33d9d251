"""Check the tamper-evident record, and adopt rows into it after a schema migration.

`verify(db)` walks the whole chain in order (links, sequence, entry hashes), then reads
every audited row and compares it with its latest entry. Every problem found is kept; the
first in chain order is the one named (`first_break`). `verify(db, since=...)` checks the
links from the first entry recorded at or after `since` and the rows those entries cover:
the quick check the daemon runs at start-up and on its schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from gateway.audit import chain
from gateway.persistence.store import Database


@dataclass(frozen=True)
class Break:
    seq: int | None  # the entry that breaks (None: a row that has no entry at all)
    table: str
    key: str
    problem: str

    def describe(self) -> str:
        where = f"entry #{self.seq}" if self.seq is not None else "no entry"
        return f"{where} ({self.table} {self.key}): {self.problem}"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    rows: int
    head_seq: int | None
    head_hash: str | None
    first_break: Break | None = None
    breaks: int = 0
    checkpoint: dict[str, Any] | None = None
    since: str | None = None
    adopted: int = 0  # entries with op "adopt" (rows taken in after a migration)
    pending: int = 0  # rows written but not sealed yet: not compared
    problems: list[Break] = field(default_factory=list)

    def summary(self) -> str:
        scope = f"since {self.since}" if self.since else "whole chain"
        head = (f"head #{self.head_seq} {self.head_hash[:16]}" if self.head_hash
                else "empty chain")
        unsealed = (f"; {self.pending} row(s) written since the last seal not compared"
                    if self.pending else "")
        if self.ok:
            return (f"audit chain intact ({scope}): {self.entries} entries, {self.rows} "
                    f"rows checked, {head}{unsealed}")
        assert self.first_break is not None
        return (f"audit chain BROKEN ({scope}): {self.breaks} problem(s); first: "
                f"{self.first_break.describe()}")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "rows": self.rows,
                "head_seq": self.head_seq, "head_hash": self.head_hash,
                "since": self.since, "adopted": self.adopted, "pending": self.pending,
                "breaks": self.breaks,
                "first_break": None if self.first_break is None else {
                    "seq": self.first_break.seq, "table": self.first_break.table,
                    "key": self.first_break.key, "problem": self.first_break.problem,
                    "text": self.first_break.describe()},
                "problems": [b.describe() for b in self.problems[:50]],
                "checkpoint": self.checkpoint, "summary": self.summary()}


_COLUMNS = "seq, recorded_at, table_name, row_key, op, content_hash, prev_hash, entry_hash"


def _first_since(cur: Any, mark: str, since: str) -> int | None:
    """The first entry recorded at or after `since`, by bisecting seq (entries are appended
    in time order; a wall-clock step back only moves the start by the entries it spans)."""
    cur.execute("SELECT MIN(seq), MAX(seq) FROM audit_chain")
    low, high = cur.fetchone() or (None, None)
    if low is None or high is None:
        return None
    low, high = int(low), int(high) + 1  # answer in [low, high]; high: none
    while low < high:
        mid = (low + high) // 2
        cur.execute(f"SELECT recorded_at FROM audit_chain WHERE seq >= {mark} "  # noqa: S608
                    "ORDER BY seq LIMIT 1", (mid,))
        row = cur.fetchone()
        if row is not None and row[0] >= since:
            high = mid
        else:
            low = mid + 1
    cur.execute(f"SELECT MIN(seq) FROM audit_chain WHERE seq >= {mark}", (low,))  # noqa: S608
    (first,) = cur.fetchone() or (None,)
    return None if first is None else int(first)


def _entries(conn: Connection, since: str | None) -> tuple[Any, Any]:
    """A cursor over the entries in order, and the entry just before the first one."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    before = None
    cur = conn.connection.cursor()
    if since is None:
        cur.execute(f"SELECT {_COLUMNS} FROM audit_chain ORDER BY seq")  # noqa: S608
        return cur, before
    first = _first_since(cur, mark, since)
    if first is not None and first > 1:
        cur.execute(f"SELECT {_COLUMNS} FROM audit_chain WHERE seq = {mark}",  # noqa: S608
                    (first - 1,))
        before = cur.fetchone()
    cur.execute(f"SELECT {_COLUMNS} FROM audit_chain WHERE seq >= {mark} ORDER BY seq",  # noqa: S608
                (first if first is not None else 2**62,))
    return cur, before


Latest = dict[tuple[str, str], tuple[int, str, str | None]]
"""(table, row key) -> (seq, op, content hash) of the row's latest entry."""


def _walk(conn: Connection, since: str | None, problems: list[Break]
          ) -> tuple[int, int, tuple[int, str] | None, Latest]:
    """Check the links; return (entries, adopted, head, latest entry per row)."""
    cur, before = _entries(conn, since)
    latest: Latest = {}
    expected_seq, prev = (1, chain.GENESIS) if before is None else (int(before[0]) + 1,
                                                                      str(before[7]))
    count = adopted = 0
    head = None
    try:
        while batch := cur.fetchmany(5000):
            for raw_seq, at, table, key, op, content, prev_hash, digest in batch:
                seq = int(raw_seq)
                count += 1
                if seq != expected_seq:
                    problems.append(Break(seq, table, key, f"sequence jumps from "
                                          f"#{expected_seq - 1} to #{seq}: entries "
                                          "deleted or inserted"))
                if prev_hash != prev:
                    problems.append(Break(seq, table, key, "does not link to the entry "
                                          "before it (an entry was deleted, inserted or "
                                          "moved)"))
                if chain.entry_hash(seq, at, table, key, op, content, prev_hash) != digest:
                    problems.append(Break(seq, table, key, "the entry itself was edited "
                                          "(its hash does not match its fields)"))
                adopted += op == "adopt"
                latest[(table, key)] = (seq, op, content)
                expected_seq, prev = seq + 1, digest
                head = (seq, digest)
    finally:
        cur.close()
    return count, adopted, head, latest


def _pending(conn: Connection) -> set[tuple[str, str]]:
    cur = conn.connection.cursor()
    try:
        cur.execute("SELECT table_name, row_key FROM audit_pending")
        return {(str(t), str(k)) for t, k in cur.fetchall()}
    finally:
        cur.close()


def _compare_rows(conn: Connection, latest: Latest, whole: bool, problems: list[Break],
                  pending: set[tuple[str, str]]) -> int:
    rows = 0
    for name, table in chain.audited_tables().items():
        if whole:
            seen = chain.scan_rows(conn, table)
        else:
            keys = [k for (tb, k) in latest if tb == name]
            seen = _rows_by_key(conn, table, keys)
        present = set()
        for key, digest in seen:
            present.add(key)
            if (name, key) in pending:
                continue  # written since the last seal: its entry is still to come
            rows += 1
            entry = latest.get((name, key))
            if entry is None:
                if whole:
                    problems.append(Break(None, name, key, "row is not in the chain: "
                                          "inserted outside the gateway"))
            elif entry[1] == "delete":
                problems.append(Break(entry[0], name, key, "row was deleted in the chain "
                                      "but is present: re-inserted outside the gateway"))
            elif entry[2] != digest:
                problems.append(Break(entry[0], name, key, "row differs from its latest "
                                      "entry: edited outside the gateway"))
        for (tb, key), (seq, op, _content) in latest.items():
            if tb == name and op != "delete" and key not in present \
                    and (tb, key) not in pending:
                problems.append(Break(seq, name, key, "row is missing: deleted outside "
                                      "the gateway"))
    return rows


def _rows_by_key(conn: Connection, table: Any, keys: list[str]) -> Any:
    # Keys are kept as text; integer keys are compared as integers.
    pk = table.primary_key.columns[chain._pk(table)]
    typed = [int(k) for k in keys] if pk.type.python_type is int else keys
    return chain.fetch_rows(conn, table, typed)


def latest_checkpoint(conn: Connection) -> dict[str, Any] | None:
    cur = conn.connection.cursor()
    try:
        cur.execute("SELECT seq, head_hash, written_at FROM audit_checkpoints "
                    "ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
    finally:
        cur.close()
    return None if row is None else {"seq": int(row[0]), "head_hash": row[1],
                                     "written_at": row[2]}


def verify(db: Database, *, since: datetime | None = None) -> VerifyResult:
    """Check the links and the rows (everything, or what was recorded since `since`)."""
    since_text = since.astimezone(UTC).isoformat() if since is not None else None
    problems: list[Break] = []
    with db.engine.connect() as conn:
        pending = _pending(conn)
        entries, adopted, head, latest = _walk(conn, since_text, problems)
        rows = _compare_rows(conn, latest, since is None, problems, pending)
        checkpoint = latest_checkpoint(conn)
    problems.sort(key=lambda b: (b.seq is None, b.seq or 0))
    return VerifyResult(
        ok=not problems, entries=entries, rows=rows,
        head_seq=head[0] if head else None, head_hash=head[1] if head else None,
        first_break=problems[0] if problems else None, breaks=len(problems),
        checkpoint=checkpoint, since=since_text, adopted=adopted,
        pending=len(pending), problems=problems)


def adopt(db: Database) -> int:
    """Append `adopt` entries for rows whose content has no matching entry (after a
    migration rewrote or added rows), and `delete` entries for rows a migration removed."""
    added = 0
    with db.engine.begin() as conn:
        chain.begin_appending(conn)
        _count, _adopted, _head, latest = _walk(conn, None, [])
        for name, table in chain.audited_tables().items():
            changed: list[tuple[str, str | None]] = []
            present = set()
            for key, digest in chain.scan_rows(conn, table):
                present.add(key)
                entry = latest.get((name, key))
                if entry is None or entry[1] == "delete" or entry[2] != digest:
                    changed.append((key, digest))
            added += chain.append(conn, name, "adopt", changed)
            gone = [(k, None) for (tb, k), e in latest.items()
                    if tb == name and e[1] != "delete" and k not in present]
            added += chain.append(conn, name, "delete", gone)
    return added
