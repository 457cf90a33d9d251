"""What the people of a book are told: an allocation sent, an exception opened.

Built on the dispatcher thread from what was just stored and handed to the notifier,
which writes its outbox row and returns: delivery never blocks or loses the allocation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.notify.message import Notification
from gateway.persistence.store import Database


def allocation_sent(order: Any, alloc: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                    db: Database) -> Notification:
    kind = {"0": "New", "1": "Replace", "2": "Cancel"}.get(str(alloc["alloc_trans_type"]), "")
    flagged = [x for x in order.excluded][:50]
    exceptions = [{"kind": e["kind"], "reason": e["reason"], "next_step": e["next_step"]}
                  for e in db.exceptions(state="open", alloc_id=str(alloc["alloc_id"]))]
    return Notification(
        kind="allocation_sent", book=order.book,
        subject=f"{order.book} {order.side} {alloc['quantity']} {order.symbol} @ "
                f"{alloc['avg_px']}: J {kind} {alloc['alloc_id']} sent to {order.broker}",
        summary={"alloc_id": alloc["alloc_id"], "order_id": order.order_id,
                 "cl_ord_id": order.oms_cl_ord_id, "trans_type": kind,
                 "ref_alloc_id": alloc.get("ref_alloc_id"), "quantity": alloc["quantity"],
                 "avg_px": alloc["avg_px"], "accounts": len(rows),
                 "excluded_or_capped": [{"account_id": x.get("account_id"),
                                         "status": x.get("status"),
                                         "reason": (x.get("reasons") or [{}])[0].get("text")}
                                        for x in flagged],
                 "exceptions": exceptions},
        text=f"{len(rows)} accounts, {len(order.excluded)} excluded or capped before trading; "
             f"{len(exceptions)} open exception(s) on this allocation.")


def exception_opened(fields: Mapping[str, Any]) -> Notification:
    return Notification(
        kind="exception_opened", book=fields.get("book"),
        subject=f"exception {fields['kind']}: {fields.get('alloc_id') or fields.get('order_id')}",
        summary={**dict(fields), "exceptions": [dict(fields)]},
        text=f"{fields['reason']}\nNext step: {fields['next_step']}")


def approval_pending(order: Any, approval: Mapping[str, Any], *, escalated: bool = False
                     ) -> Notification:
    """A decision held for approval (or escalated): who must approve it, and where."""
    import json

    policies = json.loads(approval["policies_json"])
    roles = sorted({p["escalate"]["role"] if escalated and p.get("escalate")
                    else p["approvers"]["role"] for p in policies})
    alloc_id = approval["alloc_id"]
    what = "escalated" if escalated else "awaits approval"
    return Notification(
        kind="approval_pending", book=order.book,
        subject=f"{order.book} {order.side} {order.symbol}: allocation {alloc_id} {what} "
                f"({', '.join(roles)})",
        summary={"alloc_id": alloc_id, "order_id": order.order_id,
                 "cl_ord_id": order.oms_cl_ord_id, "escalated": escalated,
                 "approvers": roles, "policies": [
                     {"id": p["id"], "version": p["version"], "description": p["description"],
                      "count": p["approvers"]["count"]} for p in policies],
                 "link": f"/ui/allocations/{alloc_id}", "api": f"/approvals/{alloc_id}"},
        text="\n".join(f"{p['id']} v{p['version']}: {p['description']} "
                       f"({p['approvers']['count']} x {p['approvers']['role']})"
                       for p in policies))
