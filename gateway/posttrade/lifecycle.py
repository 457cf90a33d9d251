"""An allocation after its J: the broker's P, corrections, and what a person may do.

Runs on the dispatcher thread. Every J of an order is its own allocation row (J1 New,
J2 Replace of J1, J3 Cancel, ...); the order's `alloc_id` is the one in force.

  P 87=3        received: the J waits for the outcome (an exception if it never comes)
  P 87=0        accepted: a Replace makes the J it replaces `replaced`, a Cancel makes
                it `cancelled`; the tickets of the accepted J await their AKs
  P 87=1/5      block reject: that J is dead. If executions were corrected since it was
                decided, a fresh J New (new AllocID) goes out at once on the corrected
                executions; otherwise it is an exception for a person
  P 87=2        account reject: an exception naming the lines, fixed by a Replace or a
                Cancel + New as the broker's session says (account_reject_fix)
  refused       a Replace or Cancel rejected after the J it changes was accepted:
                `replace_refused`, a manual-intervention exception and an alert

A bust or correction after the J sends a J Replace decided under the original decision's
rulebook and reference-data versions (only the executions differ), or a J Cancel when
nothing is left; both decisions and their difference are recorded.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from gateway import faults
from gateway.events import AllocationAckReceived
from gateway.metrics import METRICS
from gateway.orders import ALLOC_STATUS_FROM_P, Order
from gateway.posttrade.versions import VersionUnavailable, refdata_at, rulebook_at

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.lifecycle")

DEAD = ("block_rejected", "session_rejected", "replaced", "cancelled", "approval_rejected")
"""An allocation in one of these states is over: a new J is needed for the block."""
_AUTO_FIX_CODES = {"1", "2", "8", "9", "10"}
"""AllocRejCodes a correction explains (quantity, average price, calculation, ExecID)."""


class Lifecycle:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        # When each sent J's wait for a final P ends: read once, so a tick costs no
        # database read per allocation.
        self._p_due: dict[str, datetime] = {}

    def order_of(self, alloc_id: str) -> Order | None:
        order_id = alloc_id.rsplit("-J", 1)[0]
        order = self.d.orders.get(order_id)
        return order if order is not None and alloc_id in order.allocs else None

    # -- the broker's P ----------------------------------------------------------------------

    def on_ack(self, ev: AllocationAckReceived) -> None:
        d = self.d
        order = self.order_of(ev.alloc_id)
        if order is None:
            d.alerts.raise_("unknown_alloc_ack", severity="warning", session_id=ev.session,
                            alloc_id=ev.alloc_id, detail={"status": ev.alloc_status,
                                                          "from": "broker"})
            return
        faults.point("ack_received")
        alloc = d.db.load_allocation(ev.alloc_id)
        assert alloc is not None
        now = d.clock.now()
        state = ALLOC_STATUS_FROM_P.get(ev.alloc_status, "received")
        current = order.allocs[ev.alloc_id]
        if current in ("accepted", *DEAD, "replace_refused") and state == "received":
            return  # a fragment's or a late 87=3 after the outcome: nothing to do
        if state == "received":
            self._set(order, ev.alloc_id, "received", ack_status=ev.alloc_status,
                      ack_text=ev.text, received_at=alloc.get("received_at") or now)
            return
        trans = alloc["alloc_trans_type"]
        ref = alloc.get("ref_alloc_id")
        if "rejected" in state and trans in ("1", "2") and ref \
                and order.allocs.get(ref) == "accepted":
            self._refused_after_acceptance(order, alloc, ev)
            return
        self._set(order, ev.alloc_id, state, ack_status=ev.alloc_status, rej_code=ev.rej_code,
                  ack_text=ev.text, acked_at=now)
        log.info("allocation.ack", alloc_id=ev.alloc_id, status=state, trans_type=trans,
                 rej_code=ev.rej_code, text=ev.text, cl_ord_id=order.oms_cl_ord_id)
        if state == "accepted":
            self._accepted(order, alloc)
        elif state == "block_rejected":
            d.alerts.raise_("allocation_block_rejected", session_id=ev.session,
                            alloc_id=ev.alloc_id, order_id=order.order_id,
                            detail={"rej_code": ev.rej_code, "text": ev.text})
            self._block_rejected(order, alloc, ev)
        elif state == "account_rejected":
            d.alerts.raise_("allocation_account_rejected", session_id=ev.session,
                            alloc_id=ev.alloc_id, order_id=order.order_id,
                            detail={"rej_code": ev.rej_code, "text": ev.text,
                                    "lines": [list(x) for x in ev.rejected_lines]})
            self._account_rejected(order, alloc, ev)

    def _set(self, order: Order, alloc_id: str, status: str, **values: Any) -> None:
        order.allocs[alloc_id] = status
        if status not in ("sent", "received"):
            self._p_due.pop(alloc_id, None)  # its wait for a final P is over
        if order.alloc_id == alloc_id:
            order.alloc_status = status
        self.d.db.update_allocation(alloc_id, status=status, **values)
        METRICS.allocations.labels(state=status).inc()

    def _accepted(self, order: Order, alloc: dict[str, Any]) -> None:
        d = self.d
        trans, ref = alloc["alloc_trans_type"], alloc.get("ref_alloc_id")
        d.exceptions.resolve(by="broker", resolution=f"{alloc['alloc_id']} accepted",
                             alloc_id=alloc["alloc_id"])
        d.replaces.on_j_accepted(order, alloc["alloc_id"])
        # Every accepted J's AK wait is watched (a Cancel's ends without a BH: no AK owed).
        d.confirmations.watch(order.order_id, order.broker, alloc["alloc_id"], d.clock.now())
        if trans == "1" and ref:
            self._set(order, ref, "replaced")
            self._carry_tickets(ref, alloc["alloc_id"])
            d.db.update_lines(ref, ticket_state="superseded")
            d.exceptions.resolve(by="broker", resolution=f"replaced by {alloc['alloc_id']}",
                                 alloc_id=ref)
        elif trans == "2" and ref:
            self._set(order, ref, "cancelled")
            d.db.update_lines(ref, ticket_state="cancelled")
            d.exceptions.resolve(by="broker", resolution=f"cancelled by {alloc['alloc_id']}",
                                 alloc_id=ref)
            if order.alloc_id == alloc["alloc_id"] or order.alloc_id == ref:
                order.alloc_id = ref
                order.alloc_status = "cancelled"
            if order.new_after_cancel is not None:
                reason, order.new_after_cancel = order.new_after_cancel, None
                self.new_j(order, reason=reason)

    def _carry_tickets(self, old_id: str, new_id: str) -> None:
        """A line the Replace left unchanged keeps its confirmation: the broker sends no
        new AK for it (only for lines whose quantity or price changed, or new ones)."""
        old = {x["account_id"]: x for x in self.d.db.load_allocation_lines(old_id)}
        for line in self.d.db.load_allocation_lines(new_id):
            before = old.get(line["account_id"])
            if before is None or before["qty"] != line["qty"] \
                    or before["avg_px"] != line["avg_px"] or before["confirm_id"] is None:
                continue
            self.d.db.update_line(line["individual_alloc_id"],
                                  ticket_state=before["ticket_state"],
                                  confirm_id=before["confirm_id"],
                                  ak_received_at=before["ak_received_at"],
                                  affirmed_at=before["affirmed_at"])

    def _block_rejected(self, order: Order, alloc: dict[str, Any],
                        ev: AllocationAckReceived) -> None:
        if alloc["alloc_trans_type"] == "0" and ev.rej_code in _AUTO_FIX_CODES \
                and order.ledger.changed_by_correction:
            # The broker's figures differ from ours because executions were corrected
            # since this J was decided: a fresh J on the corrected executions is the fix.
            self.new_j(order, reason=f"automatic: {alloc['alloc_id']} block-rejected "
                                     f"(88={ev.rej_code}) after a correction")
            return
        self.d.exceptions.open(
            "block_rejected", order=order, alloc_id=alloc["alloc_id"], session_id=ev.session,
            reason=f"the broker rejected the whole J (AllocRejCode {ev.rej_code}): "
                   f"{ev.text or 'no text'}",
            next_step=f"correct the cause, then `fixalloc alloc resend {alloc['alloc_id']} "
                      "--reason ...` sends a fresh J New with a new AllocID",
            detail={"rej_code": ev.rej_code, "text": ev.text})

    def _account_rejected(self, order: Order, alloc: dict[str, Any],
                          ev: AllocationAckReceived) -> None:
        fix = self.d.config.broker(order.broker).account_reject_fix
        how = "a J Replace" if fix == "replace" else "a J Cancel, then a J New"
        for line_id, _code in ev.rejected_lines:
            self.d.db.update_line(line_id, ticket_state="rejected")
        self.d.exceptions.open(
            "account_rejected", order=order, alloc_id=alloc["alloc_id"],
            session_id=ev.session,
            reason=f"the broker rejected {len(ev.rejected_lines) or 'some'} line(s): "
                   + ", ".join(f"{line} (776={code})" for line, code in ev.rejected_lines),
            next_step=f"fix the account or settlement data, then `fixalloc alloc replace "
                      f"{alloc['alloc_id']} --reason ...` ({how}, as this broker wants)",
            detail={"lines": [list(x) for x in ev.rejected_lines], "text": ev.text})

    def _refused_after_acceptance(self, order: Order, alloc: dict[str, Any],
                                  ev: AllocationAckReceived) -> None:
        self._set(order, alloc["alloc_id"], "replace_refused", ack_status=ev.alloc_status,
                  rej_code=ev.rej_code, ack_text=ev.text, acked_at=self.d.clock.now())
        order.alloc_id = alloc["ref_alloc_id"]
        order.alloc_status = "accepted"
        what = "Replace" if alloc["alloc_trans_type"] == "1" else "Cancel"
        self.d.exceptions.open(
            "replace_refused", order=order, alloc_id=alloc["alloc_id"], session_id=ev.session,
            reason=f"the broker refused the {what} {alloc['alloc_id']} of the accepted "
                   f"{alloc['ref_alloc_id']}: {ev.text or 'no text'}",
            next_step="manual intervention: agree the change with the broker by phone or "
                      "on its portal, then resolve this exception",
            detail={"rej_code": ev.rej_code, "text": ev.text})

    # -- new J transactions ----------------------------------------------------------------

    def new_j(self, order: Order, *, reason: str) -> str | None:
        """A fresh J New (new AllocID) on the order's executions as they stand."""
        decided = self.d.flow.decide(order)
        if decided is None:
            return None
        decision, rotation = decided
        stored = self.d.flow.store(order, decision, reason=reason, rotation_offset=rotation)
        self.d.flow.send(order, stored[0]["alloc_id"], stored=stored)
        return str(stored[0]["alloc_id"])

    def replace_j(self, order: Order, ref_alloc_id: str, *, reason: str,
                  original_conditions: bool) -> str | None:
        """A J Replace of `ref_alloc_id` carrying the complete new allocation.

        `original_conditions`: decide under the rulebook, reference data and rotation of
        the decision being replaced (a correction); else under the current ones (a person
        fixed the data that made the broker reject lines).
        """
        d = self.d
        previous = d.db.load_allocation(ref_alloc_id)
        assert previous is not None
        old_decision = d.db.load_decision(previous["decision_id"])
        assert old_decision is not None
        kwargs: dict[str, Any] = {}
        if original_conditions:
            try:
                kwargs["rulebook"] = rulebook_at(old_decision["rulebook_version"], d.db,
                                                 d.flow.rulebooks)
                if old_decision.get("refdata_version"):
                    kwargs["refdata"] = refdata_at(old_decision["refdata_version"], d.db,
                                                   d.config, d.flow.refdata)
            except VersionUnavailable as exc:
                d.exceptions.open("replace_failed", order=order, alloc_id=ref_alloc_id,
                                  reason=f"cannot decide under the original versions: {exc}",
                                  next_step="replace by hand under the current rulebook: "
                                            f"`fixalloc alloc replace {ref_alloc_id}`")
                return None
            kwargs["rotation_offset"] = old_decision.get("rotation_offset")
        decided = d.flow.decide(order, **kwargs)
        if decided is None:
            return None
        decision, rotation = decided
        stored = d.flow.store(order, decision, trans_type="1", ref_alloc_id=ref_alloc_id,
                              reason=reason, rotation_offset=rotation,
                              refdata_version=(kwargs["refdata"].version if "refdata" in kwargs
                                               else None),
                              refdata=kwargs.get("refdata"))
        before = {r["account_id"]: r["qty"] for r in d.db.load_allocation_lines(ref_alloc_id)}
        after = {r["account_id"]: r["qty"] for r in stored[1]}
        diff = {a: [before.get(a, "0"), after.get(a, "0")] for a in sorted(before.keys()
                | after.keys()) if before.get(a) != after.get(a)}
        d.db.append_event("allocation.replaced", recorded_at=d.clock.now(),
                          order_id=order.order_id, alloc_id=stored[0]["alloc_id"],
                          detail={"replaces": ref_alloc_id, "reason": reason,
                                  "old_decision": previous["decision_id"],
                                  "new_decision": decision.decision_id,
                                  "old": {"quantity": previous["quantity"],
                                          "avg_px": previous["avg_px"]},
                                  "new": {"quantity": str(decision.allocated_qty),
                                          "avg_px": str(decision.avg_px)},
                                  "lines_changed": diff})
        d.flow.send(order, stored[0]["alloc_id"], stored=stored)
        return str(stored[0]["alloc_id"])

    def cancel_j(self, order: Order, ref_alloc_id: str, *, reason: str) -> str:
        stored = self.d.flow.store_cancel(order, ref_alloc_id, reason)
        self.d.flow.send(order, stored[0]["alloc_id"], stored=stored)
        order.alloc_id = stored[0]["alloc_id"]
        order.alloc_status = "sent"
        return str(stored[0]["alloc_id"])

    def live(self, order: Order) -> str | None:
        """The J in force: the latest that is not over and is not a Cancel."""
        for alloc_id in reversed(list(order.allocs)):
            status = order.allocs[alloc_id]
            if status not in DEAD and status not in ("replace_refused", "exception") \
                    and not self._is_cancel(alloc_id):
                return alloc_id
        return None

    def _is_cancel(self, alloc_id: str) -> bool:
        alloc = self.d.db.load_allocation(alloc_id)
        return bool(alloc and alloc["alloc_trans_type"] == "2")

    # -- corrections after the J -------------------------------------------------------------

    def on_correction(self, order: Order, exec_id: str) -> None:
        """A bust or correction changed a block that already has a J."""
        live = self.live(order)
        if live is None:
            dead = next(reversed(order.allocs), None)
            if dead is not None and order.allocs[dead] in DEAD and order.ledger.cum_qty > 0:
                self.new_j(order, reason=f"execution {exec_id} corrected after {dead} ended")
            return
        if order.ledger.cum_qty <= 0:
            self.cancel_j(order, live, reason=f"every execution busted (last: {exec_id})")
            return
        self.replace_j(order, live, reason=f"execution {exec_id} busted or corrected",
                       original_conditions=True)

    # -- timers ------------------------------------------------------------------------------

    def on_tick(self, now: datetime) -> None:
        """A J with no final P in time is an exception; never a second J as New."""
        for order in self.d.orders.values():
            for alloc_id, status in list(order.allocs.items()):
                if status not in ("sent", "received") or alloc_id in order.p_overdue:
                    continue
                limit = self.d.config.broker(order.broker).p_timeout_minutes
                due = self._p_due.get(alloc_id)
                if due is None:
                    alloc = self.d.db.load_allocation(alloc_id)
                    if alloc is None or alloc.get("sent_at") is None:
                        continue
                    due = self._p_due[alloc_id] = alloc["sent_at"] + timedelta(minutes=limit)
                if now < due:
                    continue
                self._p_due.pop(alloc_id, None)
                order.p_overdue.add(alloc_id)
                self.d.exceptions.open(
                    "p_timeout", order=order, alloc_id=alloc_id,
                    reason=f"no final P for {alloc_id} {limit:g} minutes after it was sent "
                           f"(last: {status})",
                    next_step="check the session for a resend gap and call the broker; do "
                              "NOT resend the J as New (it would book twice)")

    # -- what a person asks for ---------------------------------------------------------------

    def operator(self, action: str, alloc_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        """resend | replace | cancel one allocation, recorded with who and why."""
        d = self.d
        order = self.order_of(alloc_id)
        if order is None:
            raise LookupError(f"unknown allocation {alloc_id}")
        status = order.allocs[alloc_id]
        result: str | None
        if action == "resend":
            if status not in ("block_rejected", "session_rejected"):
                raise ValueError(f"{alloc_id} is {status}: only a rejected J is resent as New")
            result = self.new_j(order, reason=f"{actor}: {reason}")
        elif action == "replace":
            if status in DEAD or status == "pending_send":
                raise ValueError(f"{alloc_id} is {status}: there is nothing live to replace")
            broker = d.config.broker(order.broker)
            if broker.account_reject_fix == "cancel_new" and status == "account_rejected":
                order.new_after_cancel = f"{actor}: {reason}"
                result = self.cancel_j(order, alloc_id, reason=f"{actor}: {reason}")
            else:
                result = self.replace_j(order, alloc_id, reason=f"{actor}: {reason}",
                                        original_conditions=False)
        elif action == "cancel":
            if status in DEAD:
                raise ValueError(f"{alloc_id} is {status}: there is nothing to cancel")
            result = self.cancel_j(order, alloc_id, reason=f"{actor}: {reason}")
        else:
            raise ValueError(f"unknown action {action!r}")
        d.db.append_event(f"operator.{action}", recorded_at=d.clock.now(),
                          order_id=order.order_id, alloc_id=alloc_id,
                          detail={"actor": actor, "reason": reason, "result": result})
        d.exceptions.resolve(by=actor, resolution=f"{action}: {reason} -> {result}",
                             alloc_id=alloc_id)
        log.info("operator.action", action=action, alloc_id=alloc_id, actor=actor,
                 reason=reason, result=result)
        return {"action": action, "alloc_id": alloc_id, "result": result, "actor": actor}

