"""notification outbox

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00

- notification_outbox: one row per (notification, channel, recipient), with its delivery
  state, attempts, next attempt time and last error (gateway/notify/outbox.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notification_outbox",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("book", sa.String(64), nullable=True),
        sa.Column("route", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("summary_json", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("link", sa.Text(), nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
    )
    op.create_index("ix_notification_outbox_due", "notification_outbox",
                    ["state", "next_attempt_at"])
    op.create_index("ix_notification_outbox_notification", "notification_outbox",
                    ["notification_id"])


def downgrade() -> None:
    op.drop_index("ix_notification_outbox_notification", "notification_outbox")
    op.drop_index("ix_notification_outbox_due", "notification_outbox")
    op.drop_table("notification_outbox")
