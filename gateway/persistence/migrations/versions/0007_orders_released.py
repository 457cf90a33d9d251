"""orders leave memory: released_at, and an index for the blotter by trade date

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 00:10:00

- orders.released_at: when the dispatcher let a finished order go from memory (its P
  accepted, or nothing to allocate). Startup recovery skips such orders; a late event
  (a bust, an AK, an operator's action) loads the order back and clears the mark.
- ix_orders_trade_date: /status and /orders read the day's blotter from the database.
- ix_audit_events_order: the per-order events recovery reads (cancels, replaces).
- decisions.canonical_zlib: the canonical decision document compressed (about a tenth of
  its JSON); canonical_json becomes nullable and is left as it is in older rows.
- fix_messages.compressed: a message of 2 KB or more is stored zlib-compressed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_orders_trade_date", "orders", ["trade_date", "status"])
    op.create_index("ix_audit_events_order", "audit_events", ["order_id", "kind"])
    with op.batch_alter_table("fix_messages") as batch:
        batch.add_column(sa.Column("compressed", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("canonical_zlib", sa.LargeBinary(), nullable=True))
        batch.alter_column("canonical_json", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("fix_messages") as batch:
        batch.drop_column("compressed")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("canonical_zlib")
    op.drop_index("ix_audit_events_order", table_name="audit_events")
    op.drop_index("ix_orders_trade_date", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("released_at")
