"""SQLAlchemy Core tables: the durable record of every FIX message and every decision.

Quantities and prices are stored as decimal strings (Numeric would round-trip through
driver-specific types; text keeps the exact value the wire carried, on SQLite and on
PostgreSQL alike). The FIX sequence-number store is quickfix's own FileStore, not here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on every backend.

    SQLite keeps no time zone and hands back naive values; code that subtracts a stored
    time from the clock's aware `now()` (recovery does) would raise. Stored as UTC, read
    back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect
                             ) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Pk columns are BigInteger on PostgreSQL, INTEGER on SQLite (so rowid autoincrement works).
_Id = BigInteger().with_variant(Integer(), "sqlite")

fix_messages = Table(
    "fix_messages",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("session_id", String(128), nullable=False),
    Column("direction", String(3), nullable=False),  # "in" | "out"
    Column("msg_type", String(8), nullable=False),
    Column("seq_num", Integer, nullable=True),
    Column("poss_dup", Boolean, nullable=False, default=False),
    # Exactly the bytes that crossed the wire (Password/NewPassword values masked), never
    # re-encoded: a peer's Latin-1 Text is kept as Latin-1. `store.wire_text` decodes for display.
    Column("raw", LargeBinary, nullable=False),
    # Stored compressed when that is shorter (zlib with a preset dictionary of FIX text,
    # persistence/wire_codec.py); the readers in persistence/records.py give back the
    # exact bytes.
    Column("compressed", Boolean, nullable=False, default=False),
    Column("raw_len", Integer, nullable=True),  # bytes on the wire (raw is cut above the limit)
    Column("truncated", Boolean, nullable=False, default=False),
    # The id the message is about: ExecID(17) of an 8, ClOrdID(11) of a D/F/G/9, AllocID(70)
    # of a J/P/AS/AK/AU/BH. Recovery asks "did this go out?" by key, not by scanning text.
    Column("ref_id", String(128), nullable=True),
    Column("recorded_at", UtcDateTime(), nullable=False),
)
# (session_id, direction) alone is served by ix_fix_messages_ref's leading columns.
Index("ix_fix_messages_msg_type", fix_messages.c.msg_type)
Index("ix_fix_messages_ref", fix_messages.c.session_id, fix_messages.c.direction,
      fix_messages.c.msg_type, fix_messages.c.ref_id)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),  # ours; also the child ClOrdID
    Column("oms_session", String(128), nullable=False),
    Column("oms_cl_ord_id", String(64), nullable=False),
    Column("book", String(64), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(16), nullable=False),
    Column("order_qty", String(32), nullable=False),
    Column("ord_type", String(8), nullable=False),
    Column("price", String(32), nullable=True),
    Column("stop_px", String(32), nullable=True),
    Column("peg_offset", String(32), nullable=True),
    Column("time_in_force", String(4), nullable=True),
    Column("broker", String(64), nullable=False),
    Column("broker_order_id", String(64), nullable=True),
    Column("status", String(24), nullable=False),
    Column("cum_qty", String(32), nullable=False, default="0"),
    Column("avg_px", String(32), nullable=False, default="0"),
    Column("leaves_qty", String(32), nullable=False, default="0"),
    Column("trade_date", String(10), nullable=False),
    Column("eligibility_json", Text, nullable=True),
    Column("preallocations_json", Text, nullable=True),  # the OMS's manual split + reason
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    # When the dispatcher let the finished order go from memory (gateway/order_book.py).
    Column("released_at", UtcDateTime(), nullable=True),
    # A broker's child of a block split across brokers: the block's order id (0014).
    Column("parent_order_id", String(64), nullable=True),
    # FIX asks ClOrdID to be unique per trading day, so an OMS may reuse one tomorrow.
    UniqueConstraint("oms_session", "oms_cl_ord_id", "trade_date", name="uq_orders_oms_clordid"),
)
Index("ix_orders_trade_date", orders.c.trade_date, orders.c.status)
Index("ix_orders_parent", orders.c.parent_order_id)

# Block orders refused before they became orders (bad fields, unknown book, limits): kept
# so a PossDup/PossResend repeat is recognised, and so each reject ER has an ExecID that
# is unique for the life of the database (REJ<id>), whatever the session's sequence.
order_rejections = Table(
    "order_rejections",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("session_id", String(128), nullable=False),
    Column("cl_ord_id", String(128), nullable=False),
    Column("trade_date", String(10), nullable=False),
    Column("seq_num", Integer, nullable=True),
    Column("order_id", String(64), nullable=True),
    Column("reason_code", String(4), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)
Index("ix_order_rejections_key", order_rejections.c.session_id, order_rejections.c.cl_ord_id,
      order_rejections.c.trade_date)

broker_reports = Table(
    "broker_reports",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("session_id", String(128), nullable=False),
    Column("broker_order_id", String(64), nullable=False),
    Column("exec_id", String(64), nullable=False),
    Column("trade_date", String(10), nullable=False),
    Column("order_id", String(64), ForeignKey("orders.order_id"), nullable=True),
    Column("cl_ord_id", String(64), nullable=False),
    Column("exec_type", String(2), nullable=False),
    Column("ord_status", String(2), nullable=False),
    Column("last_qty", String(32), nullable=False),
    Column("last_px", String(32), nullable=False),
    Column("cum_qty", String(32), nullable=False),
    Column("avg_px", String(32), nullable=False),
    Column("leaves_qty", String(32), nullable=False),
    Column("text", Text, nullable=True),
    Column("seq_num", Integer, nullable=True),
    Column("poss_dup", Boolean, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("transact_time", String(32), nullable=True),
    Column("exec_ref_id", String(64), nullable=True),  # the fill a bust/correction refers to
    Column("exec_trans_type", String(1), nullable=True),  # FIX 4.2: 1 cancel, 2 correct
    Column("relayed_at", UtcDateTime(), nullable=True),
    # Set when we answered the report with a DK (35=Q): it never reached the ledger, and
    # recovery must not fold it in either.
    Column("dk_reason", Text, nullable=True),
    UniqueConstraint(
        "session_id", "broker_order_id", "exec_id", "trade_date", name="uq_broker_reports_key"
    ),
)
Index("ix_broker_reports_order", broker_reports.c.order_id)

decisions = Table(
    "decisions",
    metadata,
    Column("decision_id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.order_id"), nullable=False),
    Column("method", String(32), nullable=False),
    Column("rulebook_version", String(64), nullable=False),
    Column("inputs_hash", String(64), nullable=False),
    Column("config_hash", String(64), nullable=False),
    Column("decided_at", UtcDateTime(), nullable=False),
    # The canonical decision document, stored zlib-compressed (about 80 KB of JSON for a
    # 200-account book, a tenth of it compressed); load_decision gives back the exact text.
    # canonical_json holds it uncompressed only in rows written before migration 0007.
    Column("canonical_json", Text, nullable=True),
    Column("canonical_zlib", LargeBinary, nullable=True),
    # What a later Replace needs to decide under the same conditions as this decision.
    Column("refdata_version", String(64), nullable=True),
    Column("rotation_offset", Integer, nullable=True),
    # engine.ENGINE_VERSION when decided (migration 0010): a replay under a later engine
    # whose behaviour changed on purpose names the version that made the original.
    Column("engine_version", String(32), nullable=True),
    # The book's method override the request carried ("" for none) and the newest broker
    # report in the ledger it decided on: inputs `fixalloc audit replay` would otherwise infer.
    Column("requested_method", String(32), nullable=True),
    Column("last_report_id", BigInteger, nullable=True),
    # A person's split that replaced a rejected decision (an override; migration 0013),
    # in the order's pre-allocation form: the decision's input, not the order's.
    Column("preallocations_json", Text, nullable=True),
)

allocations = Table(
    "allocations",
    metadata,
    Column("alloc_id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.order_id"), nullable=False),
    Column("decision_id", String(64), ForeignKey("decisions.decision_id"), nullable=False),
    Column("broker", String(64), nullable=False),
    Column("alloc_trans_type", String(1), nullable=False),
    Column("alloc_type", String(2), nullable=False),
    Column("quantity", String(32), nullable=False),
    Column("avg_px", String(32), nullable=False),
    Column("trade_date", String(10), nullable=False),
    Column("settl_date", String(10), nullable=False),
    Column("status", String(24), nullable=False),
    Column("ack_status", String(2), nullable=True),
    Column("rej_code", String(4), nullable=True),
    Column("ack_text", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=True),
    Column("oms_sent_at", UtcDateTime(), nullable=True),
    # The OMS's own answer to its copy of the J: its P (87) or a session Reject of the J.
    Column("oms_status", String(24), nullable=True),
    Column("oms_ack_text", Text, nullable=True),
    Column("oms_acked_at", UtcDateTime(), nullable=True),
    Column("acked_at", UtcDateTime(), nullable=True),
    Column("last_fill_at", UtcDateTime(), nullable=True),
    Column("ref_alloc_id", String(64), nullable=True),  # what a Replace/Cancel refers to
    Column("fragments", Integer, nullable=False, default=1),
    Column("received_at", UtcDateTime(), nullable=True),  # first P 87=3
    Column("reason", Text, nullable=True),  # why this J (replace/cancel/resend reason)
)
Index("ix_allocations_order", allocations.c.order_id)

allocation_lines = Table(
    "allocation_lines",
    metadata,
    Column("individual_alloc_id", String(80), primary_key=True),
    Column("alloc_id", String(64), ForeignKey("allocations.alloc_id"), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("qty", String(32), nullable=False),
    Column("avg_px", String(32), nullable=False),
    Column("custodian", String(64), nullable=True),
    Column("prime_broker", String(64), nullable=True),
    Column("strategy", String(64), nullable=True),
    Column("vehicle", String(64), nullable=True),
    Column("lots_json", Text, nullable=True),
    # The ticket: awaiting_ak | booked_elsewhere (Ready-To-Book: no AK owed) -> affirmed |
    # rejected | exception | cancelled
    Column("ticket_state", String(16), nullable=True),
    Column("confirm_id", String(64), nullable=True),
    Column("ak_received_at", UtcDateTime(), nullable=True),
    Column("affirmed_at", UtcDateTime(), nullable=True),
    Column("confirm_req_id", String(64), nullable=True),
    Column("bh_sent_at", UtcDateTime(), nullable=True),
    # On SQLite the rows live in the primary key's b-tree (no rowid, no second copy of the
    # key in an index): a 200-line J costs about 25 KB instead of 41 KB. PostgreSQL keeps
    # ix_allocation_lines_alloc (migration 0008); SQLite finds an allocation's lines by
    # the key's prefix instead, see `lines_of`.
    sqlite_with_rowid=False,
)


def lines_of(dialect: str, alloc_id: str | ColumnElement[str]) -> ColumnElement[bool]:
    """The where clause for one allocation's lines, served by an index on either database.

    A line's id is always `<alloc_id>-<nnnnn>` (allocation_flow), so on SQLite the lines
    of one allocation are a contiguous range of the primary key ('-0' up to '-:', the
    character after '9'); the equality on alloc_id keeps the answer exact whatever the id.
    PostgreSQL's collation need not sort by bytes, so there the alloc_id index serves.
    """
    c = allocation_lines.c
    same = c.alloc_id == alloc_id
    if dialect != "sqlite":
        return same
    # `+` is Python's concatenation for a str and SQL's || for a column (a correlated query).
    return and_(c.individual_alloc_id >= alloc_id + "-0",
                c.individual_alloc_id < alloc_id + "-:", same)

# Blocks allocated per book: the fair-rotation offset for the book's next block. Kept as
# a counter (bumped with a block's first allocation) because counting the allocations
# grew with the database (10% of the dispatcher's time after 3,000 blocks), and because
# archiving old days must not move the rotation back.
book_rotations = Table(
    "book_rotations",
    metadata,
    Column("book", String(64), primary_key=True),
    Column("blocks", Integer, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("recorded_at", UtcDateTime(), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("session_id", String(128), nullable=True),
    Column("order_id", String(64), nullable=True),
    Column("alloc_id", String(64), nullable=True),
    Column("detail_json", Text, nullable=False),
)
Index("ix_audit_events_kind", audit_events.c.kind)
Index("ix_audit_events_order", audit_events.c.order_id, audit_events.c.kind)

# One row per activation, not per distinct content: a rollback to an earlier text is a new
# row (`reactivated` true), so the newest row is always the version in force.
refdata_versions = Table(
    "refdata_versions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False),
    Column("reactivated", Boolean, nullable=False, default=False),
    Column("loaded_at", UtcDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("content_json", Text, nullable=False),  # file path -> text, as loaded
    Column("diff_summary", Text, nullable=True),
)

rulebook_versions = Table(
    "rulebook_versions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False),
    Column("reactivated", Boolean, nullable=False, default=False),
    Column("loaded_at", UtcDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("source", Text, nullable=False),
    Column("content_json", Text, nullable=False),
    Column("diff_summary", Text, nullable=True),
    Column("files_json", Text, nullable=True),  # file name -> text, as loaded
)
Index("ix_refdata_versions_version", refdata_versions.c.version)
Index("ix_rulebook_versions_version", rulebook_versions.c.version)
