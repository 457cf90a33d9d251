"""Approvals of held decisions (migration 0013); gateway/approvals/ writes them.

`approvals` has one row per allocation an approval policy held: the policies that matched
and the facts they were evaluated on (so an auditor sees why it stopped), who may not
approve it, the escalation deadline and the outcome. `approval_votes` keeps every vote
with the voter, the roles they held, the reason and the time; the J that goes out after
approval carries exactly the decision that was voted on (same alloc_id, same lines).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, String, Table, Text

from gateway.persistence.tables import UtcDateTime, _Id, metadata

approvals = Table(
    "approvals",
    metadata,
    Column("alloc_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("decision_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # pending | approved | rejected
    Column("policies_json", Text, nullable=False),
    Column("facts_json", Text, nullable=False),
    # Comma-separated: the order's trader and the author of the rulebook version in force.
    Column("barred", String(255), nullable=False),
    Column("requested_at", UtcDateTime(), nullable=False),
    Column("escalate_at", UtcDateTime(), nullable=True),
    Column("escalated_at", UtcDateTime(), nullable=True),
    Column("decided_at", UtcDateTime(), nullable=True),
    Column("decided_by", String(255), nullable=True),
    Column("reason", Text, nullable=True),
    Column("overrides", String(64), nullable=True),  # the rejected allocation it replaces
)
Index("ix_approvals_state", approvals.c.state)
Index("ix_approvals_order", approvals.c.order_id)

approval_votes = Table(
    "approval_votes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("alloc_id", String(64), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("roles", String(255), nullable=False),
    Column("vote", String(8), nullable=False),  # approve | reject
    Column("reason", Text, nullable=False),
    Column("voted_at", UtcDateTime(), nullable=False),
)
Index("ix_approval_votes_alloc", approval_votes.c.alloc_id)
