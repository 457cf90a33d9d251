"""raw wire bytes, order rejections, OMS acks, one version row per activation

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 17:30:00

- fix_messages.raw becomes bytes (what crossed the wire, never re-encoded), with its length,
  a truncated flag (messages above the size limit) and ref_id, the id the message is about.
- orders are unique per (session, ClOrdID, trade date): FIX ClOrdIDs are unique per day.
- order_rejections: refused block orders, for PossResend recognition and unique ExecIDs.
- allocations carry the OMS's answer to its J.
- rulebook_versions / refdata_versions: one row per activation (a rollback is a new row).
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TAGS = {b"8": b"17", b"D": b"11", b"F": b"11", b"G": b"11", b"9": b"11"}


def _ref_id(msg_type: str, raw: bytes) -> str | None:
    tag = _TAGS.get(msg_type.encode(), b"70" if msg_type in ("J", "P", "AS", "AK", "AU", "BH")
                    else None)
    if tag is None:
        return None
    match = re.search(rb"\x01" + tag + rb"=([^\x01]*)", raw)
    return match.group(1).decode("utf-8", "backslashreplace")[:128] if match else None


def _versions_table(name: str, extra: list[sa.Column[str]]) -> None:
    """Rebuild a versions table with a surrogate key, keeping its rows in load order."""
    # PostgreSQL names constraints per schema: the new table's key takes the old name
    # only once the old table is gone.
    postgres = op.get_bind().dialect.name == "postgresql"
    pk = f"pk_{name}_new" if postgres else f"pk_{name}"
    op.create_table(
        f"{name}_new",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("reactivated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        *extra,
        sa.Column("content_json", sa.Text(), nullable=False),
        sa.Column("diff_summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(pk)),
    )
    cols = "version, loaded_at, actor, " + "".join(f"{c.name}, " for c in extra) + \
        "content_json, diff_summary"
    op.execute(f"INSERT INTO {name}_new ({cols}) SELECT {cols} FROM {name} ORDER BY loaded_at")
    op.drop_table(name)
    op.rename_table(f"{name}_new", name)
    if postgres:
        op.execute(f"ALTER TABLE {name} RENAME CONSTRAINT {pk} TO pk_{name}")
    op.create_index(f"ix_{name}_version", name, ["version"])


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    with op.batch_alter_table("fix_messages") as batch:
        batch.add_column(sa.Column("raw_len", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("truncated", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("ref_id", sa.String(128), nullable=True))
        if sqlite:
            batch.alter_column("raw", type_=sa.LargeBinary(), existing_nullable=False)
    if sqlite:
        op.execute("UPDATE fix_messages SET raw = CAST(raw AS BLOB)")
    else:
        op.execute("ALTER TABLE fix_messages ALTER COLUMN raw TYPE bytea "
                   "USING convert_to(raw, 'UTF8')")
    rows = bind.execute(sa.text("SELECT id, msg_type, raw FROM fix_messages")).fetchall()
    for row in rows:
        raw = bytes(row.raw)
        bind.execute(sa.text("UPDATE fix_messages SET raw_len = :n, ref_id = :r WHERE id = :i"),
                     {"n": len(raw), "r": _ref_id(row.msg_type, raw), "i": row.id})
    op.create_index("ix_fix_messages_ref", "fix_messages",
                    ["session_id", "direction", "msg_type", "ref_id"])

    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("stop_px", sa.String(32), nullable=True))
        batch.add_column(sa.Column("peg_offset", sa.String(32), nullable=True))
        batch.drop_constraint("uq_orders_oms_clordid", type_="unique")
        batch.create_unique_constraint("uq_orders_oms_clordid",
                                       ["oms_session", "oms_cl_ord_id", "trade_date"])

    op.create_table(
        "order_rejections",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("cl_ord_id", sa.String(128), nullable=False),
        sa.Column("trade_date", sa.String(10), nullable=False),
        sa.Column("seq_num", sa.Integer(), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("reason_code", sa.String(4), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_rejections")),
    )
    op.create_index("ix_order_rejections_key", "order_rejections",
                    ["session_id", "cl_ord_id", "trade_date"])

    with op.batch_alter_table("allocations") as batch:
        batch.add_column(sa.Column("oms_status", sa.String(24), nullable=True))
        batch.add_column(sa.Column("oms_ack_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("oms_acked_at", sa.DateTime(timezone=True), nullable=True))

    _versions_table("refdata_versions", [])
    _versions_table("rulebook_versions", [sa.Column("source", sa.Text(), nullable=False)])


def downgrade() -> None:
    raise NotImplementedError("0004 is not reversible: restore from a backup instead")
