"""Tables of the tamper-evident record (migration 0010); gateway/audit/chain.py writes them.

`audit_chain` has one entry per write to an audited row: the SHA-256 of the row's content
as stored (none for a deletion) and `entry_hash`, which covers the entry's own fields and
the previous entry's hash, so an edit, deletion, insertion or reordering anywhere breaks
every link after it. `audit_checkpoints` keeps the chain head at each check; the copies
that count are the ones exported to a file the database's administrator cannot change.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table

from gateway.persistence.tables import _Id, metadata

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=False),
    Column("recorded_at", String(32), nullable=False),  # ISO UTC, wall clock
    Column("table_name", String(48), nullable=False),
    Column("row_key", String(160), nullable=False),
    Column("op", String(8), nullable=False),  # insert | update | delete | adopt
    Column("content_hash", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)
# No index on recorded_at: it would be one more b-tree write on every audited write, and
# entries are recorded in seq order, so `--from DATE` finds its start by bisecting seq.

# Rows written since the last seal: one note per audited write, in the write's own
# transaction (a few microseconds on the live path); the sealer hashes them into the chain.
audit_pending = Table(
    "audit_pending",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("table_name", String(48), nullable=False),
    Column("row_key", String(160), nullable=False),
    Column("op", String(8), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("written_at", String(32), nullable=False),
)
