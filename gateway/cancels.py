"""Cancels from the OMS (35=F) and the broker's refusals of ours (35=9), on the dispatcher
thread. A cancel goes to the broker as <order>~C<n> quoting the latest ClOrdID of the
chain (a cancel/replace moves it on); one we cannot honour is answered 35=9 at once
(CxlRejReason 1 unknown order, 0 too late)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from gateway.events import CancelRejectedByBroker, CancelRequested
from gateway.orders import ORD_STATUS, Order

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.dispatcher")

_FIX_ORD_STATUS = {v: k for k, v in ORD_STATUS.items()}


class OrderCancels:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d

    def on_request(self, ev: CancelRequested) -> None:
        d = self.d
        if d.splits.on_cancel(ev):
            return
        # The newest order under that ClOrdID: an OMS may reuse one on a later trade date.
        order = d.orders.by_cl_ord_id(ev.session, ev.orig_cl_ord_id, d.find_order_id)
        if order is None or order.status in ("filled", "canceled", "expired", "rejected"):
            # CxlRejReason 1 = unknown order, 0 = too late to cancel.
            text = ("unknown order" if order is None else f"order is {order.status}")
            d.out.cancel_reject(ev.session, order_id=order.order_id if order else "NONE",
                                cl_ord_id=ev.cl_ord_id, orig_cl_ord_id=ev.orig_cl_ord_id,
                                ord_status=_FIX_ORD_STATUS.get(order.status, "8")
                                if order else "8",
                                reason="1" if order is None else "0",
                                text=f"cannot cancel {ev.orig_cl_ord_id}: {text}")
            return
        if d.crossing.on_cancel(order, ev):
            return
        self.cancel(order, ev)

    def cancel(self, order: Order, ev: CancelRequested) -> None:
        """Our cancel of `order` at its broker, on the OMS's request `ev`."""
        d = self.d
        order.cancel_count += 1
        order.oms_cancel_cl_ord_id = ev.cl_ord_id
        log.info("order.cancel_routed", cl_ord_id=ev.orig_cl_ord_id, order_id=order.order_id)
        d.db.append_event("order.cancel_requested", recorded_at=d.clock.now(),
                          session_id=ev.session, order_id=order.order_id,
                          detail={"cl_ord_id": ev.cl_ord_id,
                                  "cancel_count": order.cancel_count})
        d.out.cancel(order.broker, cl_ord_id=f"{order.order_id}~C{order.cancel_count}",
                     orig_cl_ord_id=order.child_cl_ord_id or order.order_id,
                     broker_order_id=order.broker_order_id,
                     symbol=order.symbol, side=order.side, qty=order.order_qty,
                     now=d.clock.now())

    def on_broker_reject(self, ev: CancelRejectedByBroker) -> None:
        d = self.d
        order = d.orders.get(ev.order_id)
        if order is None or order.oms_cancel_cl_ord_id is None:
            log.warning("order.cancel_reject_unknown", session=ev.session, order_id=ev.order_id)
            return
        log.info("order.cancel_rejected", cl_ord_id=order.oms_cl_ord_id, text=ev.text)
        d.out.cancel_reject(order.oms_session, order_id=order.order_id,
                            cl_ord_id=order.oms_cancel_cl_ord_id,
                            orig_cl_ord_id=order.oms_cl_ord_id, ord_status=ev.ord_status,
                            reason=ev.reason or "0", text=ev.text or "rejected by broker")
