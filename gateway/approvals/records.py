"""Reading and writing approvals and votes (tables in persistence/approval_tables.py).

A vote and the outcome it decides (the approval's state and the allocation's) are written
in one transaction: after a crash either both are stored or neither, so a restart never
finds an approved allocation still held, nor a held one marked approved.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from gateway.persistence import approval_tables as at
from gateway.persistence import tables as t
from gateway.persistence.store import Database


def load(db: Database, alloc_id: str) -> dict[str, Any] | None:
    with db.engine.connect() as conn:
        row = conn.execute(select(at.approvals).where(
            at.approvals.c.alloc_id == alloc_id)).mappings().first()
    return dict(row) if row else None


def votes(db: Database, alloc_id: str) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(at.approval_votes).where(at.approval_votes.c.alloc_id == alloc_id)
            .order_by(at.approval_votes.c.id)).mappings()]


def listing(db: Database, *, state: str | None = None, limit: int = 200,
            offset: int = 0) -> list[dict[str, Any]]:
    query = select(at.approvals).order_by(at.approvals.c.requested_at.desc())
    if state is not None:
        query = query.where(at.approvals.c.state == state)
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query.limit(limit).offset(offset)).mappings()]


def due_for_escalation(db: Database, now: datetime) -> list[dict[str, Any]]:
    c = at.approvals.c
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(at.approvals).where(
            c.state == "pending", c.escalate_at.is_not(None), c.escalate_at <= now,
            c.escalated_at.is_(None))).mappings()]


def next_escalation(db: Database) -> datetime | None:
    c = at.approvals.c
    with db.engine.connect() as conn:
        value: datetime | None = conn.execute(
            select(c.escalate_at).where(c.state == "pending", c.escalated_at.is_(None),
                                        c.escalate_at.is_not(None))
            .order_by(c.escalate_at).limit(1)).scalar()
    return value


def mark_escalated(db: Database, alloc_id: str, at_: datetime) -> None:
    with db.engine.begin() as conn:
        conn.execute(update(at.approvals).where(at.approvals.c.alloc_id == alloc_id)
                     .values(escalated_at=at_))


def record_vote(db: Database, vote: Mapping[str, Any], outcome: str | None, *,
                decided_by: str, at_: datetime) -> None:
    """Store one vote and, when it decides, the approval's and the allocation's new state."""
    alloc_id = vote["alloc_id"]
    with db.engine.begin() as conn:
        conn.execute(insert(at.approval_votes).values(**vote))
        if outcome is None:
            return
        conn.execute(update(at.approvals).where(at.approvals.c.alloc_id == alloc_id).values(
            state=outcome, decided_at=at_, decided_by=decided_by,
            reason=vote["reason"] if outcome == "rejected" else None))
        conn.execute(update(t.allocations).where(t.allocations.c.alloc_id == alloc_id).values(
            status="pending_send" if outcome == "approved" else "approval_rejected"))
