"""Tables of the post-trade lifecycle: confirmations, tickets, exceptions, sweep reports.

Each allocation line is a ticket the broker confirms with one AK and we affirm with one
AU; its state lives on `allocation_lines` (ticket_state, confirm_id, ...). Every AK is
kept in `confirmations` with the result of matching it. Whatever needs a person (a
rejected J, a status confirm, an AK that does not match, a P that never comes) is an open
row in `exceptions` with its next step, until it is resolved. The end-of-day sweep keeps
one report per (trade date, checkpoint).
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text, UniqueConstraint

from gateway.persistence.tables import UtcDateTime, _Id, metadata

confirmations = Table(
    "confirmations",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("session_id", String(128), nullable=False),
    Column("confirm_id", String(64), nullable=False),
    Column("confirm_ref_id", String(64), nullable=True),
    Column("confirm_req_id", String(64), nullable=True),
    Column("trans_type", String(1), nullable=False),
    Column("confirm_type", String(1), nullable=False),
    Column("confirm_status", String(1), nullable=False),
    Column("alloc_id", String(64), nullable=True),
    Column("individual_alloc_id", String(80), nullable=True),
    Column("account_id", String(64), nullable=False),
    Column("economics_json", Text, nullable=False),  # what the broker said
    Column("outcome", String(24), nullable=False),  # affirmed|rejected|exception|cancelled|...
    Column("mismatches_json", Text, nullable=True),  # field -> (ours, theirs)
    Column("affirm_status", String(1), nullable=True),  # the AU we answered with
    Column("rej_reason", String(4), nullable=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("answered_at", UtcDateTime(), nullable=True),
    UniqueConstraint("session_id", "confirm_id", "trans_type", name="uq_confirmations_key"),
)
Index("ix_confirmations_alloc", confirmations.c.alloc_id)

exceptions = Table(
    "exceptions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(40), nullable=False),
    Column("state", String(12), nullable=False),  # open | resolved
    Column("order_id", String(64), nullable=True),
    Column("alloc_id", String(64), nullable=True),
    Column("individual_alloc_id", String(80), nullable=True),
    Column("book", String(64), nullable=True),
    Column("broker", String(64), nullable=True),
    Column("trade_date", String(10), nullable=True),
    Column("reason", Text, nullable=False),
    Column("next_step", Text, nullable=False),
    Column("detail_json", Text, nullable=False),
    Column("opened_at", UtcDateTime(), nullable=False),
    Column("resolved_at", UtcDateTime(), nullable=True),
    Column("resolved_by", String(128), nullable=True),
    Column("resolution", Text, nullable=True),
)
Index("ix_exceptions_state", exceptions.c.state, exceptions.c.kind)
Index("ix_exceptions_alloc", exceptions.c.alloc_id)

sweep_reports = Table(
    "sweep_reports",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("trade_date", String(10), nullable=False),
    Column("checkpoint", String(5), nullable=False),  # HH:MM New York time
    Column("ran_at", UtcDateTime(), nullable=False),
    Column("runs", Integer, nullable=False, default=1),
    Column("report_json", Text, nullable=False),
    UniqueConstraint("trade_date", "checkpoint", name="uq_sweep_reports_key"),
)

# Columns added to existing tables by migration 0006 (declared in tables.py):
#   allocation_lines: ticket_state, confirm_id, ak_received_at, affirmed_at, confirm_req_id,
#                     bh_sent_at
#   allocations: ref_alloc_id, fragments, fragments_acked, received_at, manual
#   broker_reports: exec_ref_id, exec_trans_type, dk_reason
__all__ = ["Boolean", "confirmations", "exceptions", "sweep_reports"]
