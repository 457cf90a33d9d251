"""What the dispatcher learns about the sessions themselves, and the peers' answers to us.

- Logons per session are counted in a sliding window: N logons within M seconds is a
  reconnect loop (a peer answering with ResetSeqNumFlag=Y, a bad password, a schedule
  mismatch) and raises an alert with the last reason the peer gave.
- A peer's session Reject (35=3) is linked to the message it rejects through the wire
  log (RefSeqNum -> our outbound message -> the AllocID/ClOrdID it carried), so a
  rejected J shows in its allocation's state, not only as an event with empty ids.
- The OMS's AllocationInstructionAck (P) to its copy of our J is recorded on the
  allocation.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from gateway.events import OmsAllocationAckReceived, SessionRejectReceived, SessionStateChanged
from gateway.metrics import METRICS
from gateway.orders import ALLOC_STATUS_FROM_P, InvalidTransition, alloc_transition

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.sessions")


class SessionWatch:
    def __init__(self, d: Dispatcher, *, loop_logons: int, loop_window_seconds: float) -> None:
        self.d = d
        self.loop_logons = loop_logons
        self.window = timedelta(seconds=loop_window_seconds)
        self._logons: dict[str, deque[datetime]] = {}
        self._looping: dict[str, datetime] = {}
        self.last_reason: dict[str, str] = {}
        self.refused: dict[str, int] = {}
        """Logons refused in a row, per session (cleared by a logon)."""

    def on_state(self, ev: SessionStateChanged) -> None:
        if ev.reason:
            self.last_reason[ev.session] = ev.reason
        if ev.refused:
            self.refused[ev.session] = ev.refused
            if ev.refused == 1:  # once per streak; the count and pause are in /readyz
                self.d.alerts.raise_("logon_refused", session_id=ev.session, detail={
                    "reason": ev.reason or "the peer closed the session without a reason",
                    "retry_seconds": ev.retry_seconds})
            log.warning("fix.logon_refused", session=ev.session, refused=ev.refused,
                        retry_seconds=ev.retry_seconds, reason=ev.reason)
        if not ev.logged_on:
            return
        self.refused.pop(ev.session, None)
        METRICS.logons.labels(session=ev.session).inc()
        seen = self._logons.setdefault(ev.session, deque())
        seen.append(ev.ts_recv)
        while seen and ev.ts_recv - seen[0] > self.window:
            seen.popleft()
        if len(seen) < self.loop_logons:
            return
        last_alert = self._looping.get(ev.session)
        if last_alert is not None and ev.ts_recv - last_alert < self.window:
            return
        self._looping[ev.session] = ev.ts_recv
        reason = self.last_reason.get(ev.session) or "the peer gave no reason"
        self.d.alerts.raise_("reconnect_loop", session_id=ev.session, detail={
            "logons": len(seen), "window_seconds": self.window.total_seconds(),
            "reason": reason})

    def health(self) -> dict[str, Any]:
        out = {}
        for key, seen in self._logons.items():
            looping_since = self._looping.get(key)
            out[key] = {"logons_in_window": len(seen),
                        "reconnect_loop": bool(looping_since and seen
                                               and seen[-1] - looping_since < self.window),
                        "last_reason": self.last_reason.get(key),
                        "logons_refused": self.refused.get(key, 0)}
        return out

    # -- a peer's Reject of one of our messages --------------------------------------------

    def on_session_reject(self, ev: SessionRejectReceived) -> None:
        d = self.d
        sent = d.db.sent_message_at(ev.session, ev.ref_seq_num) if ev.ref_seq_num else None
        msg_type = (sent or {}).get("msg_type") or ev.ref_msg_type
        ref = (sent or {}).get("ref_id")
        alloc_id = ref if msg_type == "J" else None
        order_id = ref.split("~", 1)[0] if msg_type in ("D", "F") and ref else None
        if alloc_id:
            order_id = self._reject_allocation(ev, alloc_id)
        d.alerts.raise_("session_reject", session_id=ev.session, order_id=order_id,
                        alloc_id=alloc_id,
                        detail={"ref_seq_num": ev.ref_seq_num, "ref_msg_type": msg_type,
                                "ref_tag": ev.ref_tag, "reason": ev.reason, "text": ev.text})

    def _reject_allocation(self, ev: SessionRejectReceived, alloc_id: str) -> str | None:
        d = self.d
        alloc = d.db.load_allocation(alloc_id)
        if alloc is None:
            return None
        facts = d.order_facts(alloc["order_id"])
        order = d.orders.in_memory(alloc["order_id"])
        text = f"session Reject: {ev.text or ev.reason or 'no text'}"
        if facts is not None and ev.session == facts.oms_session:
            d.db.update_allocation(alloc_id, oms_status="session_rejected", oms_ack_text=text,
                                   oms_acked_at=ev.ts_recv)
            return str(alloc["order_id"])
        current = str(order.alloc_status if order is not None else alloc["status"])
        try:
            new = alloc_transition(current, "session_rejected")
        except InvalidTransition:
            log.warning("allocation.session_reject_ignored", alloc_id=alloc_id, state=current)
            return str(alloc["order_id"])
        if order is not None:
            order.alloc_status = new
        d.db.update_allocation(alloc_id, status=new, ack_text=text, acked_at=ev.ts_recv)
        METRICS.allocations.labels(state=new).inc()
        return str(alloc["order_id"])

    # -- the OMS's P ------------------------------------------------------------------------

    def on_oms_ack(self, ev: OmsAllocationAckReceived) -> None:
        d = self.d
        alloc = d.db.load_allocation(ev.alloc_id)
        order = d.order_facts(alloc["order_id"]) if alloc else None
        if alloc is None or (order is not None and order.oms_session != ev.session):
            d.alerts.raise_("unknown_alloc_ack", severity="warning", session_id=ev.session,
                            alloc_id=ev.alloc_id, detail={"status": ev.alloc_status,
                                                          "from": "oms"})
            return
        state = ALLOC_STATUS_FROM_P.get(ev.alloc_status, "received")
        d.db.update_allocation(ev.alloc_id, oms_status=state, oms_ack_text=ev.text,
                               oms_acked_at=ev.ts_recv)
        log.info("allocation.oms_ack", alloc_id=ev.alloc_id, status=state, text=ev.text)
        if "rejected" in state:
            d.alerts.raise_(f"oms_allocation_{state}", session_id=ev.session,
                            alloc_id=ev.alloc_id, order_id=alloc["order_id"],
                            detail={"rej_code": ev.rej_code, "text": ev.text})
