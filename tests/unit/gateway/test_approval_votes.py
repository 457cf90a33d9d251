"""Counting votes on a held allocation: roles, four-eyes, the barred, escalation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.approvals.votes import VoteRefused, check_vote, tally

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def approval(*policies: dict[str, Any], barred: str = "trader1,author1",
             escalated: bool = False) -> dict[str, Any]:
    return {"alloc_id": "O1-J1", "state": "pending", "barred": barred,
            "policies_json": json.dumps(list(policies)),
            "escalated_at": NOW if escalated else None}


def policy(pid: str, role: str, count: int = 1, escalate: str | None = None) -> dict[str, Any]:
    return {"id": pid, "approvers": {"role": role, "count": count},
            "escalate": {"after_minutes": 30, "role": escalate} if escalate else None}


def vote(actor: str, roles: str, what: str = "approve") -> dict[str, Any]:
    return {"actor": actor, "roles": roles, "vote": what, "reason": "ok"}


FOUR_EYES = policy("BIG", "pm", count=2)


def test_four_eyes_needs_two_different_people_of_the_role() -> None:
    a = approval(FOUR_EYES)
    assert tally(a, [vote("alice", "pm")]).state == "pending"
    assert tally(a, [vote("alice", "pm")]).waiting_for == ["BIG: 1 more pm"]
    assert tally(a, [vote("alice", "pm"), vote("bob", "pm")]).state == "approved"
    # The same person twice is refused before it is counted...
    with pytest.raises(VoteRefused, match="already voted") as err:
        check_vote(a, [vote("alice", "pm")], actor="alice", roles=["pm"], vote="approve",
                   reason="")
    assert err.value.forbidden
    # ...and would not count twice if it were stored.
    assert tally(a, [vote("alice", "pm"), vote("alice", "pm")]).state == "pending"


def test_the_trader_and_the_rulebook_author_may_not_vote() -> None:
    a = approval(FOUR_EYES)
    for who in ("trader1", "author1"):
        with pytest.raises(VoteRefused, match="sent the order or authored") as err:
            check_vote(a, [], actor=who, roles=["pm"], vote="approve", reason="")
        assert err.value.forbidden


def test_a_voter_needs_a_role_a_policy_names() -> None:
    a = approval(FOUR_EYES, policy("FIRST-USE", "compliance"))
    with pytest.raises(VoteRefused, match="holds none of the roles"):
        check_vote(a, [], actor="ops", roles=["operations", "trader"], vote="approve",
                   reason="")
    check_vote(a, [], actor="carol", roles=["compliance"], vote="approve", reason="")
    # Every matched policy must be satisfied: the compliance vote alone is not enough.
    votes = [vote("carol", "compliance"), vote("alice", "pm")]
    assert tally(a, votes).state == "pending"
    assert tally(a, [*votes, vote("bob", "pm")]).state == "approved"


def test_one_person_with_two_roles_counts_for_each_policy_once() -> None:
    a = approval(policy("A", "pm"), policy("B", "compliance"))
    assert tally(a, [vote("dana", "compliance,pm")]).state == "approved"


def test_a_reject_decides_at_once_and_needs_a_reason() -> None:
    a = approval(FOUR_EYES)
    with pytest.raises(VoteRefused, match="needs a reason"):
        check_vote(a, [], actor="alice", roles=["pm"], vote="reject", reason="  ")
    assert tally(a, [vote("alice", "pm", "reject")]).state == "rejected"


def test_after_escalation_the_escalation_role_may_vote() -> None:
    p = policy("BIG", "pm", escalate="compliance")
    with pytest.raises(VoteRefused, match="holds none"):
        check_vote(approval(p), [], actor="carol", roles=["compliance"], vote="approve",
                   reason="")
    a = approval(p, escalated=True)
    check_vote(a, [], actor="carol", roles=["compliance"], vote="approve", reason="")
    assert tally(a, [vote("carol", "compliance")]).state == "approved"


def test_a_decided_approval_takes_no_more_votes() -> None:
    a = approval(FOUR_EYES) | {"state": "approved"}
    with pytest.raises(VoteRefused, match="already approved"):
        check_vote(a, [], actor="bob", roles=["pm"], vote="approve", reason="")
