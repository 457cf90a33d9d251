"""The gateway's database: append-only FIX/audit records plus the order and allocation state.

One `Database` serves every thread: the quickfix threads append wire records and fills
(synchronously, before their callbacks return), and the dispatcher writes orders and
allocations. Each write is its own short transaction. SQLite runs in WAL mode with
`synchronous=FULL` by default so a committed row survives power loss; PostgreSQL is the
production backend and runs the same code.
"""

from __future__ import annotations

import enum
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from gateway.persistence import tables as t
from gateway.persistence.blotter_store import BlotterQueries
from gateway.persistence.lifecycle_store import LifecycleRecords
from gateway.persistence.records import _INSERT_WIRE, AuditRecords, wire_text
from gateway.persistence.retry import transient as _transient

__all__ = ["Database", "OrderGone", "RecordedReport", "ReportOutcome", "wire_text"]


def _count_block(conn: Connection, order_id: str) -> None:
    """One more block allocated for the order's book (in the allocation's transaction)."""
    book = conn.execute(select(t.orders.c.book).where(t.orders.c.order_id == order_id)).scalar()
    if book is None:
        return
    bumped = conn.execute(update(t.book_rotations).where(t.book_rotations.c.book == book)
                          .values(blocks=t.book_rotations.c.blocks + 1))
    if not bumped.rowcount:
        conn.execute(insert(t.book_rotations).values(book=book, blocks=1))


# The live path's statements, compiled once; each execution only binds its parameters
# (building them with .values() per message cost more than SQLite's own work).
_INSERT_REPORT = insert(t.broker_reports)
_UPDATE_ORDER = update(t.orders).where(t.orders.c.order_id == bindparam("key_order_id"))
_MARK_RELAYED = update(t.broker_reports).where(t.broker_reports.c.id == bindparam("key_id"))
_ORDER_TRADE_DATE = select(t.orders.c.trade_date).where(
    t.orders.c.order_id == bindparam("key_order_id"))
_UPDATE_ALLOCATION = update(t.allocations).where(
    t.allocations.c.alloc_id == bindparam("key_alloc_id"))
_TRADE_DATES_KEPT = 100_000


class OrderGone(LookupError):
    """An ER named an order whose row is no longer stored (archived after it was seen)."""


class ReportOutcome(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"  # same key, different economics: alert, never apply


@dataclass(frozen=True)
class RecordedReport:
    outcome: ReportOutcome
    report_id: int
    existing: Mapping[str, Any] | None = None


_ECONOMICS = ("exec_type", "last_qty", "last_px")


def _sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _serialize_writes(engine: Engine) -> None:
    """One SQLite writer at a time, queued on a Python lock instead of SQLite's.

    The FIX threads (wire log, fills) and the dispatcher (orders, relays, allocations)
    write from different threads. SQLite lets one write transaction in at a time, and a
    connection that finds the database locked waits in its busy handler, which sleeps
    1, 2, 5, 10 ... ms between tries: in the ingest bench the dispatcher spent more than
    half its time there. Taken at a transaction's first write and given back at its end
    (commit, rollback, or the connection's return to the pool), this lock hands the
    database to the next writer the moment it is free. Reads never take it.
    """
    lock = threading.RLock()

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any,
                _many: bool) -> None:
        if "write_lock" not in conn.info and statement.lstrip()[:7].upper().startswith(
                _WRITES) and lock.acquire(timeout=10):
            # Not had in 10 s: go on without it, and SQLite's own busy timeout decides,
            # as it did before this lock (a stuck writer fails, it does not hang).
            conn.info["write_lock"] = True

    def _release(conn: Any) -> None:
        if conn.info.pop("write_lock", None):
            lock.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)

    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None and record.info.pop("write_lock", None):
            lock.release()


def _compressed(decision: Mapping[str, Any]) -> dict[str, Any]:
    """The decision row with its canonical document compressed (byte-exact on load)."""
    row = dict(decision)
    text = row.pop("canonical_json", None)
    if text is not None:
        row["canonical_zlib"] = zlib.compress(text.encode("utf-8"), 6)
    return row


