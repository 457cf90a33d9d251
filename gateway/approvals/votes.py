"""Counting the votes on a held allocation: who may vote, and when it is decided.

Pure functions over the stored approval row and its votes, so the dispatcher (which owns
the state) and the HTTP readers (which only show it) count the same way.

- A voter needs a role some matched policy names: its approver role, or its escalation
  role once the request has been escalated.
- Nobody barred votes: the order's trader, the author of the rulebook version in force.
- Each person votes once; four-eyes (count 2) needs two different people of the role.
- A reject (with a reason) from anyone entitled decides at once: the J is not sent.
- Approved when every matched policy has its count of distinct entitled approvers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class VoteRefused(ValueError):
    """The vote or override cannot count; the message says why. `status` is its HTTP
    answer: 403 not this person, 409 not in this state, 422 not a valid request."""

    def __init__(self, message: str, *, forbidden: bool = False, invalid: bool = False
                 ) -> None:
        super().__init__(message)
        self.forbidden = forbidden
        self.status = 403 if forbidden else 422 if invalid else 409


@dataclass(frozen=True)
class Tally:
    state: str  # pending | approved | rejected
    # Per policy: the approvers counted so far and how many it needs.
    policies: tuple[dict[str, Any], ...]

    @property
    def waiting_for(self) -> list[str]:
        return [f"{p['id']}: {p['need'] - len(p['approvers'])} more {p['role']}"
                for p in self.policies if len(p["approvers"]) < p["need"]]


def _roles_for(policy: Mapping[str, Any], escalated: bool) -> set[str]:
    roles = {policy["approvers"]["role"]}
    if escalated and policy.get("escalate"):
        roles.add(policy["escalate"]["role"])
    return roles


def tally(approval: Mapping[str, Any], votes: Sequence[Mapping[str, Any]]) -> Tally:
    policies = json.loads(approval["policies_json"])
    escalated = approval.get("escalated_at") is not None
    if any(v["vote"] == "reject" for v in votes):
        return Tally("rejected", ())
    out = []
    for p in policies:
        roles = _roles_for(p, escalated)
        names = sorted({v["actor"] for v in votes if v["vote"] == "approve"
                        and roles & set(v["roles"].split(","))})
        out.append({"id": p["id"], "role": "/".join(sorted(roles)),
                    "need": p["approvers"]["count"], "approvers": names})
    done = all(len(p["approvers"]) >= p["need"] for p in out)
    return Tally("approved" if done else "pending", tuple(out))


def check_vote(approval: Mapping[str, Any], votes: Sequence[Mapping[str, Any]], *,
               actor: str, roles: Sequence[str], vote: str, reason: str) -> None:
    """Raise VoteRefused unless this vote may be counted now."""
    if vote not in ("approve", "reject"):
        raise VoteRefused(f"unknown vote {vote!r}: approve or reject", invalid=True)
    if approval["state"] != "pending":
        raise VoteRefused(f"{approval['alloc_id']} is already {approval['state']}")
    if vote == "reject" and not reason.strip():
        raise VoteRefused("a rejection needs a reason", invalid=True)
    # Usernames are lower-case; a SenderSubID or CompID may not be.
    barred = {name.lower() for name in approval["barred"].split(",") if name}
    if actor.lower() in barred:
        raise VoteRefused(f"{actor} may not vote on {approval['alloc_id']}: they sent the "
                          "order or authored the rulebook version in force", forbidden=True)
    if any(v["actor"].lower() == actor.lower() for v in votes):
        raise VoteRefused(f"{actor} has already voted on {approval['alloc_id']}; four-eyes "
                          "needs a different person", forbidden=True)
    escalated = approval.get("escalated_at") is not None
    wanted: set[str] = set()
    for p in json.loads(approval["policies_json"]):
        wanted |= _roles_for(p, escalated)
    if not wanted & set(roles):
        raise VoteRefused(f"{actor} ({', '.join(roles) or 'no role'}) holds none of the "
                          f"roles this approval needs: {', '.join(sorted(wanted))}",
                          forbidden=True)
