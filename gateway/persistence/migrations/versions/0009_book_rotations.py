"""book_rotations: blocks allocated per book, a counter instead of a count

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 03:40:00

`allocations_for_book` counted the distinct orders with an allocation, joined to orders,
on every new block: a scan that grew with the database (in a 30-minute soak, 10% of the
dispatcher's time after 3,000 blocks), and that `fixalloc archive` would have moved back.
The counter is filled here from that same count and bumped with each block's first
allocation from now on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "book_rotations",
        sa.Column("book", sa.String(64), nullable=False),
        sa.Column("blocks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("book", name="pk_book_rotations"),
    )
    op.execute(
        "INSERT INTO book_rotations (book, blocks) "
        "SELECT o.book, COUNT(DISTINCT a.order_id) FROM allocations a "
        "JOIN orders o ON o.order_id = a.order_id GROUP BY o.book")


def downgrade() -> None:
    op.drop_table("book_rotations")