class Database(AuditRecords, LifecycleRecords, BlotterQueries):
    """Typed access to the tables; no ORM session state is shared between threads."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 8,
                 max_overflow: int | None = None, pool_timeout: float = 30.0) -> None:
        """`pool_size`, `max_overflow`, `pool_timeout`: the connection pool. The daemon's
        own threads share one pool; HTTP readers get their own small one (node.py), so a
        client polling a heavy endpoint can never take the connections the FIX path needs."""
        self.url = url
        self._trade_dates: OrderedDict[str, str] = OrderedDict()
        self._trade_dates_lock = threading.Lock()
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 10},
                pool_size=pool_size, max_overflow=10 if max_overflow is None else max_overflow,
                pool_timeout=pool_timeout)
            _sqlite_pragmas(self.engine, sqlite_synchronous)
            _serialize_writes(self.engine)
        else:
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=4 if max_overflow is None else max_overflow,
                pool_timeout=pool_timeout, pool_pre_ping=True)
        from gateway.audit import chain

        self.chain = chain.install(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision.

        Migrations write outside the audit chain; when one ran, the chain as it stood is
        verified first and the rows it changed are then adopted, both recorded in
        audit_events (gateway/audit/chain.py says why)."""
        from gateway.audit.chain_seal import seal
        from gateway.audit.chain_verify import adopt, verify
        from gateway.persistence.migrate import current_revision, head_revision, upgrade_to_head

        before = current_revision(self.engine)
        if before == head_revision(self.engine):
            return
        had_chain = before is not None and before >= "0010"
        if had_chain:
            seal(self)
        prior = verify(self) if had_chain else None
        # Connections opened while the chain is off never note (chain_triggers.arm); the
        # pool is closed on both sides so the upgrade's connections are unarmed and the
        # ones after it are armed on every table, new ones included.
        self.chain.enabled = False
        self.engine.dispose()
        try:
            upgrade_to_head(self.engine)
        finally:
            self.chain.enabled = True
            self.engine.dispose()
        after = current_revision(self.engine)
        if after == before:
            return
        seal(self)
        adopted = adopt(self)
        if adopted or prior is not None:
            from datetime import UTC

            self.append_event(
                "audit_chain_adopted", recorded_at=datetime.now(UTC),
                severity="info" if prior is None or prior.ok else "error",
                detail={"from_revision": before, "to_revision": after, "adopted": adopted,
                        "chain_before": prior.summary() if prior else "no chain yet"})

    def dispose(self) -> None:
        chain = getattr(self, "chain", None)  # absent on read-only views (audit whatif)
        if chain is not None and chain.committed:  # a command's writes reach the chain first
            from gateway.audit.chain_seal import seal

            try:
                seal(self)
            except Exception as exc:  # the daemon seals them at its next start
                import structlog

                structlog.get_logger("fixalloc.audit").warning(
                    "audit.seal_deferred", error=f"{type(exc).__name__}: {exc}")
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- orders ---------------------------------------------------------------------------

    @_transient
    def insert_order(self, row: Mapping[str, Any]) -> bool:
        """Insert a new block order; False if the OMS already used that ClOrdID."""
        try:
            with self._tx() as conn:
                conn.execute(insert(t.orders).values(**row))
        except IntegrityError:
            return False
        return True

    @_transient
    def update_order(self, order_id: str, **values: Any) -> None:
        with self._tx() as conn:
            conn.execute(_UPDATE_ORDER, {"key_order_id": order_id, **values})

    @_transient
    def store_fill_applied(self, order_id: str, report_id: int, relayed_at: datetime,
                           **values: Any) -> None:
        """The order's new state and its report marked relayed, in one transaction.

        The live path's common case (a fill that does not complete the order): the relay
        is already in quickfix's store when this runs, and the order row is rebuilt from
        its reports at recovery, so neither write needs a commit of its own.
        """
        with self._tx() as conn:
            self.write_fill_applied(conn, order_id, report_id, relayed_at, **values)

    @staticmethod
    def write_fill_applied(conn: Connection, order_id: str, report_id: int,
                           relayed_at: datetime, **values: Any) -> None:
        """`store_fill_applied` inside a transaction the caller holds."""
        conn.execute(_UPDATE_ORDER, {"key_order_id": order_id, **values})
        conn.execute(_MARK_RELAYED, {"key_id": report_id, "relayed_at": relayed_at})

    def order_exists(self, order_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(
                select(t.orders.c.order_id).where(t.orders.c.order_id == order_id)
            ).first() is not None

    def order_trade_date(self, order_id: str) -> str | None:
        """The trade date of one of our orders, or None when the id is not ours.

        Asked for every ER a broker sends; an order's trade date never changes, so the
        answers are kept (bounded: the oldest orders leave first)."""
        known = self._trade_dates.get(order_id)
        if known is not None:
            return known
        with self.engine.connect() as conn:
            value = conn.execute(_ORDER_TRADE_DATE, {"key_order_id": order_id}).scalar()
        if value is not None:
            with self._trade_dates_lock:
                self._trade_dates[order_id] = value
                while len(self._trade_dates) > _TRADE_DATES_KEPT:
                    self._trade_dates.popitem(last=False)
        return value

    def load_orders(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.orders).order_by(t.orders.c.created_at)).mappings()
            return [dict(r) for r in rows]

    # -- execution reports ----------------------------------------------------------------

    @_transient
    def record_broker_report(self, row: Mapping[str, Any]) -> RecordedReport:
        """Insert an ER keyed by (session, OrderID, ExecID, trade date), or classify the repeat."""
        wire = self.take_deferred_wire(str(row["session_id"]))
        try:
            with self._tx() as conn:
                if wire is not None:  # the ER's own wire row: one commit for both
                    conn.execute(_INSERT_WIRE, wire)
                result = conn.execute(_INSERT_REPORT, dict(row))
                pk = result.inserted_primary_key
                return RecordedReport(ReportOutcome.NEW, int(pk[0]) if pk else 0)
        except IntegrityError:
            if wire is not None:  # a repeat: its wire row is kept all the same
                self.put_back_deferred_wire(wire)
                self.flush_deferred_wire()
        except BaseException:
            if wire is not None:
                self.put_back_deferred_wire(wire)
            raise
        with self.engine.connect() as conn:
            existing = (
                conn.execute(
                    select(t.broker_reports).where(
                        t.broker_reports.c.session_id == row["session_id"],
                        t.broker_reports.c.broker_order_id == row["broker_order_id"],
                        t.broker_reports.c.exec_id == row["exec_id"],
                        t.broker_reports.c.trade_date == row["trade_date"],
                    )
                )
                .mappings()
                .one_or_none()
            )
        if existing is None and row.get("order_id") is not None:
            # Not a repeat: the order it names has left the database (archived) since its
            # trade date was kept. The caller records it as a report of no known order.
            self._trade_dates.pop(str(row["order_id"]), None)
            raise OrderGone(str(row["order_id"]))
        if existing is None:
            raise LookupError(f"report {row['exec_id']} refused by the database, not a repeat")
        same = all(str(existing[k]) == str(row[k]) for k in _ECONOMICS)
        outcome = ReportOutcome.DUPLICATE if same else ReportOutcome.CONFLICT
        return RecordedReport(outcome, int(existing["id"]), dict(existing))

    def report_id_of(self, session_id: str, order_id: str, exec_id: str) -> int | None:
        """The stored ER with this ExecID on the order (what a bust or correction names)."""
        query = (select(t.broker_reports.c.id)
                 .where(t.broker_reports.c.session_id == session_id,
                        t.broker_reports.c.order_id == order_id,
                        t.broker_reports.c.exec_id == exec_id)
                 .order_by(t.broker_reports.c.id).limit(1))
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
            return int(value) if value is not None else None

    @_transient
    def mark_relayed(self, report_id: int, at: datetime) -> None:
        with self._tx() as conn:
            conn.execute(_MARK_RELAYED, {"key_id": report_id, "relayed_at": at})

    @_transient
    def mark_report_refused(self, report_id: int, reason: str) -> None:
        with self._tx() as conn:
            conn.execute(
                update(t.broker_reports)
                .where(t.broker_reports.c.id == report_id)
                .values(dk_reason=reason[:1000])
            )

    def load_reports(self, order_id: str | None = None) -> list[dict[str, Any]]:
        query = select(t.broker_reports).order_by(t.broker_reports.c.id)
        if order_id is not None:
            query = query.where(t.broker_reports.c.order_id == order_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # -- allocations ----------------------------------------------------------------------

    @_transient
    def save_allocation(
        self,
        decision: Mapping[str, Any],
        allocation: Mapping[str, Any],
        lines: Sequence[Mapping[str, Any]],
        approval: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the decision, the allocation and its lines atomically, before any J is sent
        (with the approval request when a policy holds it: gateway/approvals/)."""
        with self._tx() as conn:
            known = conn.execute(
                select(t.decisions.c.decision_id).where(
                    t.decisions.c.decision_id == decision["decision_id"]
                )
            ).first()
            if not known:
                conn.execute(insert(t.decisions).values(**_compressed(decision)))
            first_of_block = conn.execute(select(t.allocations.c.alloc_id).where(
                t.allocations.c.order_id == allocation["order_id"]).limit(1)).first() is None
            conn.execute(insert(t.allocations).values(**allocation))
            if first_of_block:
                _count_block(conn, allocation["order_id"])
            if lines:
                conn.execute(insert(t.allocation_lines), [dict(x) for x in lines])
            if approval is not None:
                from gateway.persistence.approval_tables import approvals

                conn.execute(insert(approvals).values(**approval))

    @_transient
    def update_allocation(self, alloc_id: str, **values: Any) -> None:
        with self._tx() as conn:
            self.write_allocation_update(conn, alloc_id, **values)

    @staticmethod
    def write_allocation_update(conn: Connection, alloc_id: str, **values: Any) -> None:
        """`update_allocation` inside a transaction the caller holds (a J's wire row)."""
        conn.execute(_UPDATE_ALLOCATION, {"key_alloc_id": alloc_id, **values})

    def load_allocations(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.allocations).order_by(t.allocations.c.created_at))
            return [dict(r) for r in rows.mappings()]

    def allocations_for_book(self, book: str) -> int:
        """How many blocks of this book were allocated: the fair-rotation offset for the next.

        Blocks, not J messages: a Replace or a resend does not move the rotation on.
        """
        with self.engine.connect() as conn:
            value = conn.execute(select(t.book_rotations.c.blocks).where(
                t.book_rotations.c.book == book)).scalar()
        return int(value or 0)

    def load_allocation(self, alloc_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.allocations).where(t.allocations.c.alloc_id == alloc_id)
            ).mappings().first()
            return dict(row) if row else None

    def load_allocation_lines(self, alloc_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.allocation_lines)
                .where(t.lines_of(self.dialect, alloc_id))
                .order_by(t.allocation_lines.c.individual_alloc_id)
            )
            return [dict(r) for r in rows.mappings()]

    def load_decision(self, decision_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.decisions).where(t.decisions.c.decision_id == decision_id)
            ).mappings().first()
        if row is None:
            return None
        out = dict(row)
        packed = out.pop("canonical_zlib", None)
        if packed is not None:
            out["canonical_json"] = zlib.decompress(packed).decode("utf-8")
        return out

    # -- counts ---------------------------------------------------------------------------

    def count(self, table: str) -> int:
        tbl = t.metadata.tables[table]
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tbl)).scalar_one())
