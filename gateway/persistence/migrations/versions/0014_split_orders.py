"""orders.parent_order_id: the child orders of a block split across brokers

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 16:00:00

A book may route to several brokers (gateway/book_routing.py). The OMS's block keeps its
row (status `split`, released at once) and each broker's child order gets a row of its
own that names the block in `parent_order_id`; recovery rebuilds the block's cumulative
view for the OMS from its children (gateway/split_orders.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("parent_order_id", sa.String(64), nullable=True))
    op.create_index("ix_orders_parent", "orders", ["parent_order_id"])


def downgrade() -> None:
    op.drop_index("ix_orders_parent", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("parent_order_id")
