"""Confirmations (AK) matched against our lines and answered (AU); BH for missing AKs; AS.

One AK per allocation line. Its economics are compared with the line we sent: account,
quantity, side, average price, gross, net money and commission within the broker's
tolerances, trade and settlement dates. A match is affirmed (AU 940=3), a mismatch
rejected (AU 940=2 with ConfirmRejReason and the fields in Text) and kept as an
exception until the broker's replacement AK (666=1) matches. A status confirm (773=1,
e.g. 665=3 missing SSI) is an exception and is not affirmed; a copy confirm gets 940=1
only; a cancel AK (666=2) closes its ticket. An AK for no AllocID or line of ours is
rejected and alerted. A line still without an AK `ak_timeout_minutes` after P accepted
gets a ConfirmationRequest (BH); the AK that answers echoes its ConfirmReqID.
An AllocationReport (AS) is recorded, reconciled against our allocation and answered
with an AllocationReportAck (AT).
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

import structlog

from gateway import faults
from gateway.fix import confirm_codec as cc
from gateway.metrics import METRICS

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher
    from gateway.events import AllocationReportReceived, ConfirmationReceived

log = structlog.get_logger("fixalloc.confirmations")
CENT = Decimal("0.01")


def match(line: dict[str, Any], alloc: dict[str, Any], ak: cc.ConfirmationFields,
          side: str, tolerance: Any, commission_per_share: Decimal | None = None
          ) -> dict[str, list[str]]:
    """Field -> [ours, theirs] for every difference beyond the broker's tolerance.

    Our commission is the broker's agreed rate times the line's quantity, to the cent
    (none without a rate); our net money adds it to the gross on a buy and takes it off
    on a sell, as the broker's AK must.
    """
    qty, px = Decimal(line["qty"]), Decimal(line["avg_px"])
    gross = (qty * px).quantize(CENT, rounding=ROUND_HALF_EVEN)
    commission = Decimal(0) if commission_per_share is None else (
        qty * commission_per_share).quantize(CENT, rounding=ROUND_HALF_EVEN)
    net = gross + commission if side == "buy" else gross - commission
    out: dict[str, list[str]] = {}

    def differs(name: str, ours: Any, theirs: Any, limit: Decimal | None = None) -> None:
        if theirs is None:
            return
        if (limit is None and ours != theirs) or (limit is not None
                                                  and abs(ours - theirs) > limit):
            out[name] = [str(ours), str(theirs)]

    differs("account", line["account_id"], ak.account)
    differs("qty", qty, ak.qty, Decimal(0))
    differs("side", side, ak.side)
    differs("avg_px", px, ak.avg_px, tolerance.price)
    differs("gross", gross, ak.gross, tolerance.money)
    differs("net_money", net, ak.net_money, tolerance.money)
    differs("commission", commission, ak.commission, tolerance.commission)
    differs("trade_date", alloc["trade_date"], ak.trade_date)
    differs("settl_date", alloc["settl_date"], ak.settl_date)
    return out


class Confirmations:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        # (when its AK wait ends, AllocID, order id) per accepted J, earliest first: a tick
        # looks at the head only, so its cost does not grow with the allocations of the
        # day, and a J whose order has left memory is still watched.
        self._ak_due: list[tuple[datetime, str, str]] = []
        self.recently_checked: deque[str] = deque(maxlen=1000)
        """AllocIDs whose AK wait ended and was acted on, the latest last (bounded)."""

    def on_confirmation(self, ev: ConfirmationReceived) -> None:
        d = self.d
        ak = ev.fields
        now = d.clock.now()
        line = d.db.line(ak.individual_alloc_id) if ak.individual_alloc_id else None
        alloc = d.db.load_allocation(ak.alloc_id) if ak.alloc_id else None
        if line is None or alloc is None or line["alloc_id"] != alloc["alloc_id"]:
            self._answer(ev, "unknown", cc.CONFIRM_REJECTED, cc.REJ_OTHER,
                         f"unknown AllocID {ak.alloc_id} / IndividualAllocID "
                         f"{ak.individual_alloc_id}")
            d.alerts.raise_("unknown_confirmation", session_id=ev.session,
                            alloc_id=ak.alloc_id,
                            detail={"confirm_id": ak.confirm_id, "line": ak.individual_alloc_id})
            return
        order = d.order_facts(alloc["order_id"])
        line_id = line["individual_alloc_id"]
        d.db.update_line(line_id, confirm_id=ak.confirm_id, ak_received_at=now)
        if ak.trans_type == "2":
            d.db.update_line(line_id, ticket_state="cancelled")
            d.db.update_confirmation(ev.confirmation_id, outcome="cancelled", answered_at=now)
            d.exceptions.resolve(by="broker", resolution="AK cancelled",
                                 individual_alloc_id=line_id)
            return
        if ak.confirm_type == "1" or ak.confirm_status in ("2", "3", "5"):
            status = cc.CONFIRM_STATUS.get(ak.confirm_status, ak.confirm_status)
            d.db.update_line(line_id, ticket_state="exception")
            d.db.update_confirmation(ev.confirmation_id, outcome="status_exception",
                                     answered_at=now)
            d.exceptions.open(
                "status_confirm", order=order, alloc_id=alloc["alloc_id"],
                individual_alloc_id=line_id, session_id=ev.session,
                reason=f"status confirm for {line['account_id']}: {status}"
                       + (f" ({ak.text})" if ak.text else ""),
                next_step="fix the account master or settlement instructions (ALERT) and ask "
                          "the broker to re-issue the confirmation")
            return
        if ak.copy:
            self._answer(ev, "copy", cc.AFFIRM_RECEIVED, None, "copy confirm received")
            return
        broker = d.config.broker(alloc["broker"])
        side = order.side if order is not None else ak.side
        diffs = match(line, alloc, ak, side, broker.confirm_tolerance,
                      broker.commission_per_share)
        if diffs:
            reason = (cc.REJ_MISMATCHED_ACCOUNT if "account" in diffs else cc.REJ_OTHER)
            text = "; ".join(f"{k} ours {v[0]} theirs {v[1]}" for k, v in diffs.items())
            # State first, then the AU: a crash between them leaves the AK pending, and
            # recovery matches it again (both writes are idempotent) and sends the AU.
            d.db.update_line(line_id, ticket_state="rejected")
            d.exceptions.open(
                "ak_mismatch", order=order, alloc_id=alloc["alloc_id"],
                individual_alloc_id=line_id, session_id=ev.session,
                reason=f"confirmation {ak.confirm_id} for {line['account_id']} differs: {text}",
                next_step="the AU rejected it; wait for the broker's replacement AK "
                          "(matched again on arrival) or settle the difference with the broker",
                detail={"mismatches": diffs})
            self._answer(ev, "rejected", cc.CONFIRM_REJECTED, reason, text[:900],
                         mismatches=diffs)
            return
        d.db.update_line(line_id, ticket_state="affirmed", affirmed_at=now)
        d.exceptions.resolve(by="broker", resolution=f"affirmed {ak.confirm_id}",
                             individual_alloc_id=line_id)
        self._answer(ev, "affirmed", cc.AFFIRMED, None, None)
        if alloc.get("sent_at") is not None:
            METRICS.time_to_affirmation_seconds.observe((now - alloc["sent_at"]).total_seconds())

    def _answer(self, ev: ConfirmationReceived, outcome: str, status: str,
                rej_reason: str | None, text: str | None,
                mismatches: dict[str, list[str]] | None = None) -> None:
        d = self.d
        ak = ev.fields
        d.db.update_confirmation(ev.confirmation_id, outcome=outcome, affirm_status=status,
                                 rej_reason=rej_reason,
                                 mismatches_json=json.dumps(mismatches) if mismatches else None)
        trade_date = ak.trade_date or d.clock.now().date().isoformat()
        d.out.send_message(ev.session, cc.build_confirmation_ack(
            confirm_id=ak.confirm_id, trade_date=trade_date, affirm_status=status,
            rej_reason=rej_reason, text=text, transact_time=d.clock.now()))
        faults.point("au_sent")
        d.db.update_confirmation(ev.confirmation_id, answered_at=d.clock.now())
        log.info("confirmation.answered", confirm_id=ak.confirm_id, outcome=outcome,
                 affirm_status=status, line=ak.individual_alloc_id)

    def resend_answer(self, row: dict[str, Any]) -> None:
        """The AU of a stored confirmation, again (it was decided but never reached quickfix)."""
        d = self.d
        eco = json.loads(row["economics_json"])
        d.out.send_message(row["session_id"], cc.build_confirmation_ack(
            confirm_id=row["confirm_id"],
            trade_date=eco.get("trade_date") or d.clock.now().date().isoformat(),
            affirm_status=row["affirm_status"], rej_reason=row["rej_reason"],
            text="resent after a restart", transact_time=d.clock.now()))
        d.db.update_confirmation(row["id"], answered_at=d.clock.now())

    # -- missing AKs ---------------------------------------------------------------------

    def watch(self, order_id: str, broker: str, alloc_id: str, acked_at: datetime) -> None:
        """An accepted J: its lines' AKs are due `ak_timeout_minutes` after the P."""
        wait = timedelta(minutes=self.d.config.broker(broker).ak_timeout_minutes)
        heapq.heappush(self._ak_due, (acked_at + wait, alloc_id, order_id))

    def on_tick(self, now: datetime) -> None:
        while self._ak_due and self._ak_due[0][0] <= now:
            _, alloc_id, order_id = heapq.heappop(self._ak_due)
            order = self.d.order_facts(order_id)
            if order is not None:
                self.request_missing(order, alloc_id, now)
            self.recently_checked.append(alloc_id)

    def request_missing(self, order: Any, alloc_id: str, now: datetime, *,
                        force: bool = False) -> int:
        """BH for each line still without an AK past the broker's wait; returns how many."""
        d = self.d
        alloc = d.db.load_allocation(alloc_id)
        if alloc is None or alloc["alloc_trans_type"] == "2" or alloc.get("acked_at") is None:
            return 0
        wait = timedelta(minutes=d.config.broker(order.broker).ak_timeout_minutes)
        if not force and now - alloc["acked_at"] < wait:
            return 0
        sent = sum(self.request_line(order, line, now)
                   for line in d.db.load_allocation_lines(alloc_id))
        if sent:
            log.info("confirmation.requested", alloc_id=alloc_id, lines=sent)
        return sent

    def request_line(self, order: Any, line: dict[str, Any], now: datetime) -> bool:
        """One BH for a line still awaiting its AK; never a second one for the same line."""
        if line.get("ticket_state") != "awaiting_ak" or line.get("bh_sent_at") is not None:
            return False
        req_id = f"{line['individual_alloc_id']}-R1"
        self.d.db.update_line(line["individual_alloc_id"], confirm_req_id=req_id, bh_sent_at=now)
        self.d.out.send_message(self.d.out.broker_key(order.broker),
                                cc.build_confirmation_request(
            confirm_req_id=req_id, alloc_id=line["alloc_id"],
            individual_alloc_id=line["individual_alloc_id"], account=line["account_id"],
            transact_time=now, text="no Confirmation received for this allocation line"))
        return True

    # -- AllocationReport ----------------------------------------------------------------

    def on_report(self, ev: AllocationReportReceived) -> None:
        d = self.d
        rep = ev.fields
        ours = d.db.load_allocation_lines(rep.alloc_id) if rep.alloc_id else []
        theirs = {a: q for a, q in rep.lines}
        mine = {r["account_id"]: Decimal(r["qty"]) for r in ours}
        diffs = {a: [str(mine.get(a, 0)), str(theirs.get(a, 0))]
                 for a in sorted(mine.keys() | theirs.keys()) if mine.get(a) != theirs.get(a)}
        d.db.append_event("allocation.report_received", recorded_at=d.clock.now(),
                          session_id=ev.session, alloc_id=rep.alloc_id,
                          detail={"report_id": rep.report_id, "report_type": rep.report_type,
                                  "quantity": str(rep.quantity), "avg_px": str(rep.avg_px),
                                  "differences": diffs})
        alloc = d.db.load_allocation(rep.alloc_id) if rep.alloc_id else None
        order = d.order_facts(alloc["order_id"]) if alloc else None
        if diffs or not ours:
            d.exceptions.open(
                "report_mismatch", order=order, alloc_id=rep.alloc_id, session_id=ev.session,
                reason=f"the broker's AllocationReport {rep.report_id} differs from our "
                       f"allocation: {diffs or 'no allocation of ours'}",
                next_step="review the out-of-band amendment with the broker; replace our J "
                          "or ask the broker to reverse it",
                detail={"differences": diffs})
        d.out.send_message(ev.session, cc.build_allocation_report_ack(
            report_id=rep.report_id, alloc_id=rep.alloc_id, status="0" if not diffs else "2",
            transact_time=d.clock.now(),
            text="matches our allocation" if not diffs else "differs from our allocation"))
