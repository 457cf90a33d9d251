"""HTTP for the approval gate: what is held and why, votes, and overrides.

Reads come from the database (the dispatcher's writes, committed); votes and overrides go
to the dispatcher through its inbox and wait for its answer, like operator actions. Who
votes is the authenticated caller (gateway/http_auth.py), never a name in the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.approvals import records
from gateway.approvals.votes import tally
from gateway.auth.principals import Principal
from gateway.http_auth import Guard
from gateway.http_lifecycle import dispatcher_answer
from gateway.persistence.store import Database

# (action, target, actor, roles, reason, lines) -> the dispatcher's answer
Decide = Callable[[str, str, str, tuple[str, ...], str, Mapping[str, str] | None],
                  dict[str, Any]]


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(..., min_length=1, max_length=2000,
                        description="why the decision is rejected (required)")


class OverrideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lines: dict[str, str] = Field(..., min_length=1, max_length=100_000,
                                  description="account id -> whole quantity")
    reason: str = Field(..., min_length=1, max_length=2000)


def shown(db: Database, approval: Mapping[str, Any]) -> dict[str, Any]:
    """An approval as the API shows it: policies, facts, votes and what it waits for."""
    votes = records.votes(db, approval["alloc_id"])
    counted = tally(approval, votes)
    return {
        "alloc_id": approval["alloc_id"], "order_id": approval["order_id"],
        "decision_id": approval["decision_id"], "state": approval["state"],
        "policies": json.loads(approval["policies_json"]),
        "facts": json.loads(approval["facts_json"]),
        "barred": [b for b in approval["barred"].split(",") if b],
        "requested_at": approval["requested_at"].isoformat(),
        "escalate_at": _iso(approval["escalate_at"]),
        "escalated_at": _iso(approval["escalated_at"]),
        "decided_at": _iso(approval["decided_at"]), "decided_by": approval["decided_by"],
        "reason": approval["reason"], "overrides": approval["overrides"],
        "votes": [{"actor": v["actor"], "roles": v["roles"].split(","), "vote": v["vote"],
                   "reason": v["reason"], "voted_at": v["voted_at"].isoformat()}
                  for v in votes],
        "tally": list(counted.policies), "waiting_for": counted.waiting_for,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def add_approval_endpoints(app: FastAPI, db: Database, decide: Decide | None,
                           guard: Guard) -> None:
    may_view = Depends(guard.needs("view"))
    may_approve = Depends(guard.needs("approve"))
    may_reject = Depends(guard.needs("reject"))
    may_override = Depends(guard.needs("override"))

    @app.get("/approvals", summary="Allocations held by an approval policy")
    def listing(
        state: Annotated[str | None, Query(pattern="^(pending|approved|rejected)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0)] = 0, _who: Principal = may_view,
    ) -> dict[str, Any]:
        rows = records.listing(db, state=state, limit=limit, offset=offset)
        return {"approvals": [shown(db, r) for r in rows]}

    @app.get("/approvals/{alloc_id}", summary="One held allocation: why, and the votes")
    def one(alloc_id: str, _who: Principal = may_view) -> dict[str, Any]:
        row = records.load(db, alloc_id)
        if row is None:
            raise HTTPException(status_code=404, detail=f"no approval for {alloc_id!r}")
        return shown(db, row)

    def act(who: Principal, action: str, target: str, reason: str,
            lines: Mapping[str, str] | None = None) -> dict[str, Any]:
        if decide is None:
            raise HTTPException(status_code=503, detail="the dispatcher is not running")
        operation = "order.override" if action == "override" else f"approval.{action}"
        kind = "order" if action == "override" else "allocation"
        with guard.recording(who, action, operation, f"{kind}:{target}", reason=reason,
                             alloc_id=None if action == "override" else target) as note:
            with dispatcher_answer():
                result = decide(action, target, who.actor(), who.roles, reason, lines)
            note["result"] = result.get("state")
        return result

    @app.post("/approvals/{alloc_id}/approve", summary="Approve a held allocation")
    def approve(alloc_id: str, body: VoteRequest | None = None,
                who: Principal = may_approve) -> dict[str, Any]:
        return act(who, "approve", alloc_id, body.reason if body else "")

    @app.post("/approvals/{alloc_id}/reject", summary="Reject a held allocation (reason "
                                                      "required): its J is never sent")
    def reject(alloc_id: str, body: RejectRequest,
               who: Principal = may_reject) -> dict[str, Any]:
        return act(who, "reject", alloc_id, body.reason)

    @app.post("/orders/{order_id}/override", summary="A person's split for a block whose "
                                                     "decision was rejected")
    def override(order_id: str, body: OverrideRequest,
                 who: Principal = may_override) -> dict[str, Any]:
        return act(who, "override", order_id, body.reason, body.lines)
