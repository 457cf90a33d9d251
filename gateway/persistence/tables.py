"""SQLAlchemy Core tables: the durable record of every FIX message and every decision.

Quantities and prices are stored as decimal strings (Numeric would round-trip through
driver-specific types; text keeps the exact value the wire carried, on SQLite and on
PostgreSQL alike). The FIX sequence-number store is quickfix's own FileStore, not here.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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
    Column("raw", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
Index("ix_fix_messages_session_dir", fix_messages.c.session_id, fix_messages.c.direction)
Index("ix_fix_messages_msg_type", fix_messages.c.msg_type)

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
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("oms_session", "oms_cl_ord_id", name="uq_orders_oms_clordid"),
)

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
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("transact_time", String(32), nullable=True),
    Column("relayed_at", DateTime(timezone=True), nullable=True),
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
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("canonical_json", Text, nullable=False),
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
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("oms_sent_at", DateTime(timezone=True), nullable=True),
    Column("acked_at", DateTime(timezone=True), nullable=True),
    Column("last_fill_at", DateTime(timezone=True), nullable=True),
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
)
Index("ix_allocation_lines_alloc", allocation_lines.c.alloc_id)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("session_id", String(128), nullable=True),
    Column("order_id", String(64), nullable=True),
    Column("alloc_id", String(64), nullable=True),
    Column("detail_json", Text, nullable=False),
)
Index("ix_audit_events_kind", audit_events.c.kind)

refdata_versions = Table(
    "refdata_versions",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("content_json", Text, nullable=False),  # file path -> text, as loaded
    Column("diff_summary", Text, nullable=True),
)

rulebook_versions = Table(
    "rulebook_versions",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("source", Text, nullable=False),
    Column("content_json", Text, nullable=False),
    Column("diff_summary", Text, nullable=True),
)
