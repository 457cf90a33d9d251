"""approvals, approval_votes: decisions held by an approval policy, and the votes on them

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 12:00:00

A decision that an approval policy of the rulebook holds is stored with its allocation in
state `pending_approval` and a row here, in the same transaction, so a restart finds it
held and never sends its J before the votes say so (gateway/approvals/). A rejected
decision may be overridden by a person's split: `decisions.preallocations_json` keeps
that split with the new decision, so a replay decides it again from its own inputs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_Ts = sa.DateTime(timezone=True)
_TABLES = (("approvals", "alloc_id"), ("approval_votes", "id"))


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("alloc_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("policies_json", sa.Text(), nullable=False),
        sa.Column("facts_json", sa.Text(), nullable=False),
        sa.Column("barred", sa.String(255), nullable=False),
        sa.Column("requested_at", _Ts, nullable=False),
        sa.Column("escalate_at", _Ts, nullable=True),
        sa.Column("escalated_at", _Ts, nullable=True),
        sa.Column("decided_at", _Ts, nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("overrides", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("alloc_id", name="pk_approvals"),
    )
    op.create_index("ix_approvals_state", "approvals", ["state"])
    op.create_index("ix_approvals_order", "approvals", ["order_id"])
    op.create_table(
        "approval_votes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("alloc_id", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("roles", sa.String(255), nullable=False),
        sa.Column("vote", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("voted_at", _Ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval_votes"),
    )
    op.create_index("ix_approval_votes_alloc", "approval_votes", ["alloc_id"])
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("preallocations_json", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        from gateway.audit.chain_triggers import pg_note_trigger_sql

        for table, pk in _TABLES:
            for sql in pg_note_trigger_sql(table, pk):
                op.execute(sql)


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("preallocations_json")
    op.drop_index("ix_approval_votes_alloc", table_name="approval_votes")
    op.drop_table("approval_votes")
    op.drop_index("ix_approvals_order", table_name="approvals")
    op.drop_index("ix_approvals_state", table_name="approvals")
    op.drop_table("approvals")
