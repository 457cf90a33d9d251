"""A broker's execution report on its way out, on the dispatcher thread: judged plausible
or refused with a DK (gateway/fill_checks.py says what is implausible), and relayed to
the OMS under the OMS's own identifiers. Shared by live traffic and startup recovery, so
a report stored just before a crash is judged and relayed the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from gateway import faults
from gateway.events import BrokerReportReceived
from gateway.fill_checks import Implausible, check_report
from gateway.orders import Order

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.dispatcher")


def relay_exec_id(order_id: str, report_id: int) -> str:
    """The ExecID of our relay of a broker report to the OMS: stable across restarts."""
    return f"{order_id}-E{report_id}"


class ReportRelay:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d

    def refused(self, order: Order, ev: BrokerReportReceived) -> bool:
        """An implausible report is not applied or relayed: the broker gets a DK.

        Shared with recovery, so a report stored just before a crash is judged the same.
        """
        refused = check_report(exec_type=ev.exec_type, last_qty=ev.last_qty,
                               last_px=ev.last_px, cum_qty=ev.cum_qty,
                               order_qty=order.order_qty, ledger_cum_qty=order.ledger.cum_qty)
        if refused is None:
            return False
        self._refuse_report(order, ev, refused)
        return True

    def _refuse_report(self, order: Order, ev: BrokerReportReceived,
                       refused: Implausible) -> None:
        d = self.d
        log.warning("fill.refused", order_id=order.order_id, exec_id=ev.exec_id,
                    dk_reason=refused.dk_reason, reason=refused.text)
        d.alerts.raise_("implausible_fill", session_id=ev.session, order_id=order.order_id,
                        detail={"exec_id": ev.exec_id, "exec_type": ev.exec_type,
                                "dk_reason": refused.dk_reason, "reason": refused.text})
        d.out.dont_know(ev.session, broker_order_id=ev.broker_order_id, exec_id=ev.exec_id,
                        text=refused.text, reason=refused.dk_reason, side=order.side,
                        symbol=order.symbol)
        # Marked after the DK: a crash between them sends the DK again, never loses it.
        d.db.mark_report_refused(ev.report_id, f"{refused.dk_reason}: {refused.text}")

    def _relayed_exec_id(self, order: Order, ev: BrokerReportReceived) -> str | None:
        """For a bust/correction: the ExecID under which the OMS got the fill it changes."""
        d = self.d
        if ev.exec_type not in ("G", "H") or not ev.exec_ref_id:
            return None
        report_id = d.db.report_id_of(ev.session, order.order_id, ev.exec_ref_id)
        return relay_exec_id(order.order_id, report_id) if report_id else None

    def relay(self, order: Order, ev: BrokerReportReceived, report_id: int,
              *, poss_resend: bool = False, mark: bool = True) -> None:
        """Relay a broker ER to the OMS under the OMS's own ClOrdID (its cancel's, for 4/6).

        A split block's child relays the block's view (gateway/split_orders.py), or
        nothing when its report does not change that view."""
        d = self.d
        block = d.splits.view(order, ev) if order.parent_id is not None else None
        if order.parent_id is not None and block is None:
            if mark:
                d.db.mark_relayed(report_id, d.clock.now())
            return
        cancel_reply = ev.exec_type in ("4", "6") and order.oms_cancel_cl_ord_id is not None
        ids = d.replaces.relay_ids(order, ev.exec_type, ev.cl_ord_id) or (
            (order.oms_cancel_cl_ord_id, order.oms_cl_ord_id) if cancel_reply
            else (order.oms_cl_ord_id, None))
        totals = block or {"order_id": order.order_id, "exec_type": ev.exec_type,
                           "ord_status": ev.ord_status, "order_qty": order.order_qty,
                           "cum_qty": ev.cum_qty, "avg_px": ev.avg_px,
                           "leaves_qty": ev.leaves_qty}
        d.out.execution_report(
            order.oms_session, poss_resend=poss_resend, cl_ord_id=ids[0],
            orig_cl_ord_id=ids[1], exec_id=relay_exec_id(order.order_id, report_id),
            symbol=order.symbol, side=order.side, last_qty=ev.last_qty, last_px=ev.last_px,
            book=order.book, transact_time=d.clock.now(), trade_date=ev.trade_date,
            text=ev.text, exec_ref_id=self._relayed_exec_id(order, ev), **totals,
        )
        faults.point("relay_sent")
        if mark:
            d.db.mark_relayed(report_id, d.clock.now())
