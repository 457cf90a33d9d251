"""audit_chain and audit_checkpoints: the tamper-evident record; decisions.engine_version

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 06:20:00

Every write to an audited table notes the row in `audit_pending` in the same transaction;
the daemon's sealer turns those notes into `audit_chain` entries within a fraction of a
second (gateway/audit/chain.py): the hash of the row's content as stored, and a hash
linking it to the entry before. Rows already in the database when this runs are adopted
into the chain by `Database.migrate` after the upgrade. `engine_version` records which
engine made a decision, so a replay can say so when the engine's behaviour has changed;
`requested_method` (the book's method override the request carried, "" for none) and
`last_report_id` (the newest broker report folded into the ledger it decided on) are the
two inputs a replay could otherwise only infer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=False, nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("table_name", sa.String(48), nullable=False),
        sa.Column("row_key", sa.String(160), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_chain"),
    )
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("table_name", sa.String(48), nullable=False),
        sa.Column("row_key", sa.String(160), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_pending"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("written_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("engine_version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("requested_method", sa.String(32), nullable=True))
        batch.add_column(sa.Column("last_report_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("last_report_id")
        batch.drop_column("requested_method")
        batch.drop_column("engine_version")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_pending")
    op.drop_table("audit_chain")
