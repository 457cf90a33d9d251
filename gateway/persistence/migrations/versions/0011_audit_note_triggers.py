"""Audit notes written by triggers, not by the gateway's Python code

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 10:00:00

From 0010 the gateway noted each audited write in `audit_pending` from a SQLAlchemy
listener; now the database does it (gateway/audit/chain_triggers.py). On SQLite the
triggers are TEMP triggers that each gateway connection creates when it opens, so this
revision changes nothing there. On PostgreSQL it installs `fixalloc_note()` and one
trigger per audited table; a later revision that adds an audited table installs its
trigger the same way (tests/audit/test_chain_triggers.py checks that none is missing).
"""

from __future__ import annotations

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# The audited tables at this revision and their key columns.
_TABLES = (
    ("allocation_lines", "individual_alloc_id"), ("allocations", "alloc_id"),
    ("audit_events", "id"), ("book_rotations", "book"), ("broker_reports", "id"),
    ("confirmations", "id"), ("decisions", "decision_id"), ("exceptions", "id"),
    ("fix_messages", "id"), ("notification_outbox", "id"), ("order_rejections", "id"),
    ("orders", "order_id"), ("refdata_versions", "id"), ("rulebook_versions", "id"),
    ("sweep_reports", "id"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    from gateway.audit.chain_triggers import pg_note_trigger_sql

    for table, pk in _TABLES:
        for sql in pg_note_trigger_sql(table, pk):
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, _pk in _TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS fixalloc_note ON {table}")
    op.execute("DROP FUNCTION IF EXISTS fixalloc_note()")
