"""post-trade lifecycle: corrections, J replace/cancel/fragments, tickets, exceptions, sweep

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("rulebook_versions") as batch:
        batch.add_column(sa.Column("files_json", sa.Text(), nullable=True))
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("refdata_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("rotation_offset", sa.Integer(), nullable=True))
    with op.batch_alter_table("broker_reports") as batch:
        batch.add_column(sa.Column("exec_ref_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("exec_trans_type", sa.String(1), nullable=True))
        batch.add_column(sa.Column("dk_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("allocations") as batch:
        batch.add_column(sa.Column("ref_alloc_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("fragments", sa.Integer(), nullable=False,
                                   server_default="1"))
        batch.add_column(sa.Column("received_at", _Ts, nullable=True))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
    with op.batch_alter_table("allocation_lines") as batch:
        batch.add_column(sa.Column("ticket_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("confirm_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("ak_received_at", _Ts, nullable=True))
        batch.add_column(sa.Column("affirmed_at", _Ts, nullable=True))
        batch.add_column(sa.Column("confirm_req_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("bh_sent_at", _Ts, nullable=True))
    op.create_table(
        "confirmations",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("confirm_id", sa.String(64), nullable=False),
        sa.Column("confirm_ref_id", sa.String(64), nullable=True),
        sa.Column("confirm_req_id", sa.String(64), nullable=True),
        sa.Column("trans_type", sa.String(1), nullable=False),
        sa.Column("confirm_type", sa.String(1), nullable=False),
        sa.Column("confirm_status", sa.String(1), nullable=False),
        sa.Column("alloc_id", sa.String(64), nullable=True),
        sa.Column("individual_alloc_id", sa.String(80), nullable=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("economics_json", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("mismatches_json", sa.Text(), nullable=True),
        sa.Column("affirm_status", sa.String(1), nullable=True),
        sa.Column("rej_reason", sa.String(4), nullable=True),
        sa.Column("received_at", _Ts, nullable=False),
        sa.Column("answered_at", _Ts, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confirmations")),
        sa.UniqueConstraint("session_id", "confirm_id", "trans_type",
                            name="uq_confirmations_key"),
    )
    op.create_index("ix_confirmations_alloc", "confirmations", ["alloc_id"])
    op.create_table(
        "exceptions",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("alloc_id", sa.String(64), nullable=True),
        sa.Column("individual_alloc_id", sa.String(80), nullable=True),
        sa.Column("book", sa.String(64), nullable=True),
        sa.Column("broker", sa.String(64), nullable=True),
        sa.Column("trade_date", sa.String(10), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("next_step", sa.Text(), nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=False),
        sa.Column("opened_at", _Ts, nullable=False),
        sa.Column("resolved_at", _Ts, nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exceptions")),
    )
    op.create_index("ix_exceptions_state", "exceptions", ["state", "kind"])
    op.create_index("ix_exceptions_alloc", "exceptions", ["alloc_id"])
    op.create_table(
        "sweep_reports",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("trade_date", sa.String(10), nullable=False),
        sa.Column("checkpoint", sa.String(5), nullable=False),
        sa.Column("ran_at", _Ts, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("report_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_reports")),
        sa.UniqueConstraint("trade_date", "checkpoint", name="uq_sweep_reports_key"),
    )


def downgrade() -> None:
    raise NotImplementedError("0006 is not reversible: restore from a backup instead")
