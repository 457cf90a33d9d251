"""The approval desk, on the dispatcher's thread: votes, overrides, escalation, cut-off.

An allocation an approval policy held (AllocationFlow.allocate, gate.py) waits here in
state `pending_approval`. Votes come from HTTP through the dispatcher's inbox, so the
dispatcher stays the one owner of the order's state:
- approved: the allocation goes back to `pending_send` in the vote's transaction and its
  J goes out exactly as decided (same alloc_id, same lines); a crash right after is
  recovered like any J stored and not yet sent;
- rejected (with a reason): the allocation becomes `approval_rejected`, the block stays
  unallocated and an `approval_rejected` exception opens; an authorised person may then
  submit an override, a new decision on their split that goes through the policies again.
A pending approval past its policy's deadline is escalated once (its escalation role may
then vote too) and alerted; approvals still pending at the allocation cut-off (19:00 New
York by default) are alerted once a day, by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import structlog

from gateway.allocation_flow import Override
from gateway.approvals import records
from gateway.approvals.votes import VoteRefused, check_vote, tally
from gateway.clock import NEW_YORK

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher
    from gateway.events import ApprovalRequested
    from gateway.orders import Order

log = structlog.get_logger("fixalloc.approvals")


class ApprovalDesk:
    def __init__(self, d: Dispatcher, *, cutoff: str = "19:00") -> None:
        self.d = d
        self.cutoff = time.fromisoformat(cutoff)
        self._next_escalation: datetime | None = None
        self._cutoff_alerted: set[date] = set()
        self._cutoff_checked_at = datetime.min.replace(tzinfo=UTC)
        self._loaded = False
        self.notify: Callable[[Order, Mapping[str, Any], bool], Any] | None = None
        """Tells the approvers (order, approval, escalated): the node wires notifications."""
        d.flow.on_held = self.on_held

    # -- a decision held ----------------------------------------------------------------

    def on_held(self, order: Order, approval: Mapping[str, Any]) -> None:
        policies = json.loads(approval["policies_json"])
        due = approval.get("escalate_at")
        if due is not None and (self._next_escalation is None or due < self._next_escalation):
            self._next_escalation = due
        self.d.alerts.raise_(
            "approval_pending", severity="warning", order_id=order.order_id,
            alloc_id=approval.get("alloc_id"),
            detail={"policies": [p["id"] for p in policies],
                    "approvers": sorted({p["approvers"]["role"] for p in policies}),
                    "cl_ord_id": order.oms_cl_ord_id, "book": order.book})
        log.info("approval.held", order_id=order.order_id, alloc_id=approval.get("alloc_id"),
                 policies=[p["id"] for p in policies])
        if self.notify is not None:
            self.notify(order, approval, False)

    # -- votes --------------------------------------------------------------------------

    def handle(self, ev: ApprovalRequested) -> dict[str, Any]:
        if ev.action == "override":
            return self.override(ev.target, ev.lines or {}, actor=ev.actor, reason=ev.reason)
        return self.vote(ev.target, actor=ev.actor, roles=ev.roles, vote=ev.action,
                         reason=ev.reason)

    def vote(self, alloc_id: str, *, actor: str, roles: Sequence[str], vote: str,
             reason: str) -> dict[str, Any]:
        """Count one vote (VoteRefused says why it cannot count); act on the outcome."""
        d = self.d
        approval = records.load(d.db, alloc_id)
        order = d.lifecycle.order_of(alloc_id)
        if approval is None or order is None:
            raise LookupError(f"no approval for allocation {alloc_id}")
        before = records.votes(d.db, alloc_id)
        check_vote(approval, before, actor=actor, roles=roles, vote=vote, reason=reason)
        now = d.clock.now()
        row = {"alloc_id": alloc_id, "actor": actor, "roles": ",".join(sorted(roles)),
               "vote": vote, "reason": reason.strip(), "voted_at": now}
        result = tally(approval, [*before, row])
        outcome = None if result.state == "pending" else result.state
        records.record_vote(d.db, row, outcome, decided_by=",".join(
            sorted({v["actor"] for v in [*before, row]})), at_=now)
        d.db.append_event(f"approval.{vote}", recorded_at=now, order_id=order.order_id,
                          alloc_id=alloc_id, detail={"actor": actor, "reason": reason,
                                                     "outcome": result.state})
        if outcome == "approved":
            order.allocs[alloc_id] = "pending_send"
            order.alloc_status = "pending_send"
            d.flow.send(order, alloc_id)
        elif outcome == "rejected":
            order.allocs[alloc_id] = "approval_rejected"
            order.alloc_status = "approval_rejected"
            d.exceptions.open(
                "approval_rejected", reason=f"rejected by {actor}: {reason.strip()}",
                next_step="submit an override with the split to send "
                          f"(POST /orders/{order.order_id}/override), or leave the block "
                          "unallocated and book it by hand",
                order=order, alloc_id=alloc_id)
        d.orders.dirty.add(order.order_id)
        log.info("approval.voted", alloc_id=alloc_id, actor=actor, vote=vote,
                 outcome=result.state)
        return {"alloc_id": alloc_id, "state": result.state,
                "policies": list(result.policies), "waiting_for": result.waiting_for}

    def override(self, order_id: str, lines: Mapping[str, str], *, actor: str,
                 reason: str) -> dict[str, Any]:
        """A person's split for a block whose decision was rejected: decided, stored and
        sent (or held again) like any decision, referring to the rejected one."""
        d = self.d
        if not reason.strip():
            raise VoteRefused("an override needs a reason", invalid=True)
        order = d.orders.get(order_id)
        if order is None:
            raise LookupError(f"unknown order {order_id}")
        rejected = order.alloc_id
        if rejected is None or order.allocs.get(rejected) != "approval_rejected":
            raise VoteRefused(f"{order_id}: only a block whose allocation was rejected at "
                              f"approval may be overridden (its allocation is "
                              f"{order.allocs.get(rejected or '', 'none')})")
        split = _split(lines, {a.account_id for a in d.refdata.accounts_for(order.book)})
        alloc_id = d.flow.allocate(order, override=Override(
            split, reason=f"override by {actor}: {reason.strip()}", rejected=rejected))
        now = d.clock.now()
        d.db.append_event("approval.override", recorded_at=now, order_id=order_id,
                          alloc_id=alloc_id, detail={"actor": actor, "reason": reason,
                                                     "rejected": rejected,
                                                     "lines": {a: str(q) for a, q in
                                                               split.items()}})
        if alloc_id is None:
            raise VoteRefused(f"{order_id}: the engine refused the split; see the "
                              "exceptions queue")
        d.db.resolve_exceptions(at=now, by=actor, resolution=f"overridden by {alloc_id}",
                                alloc_id=rejected, kinds=("approval_rejected",))
        d.orders.dirty.add(order_id)
        return {"order_id": order_id, "alloc_id": alloc_id, "overrides": rejected,
                "state": order.allocs.get(alloc_id)}

    # -- deadlines ----------------------------------------------------------------------

    def on_tick(self, now: datetime) -> None:
        if not self._loaded:  # after recovery: the deadlines of approvals held before
            self._next_escalation = records.next_escalation(self.d.db)
            self._loaded = True
        if self._next_escalation is not None and now >= self._next_escalation:
            self._escalate(now)
        local = now.astimezone(NEW_YORK)
        if (local.time() >= self.cutoff and local.date() not in self._cutoff_alerted
                and now >= self._cutoff_checked_at + timedelta(minutes=1)):
            # Checked once a minute after the cut-off, and alerted once a day.
            self._cutoff_checked_at = now
            pending = [a for a in records.listing(self.d.db, state="pending")
                       if a["requested_at"].astimezone(NEW_YORK).date() <= local.date()]
            if pending:
                self._cutoff_alerted.add(local.date())
                self.d.alerts.raise_(
                    "approvals_pending_at_cutoff", detail={
                        "cutoff": self.cutoff.strftime("%H:%M"),
                        "allocations": [a["alloc_id"] for a in pending],
                        "orders": [a["order_id"] for a in pending]})

    def _escalate(self, now: datetime) -> None:
        for approval in records.due_for_escalation(self.d.db, now):
            records.mark_escalated(self.d.db, approval["alloc_id"], now)
            roles = sorted({p["escalate"]["role"] for p in json.loads(approval["policies_json"])
                            if p.get("escalate")})
            self.d.alerts.raise_("approval_escalated", order_id=approval["order_id"],
                                 alloc_id=approval["alloc_id"],
                                 detail={"to": roles, "requested_at":
                                         approval["requested_at"].isoformat()})
            order = self.d.orders.get(approval["order_id"])
            if self.notify is not None and order is not None:
                self.notify(order, approval, True)
        self._next_escalation = records.next_escalation(self.d.db)


def _split(lines: Mapping[str, str], accounts: set[str]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for account, qty in lines.items():
        if account not in accounts:
            raise VoteRefused(f"account {account!r} is not in the order's book",
                              invalid=True)
        try:
            value = Decimal(str(qty))
        except InvalidOperation:
            raise VoteRefused(f"{account}: {qty!r} is not a quantity", invalid=True) from None
        if not value.is_finite() or value <= 0 or value != value.to_integral_value():
            raise VoteRefused(f"{account}: the quantity must be a positive whole number",
                              invalid=True)
        out[account] = value
    if not out:
        raise VoteRefused("an override needs at least one account", invalid=True)
    return out
