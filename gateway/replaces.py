"""Changes to a working block: the OMS's cancel/replace, and the pre-allocation the broker
books from. Runs on the dispatcher thread.

  OMS G        judged as a new order would be (gateway.order_checks) with the new values;
               refused with 35=9 (CxlRejResponseTo 2) naming the reason, or sent to the
               broker as our own G (ClOrdID <order>~R<n>, OrigClOrdID the latest of the
               chain). The request is recorded before it is sent, so a restart knows it.
  broker 150=5 the replace took effect: quantity, price and pre-allocation change, the OMS
               hears 150=5 under its new ClOrdID (OrigClOrdID its previous one)
  broker 35=9  the replace was refused: the order stands, the OMS hears 35=9

With `send_preallocations` on the broker, an OMS pre-allocation goes on the child D (and
on a G that changes it, under a new AllocID): AllocID <order>-PA<n>, PreallocMethod 0 (pro
rata on a partial fill), NoAllocs. The broker's P for it is recorded; a rejection (87=1/2)
opens a `preallocation_rejected` exception while the order keeps working, and the block's
J after the fills, which carries the pro-rated split, resolves it once accepted. A broker
that refuses the whole order (ER 39=8) is relayed to the OMS like any rejection.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from gateway.events import AllocationAckReceived, CancelRejectedByBroker, ReplaceRequested
from gateway.fix import replace_codec
from gateway.fix.replace_codec import ReplaceFields
from gateway.order_checks import BlockOrder, check_block_order
from gateway.orders import ALLOC_STATUS_FROM_P, ORD_STATUS, TERMINAL, Order

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.replaces")

_FIX_ORD_STATUS = {v: k for k, v in ORD_STATUS.items()}
# CxlRejReason(102): 0 too late, 1 unknown order, 3 a cancel or replace already pending.
TOO_LATE, UNKNOWN, PENDING, OTHER = "0", "1", "3", "99"

Preallocation = tuple[str, tuple[tuple[str, Decimal], ...]]


def _lines(rows: Any) -> tuple[tuple[str, Decimal], ...]:
    return tuple((str(a), Decimal(str(q))) for a, q in rows)


class OrderReplaces:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        self._prealloc_exceptions: dict[str, int] = {}
        """Order id -> the open preallocation_rejected exception its accepted J closes."""

    # -- the pre-allocation on the child D ------------------------------------------------

    def preallocation_for_new(self, order: Order) -> Preallocation | None:
        """What the child D carries, when the broker books from pre-allocations."""
        if not (order.preallocations and self.d.config.broker(order.broker).send_preallocations):
            return None
        order.prealloc_id = order.prealloc_id or f"{order.order_id}-PA1"
        order.prealloc_status = order.prealloc_status or "sent"
        return order.prealloc_id, order.preallocations

    # -- the OMS's request ----------------------------------------------------------------

    def on_request(self, ev: ReplaceRequested) -> None:
        d, f = self.d, ev.fields
        if d.splits.parent_of(ev.session, f.orig_cl_ord_id) is not None:
            # Which broker's part would change, and how, is not the OMS's to say.
            self._refuse(ev.session, None, f.cl_ord_id, f.orig_cl_ord_id, OTHER,
                         "the block is split across brokers; cancel it and send a new one")
            return
        order = d.orders.by_cl_ord_id(ev.session, f.orig_cl_ord_id, d.find_order_id)
        if order is not None and d.crossing.waiting_for(order.order_id):
            self._refuse(ev.session, order, f.cl_ord_id, f.orig_cl_ord_id, OTHER,
                         "the block is waiting to cross internally; cancel it and send a "
                         "new one")
            return
        if order is not None and any(r["cl_ord_id"] == f.cl_ord_id
                                     for r in order.replaces.values()):
            log.info("order.replace_repeated", cl_ord_id=f.cl_ord_id, order_id=order.order_id)
            return  # a resent G already in hand
        problem = self._judge(order, f)
        if problem is not None:
            self._refuse(ev.session, order, f.cl_ord_id, f.orig_cl_ord_id, *problem)
            return
        assert order is not None
        now = d.clock.now()
        pre = order.preallocations if f.preallocations is None else f.preallocations
        changed = f.preallocations is not None and tuple(f.preallocations) != order.preallocations
        broker = d.config.broker(order.broker)
        order.replace_count += 1
        n = order.replace_count
        child = f"{order.order_id}~R{n}"
        # A changed pre-allocation is a new one under a new AllocID (FIX 4.4 Vol. 4); one
        # replace at a time is pending, so the next number is the one in force plus one.
        in_force = int(order.prealloc_id.rpartition("-PA")[2]) if order.prealloc_id else 0
        prealloc_id = (f"{order.order_id}-PA{in_force + 1}"
                       if changed and pre and broker.send_preallocations else None)
        request = {
            "cl_ord_id": f.cl_ord_id, "orig_cl_ord_id": f.orig_cl_ord_id,
            "child_cl_ord_id": child, "replace_count": n, "order_qty": str(f.order_qty),
            "ord_type": f.ord_type, "price": None if f.price is None else str(f.price),
            "time_in_force": f.time_in_force,
            "preallocations": [[a, str(q)] for a, q in pre],
            "preallocation_reason": (f.text if changed else order.preallocation_reason),
            "prealloc_id": prealloc_id}
        order.replaces[child] = request
        d.db.append_event("order.replace_requested", recorded_at=now, session_id=ev.session,
                          order_id=order.order_id, detail=request)
        log.info("order.replace_routed", order_id=order.order_id, cl_ord_id=f.cl_ord_id,
                 qty=str(f.order_qty), price=request["price"], new_alloc_id=prealloc_id)
        d.out.replace(order.broker, cl_ord_id=child,
                      orig_cl_ord_id=order.child_cl_ord_id or order.order_id,
                      broker_order_id=order.broker_order_id, symbol=order.symbol,
                      side=order.side, qty=f.order_qty, ord_type=f.ord_type, price=f.price,
                      time_in_force=f.time_in_force, stop_px=order.stop_px, now=now,
                      preallocation=(prealloc_id, pre) if prealloc_id else None)

    def _judge(self, order: Order | None, f: ReplaceFields) -> tuple[str, str] | None:
        """(CxlRejReason, text) of the first reason the replace cannot go, or None."""
        if order is None:
            return UNKNOWN, f"unknown order {f.orig_cl_ord_id}"
        if order.status in TERMINAL or order.done():
            return TOO_LATE, f"order is {order.status}"
        if order.replaces or order.status in ("pending_cancel", "pending_replace"):
            return PENDING, "a cancel or replace of this order is already pending"
        if order.held:
            return OTHER, (f"the order is queued for broker {order.broker} (session down); "
                           "replace it once the broker has it")
        if f.symbol != order.symbol or f.side != order.side or (f.book or order.book) \
                != order.book:
            return OTHER, ("Symbol, Side and Account cannot change on a cancel/replace; "
                           "cancel the order and send a new one")
        if f.order_qty <= order.ledger.cum_qty:
            return OTHER, (f"OrderQty {f.order_qty} must exceed the {order.ledger.cum_qty} "
                           "already executed")
        d = self.d
        pre = order.preallocations if f.preallocations is None else f.preallocations
        candidate = BlockOrder(
            book=order.book, symbol=order.symbol, side=order.side, order_qty=f.order_qty,
            ord_type=f.ord_type, price=f.price, stop_px=order.stop_px,
            peg_offset=order.peg_offset, time_in_force=f.time_in_force, preallocations=pre,
            preallocation_reason=f.text if f.preallocations is not None
            else order.preallocation_reason)
        rejection = check_block_order(candidate, d.config.book(order.book),
                                      d.refdata.securities, d.refdata.accounts_for(order.book),
                                      (b.name for b in d.config.books))
        return None if rejection is None else (OTHER, rejection.text)

    def _refuse(self, session: str, order: Order | None, cl_ord_id: str, orig: str,
                reason: str, text: str, *, ord_status: str | None = None) -> None:
        d = self.d
        log.warning("order.replace_rejected", cl_ord_id=cl_ord_id, orig_cl_ord_id=orig,
                    reason=text)
        d.db.append_event("order.replace_rejected", recorded_at=d.clock.now(),
                          severity="warning", session_id=session,
                          order_id=order.order_id if order else None,
                          detail={"cl_ord_id": cl_ord_id, "orig_cl_ord_id": orig,
                                  "reason": reason, "text": text})
        status = ord_status or (_FIX_ORD_STATUS.get(order.status, "8") if order else "8")
        d.out.send_message(session, replace_codec.build_replace_reject(
            order_id=order.order_id if order else "NONE", cl_ord_id=cl_ord_id,
            orig_cl_ord_id=orig, ord_status=status, reason=reason,
            text=f"cannot replace {orig}: {text}"))

    # -- the broker's answers -------------------------------------------------------------

    def on_replaced(self, order: Order, cl_ord_id: str) -> None:
        """The broker's 150=5 (live, or re-applied by recovery): the new terms stand."""
        request = order.replaces.pop(cl_ord_id, None)
        if request is None:
            log.warning("order.replaced_unknown", order_id=order.order_id, cl_ord_id=cl_ord_id)
            return
        order.oms_orig_cl_ord_id = order.oms_cl_ord_id
        order.oms_cl_ord_id = request["cl_ord_id"]
        order.child_cl_ord_id = request["child_cl_ord_id"]
        order.order_qty = Decimal(request["order_qty"])
        order.ord_type = request["ord_type"]
        order.price = None if request["price"] is None else Decimal(request["price"])
        order.time_in_force = request["time_in_force"]
        order.preallocations = _lines(request["preallocations"])
        order.preallocation_reason = request["preallocation_reason"]
        self.d.orders.index(order)  # the OMS's new ClOrdID finds it from now on
        if request["prealloc_id"]:
            order.prealloc_id, order.prealloc_status = request["prealloc_id"], "sent"
        self.d.db.update_order(
            order.order_id, order_qty=request["order_qty"], price=request["price"],
            ord_type=order.ord_type, time_in_force=order.time_in_force,
            preallocations_json=json.dumps({"lines": request["preallocations"],
                                            "reason": order.preallocation_reason})
            if order.preallocations else None)
        log.info("order.replaced", order_id=order.order_id, cl_ord_id=order.oms_cl_ord_id,
                 qty=request["order_qty"], price=request["price"])

    def relay_ids(self, order: Order, exec_type: str, cl_ord_id: str
                  ) -> tuple[str, str | None] | None:
        """(ClOrdID, OrigClOrdID) for the OMS's copy of a replace's ER, else None."""
        if exec_type == "5" and order.oms_orig_cl_ord_id is not None:
            return order.oms_cl_ord_id, order.oms_orig_cl_ord_id
        request = order.replaces.get(cl_ord_id)
        if exec_type == "E" and request is not None:
            return request["cl_ord_id"], request["orig_cl_ord_id"]
        return None

    def on_broker_reject(self, ev: CancelRejectedByBroker) -> bool:
        """A 35=9 answering our G; False when it answers a cancel instead."""
        if ev.response_to != "2":
            return False
        order = self.d.orders.get(ev.order_id)
        request = order.replaces.pop(ev.cl_ord_id, None) if order is not None else None
        if order is None or request is None:
            log.warning("order.replace_reject_unknown", session=ev.session,
                        cl_ord_id=ev.cl_ord_id)
            return True
        self.d.db.append_event("order.replace_refused", recorded_at=self.d.clock.now(),
                               severity="warning", session_id=ev.session,
                               order_id=order.order_id,
                               detail={"child_cl_ord_id": ev.cl_ord_id, "text": ev.text})
        self._refuse(order.oms_session, order, request["cl_ord_id"], request["orig_cl_ord_id"],
                     ev.reason or OTHER, f"refused by broker {order.broker}: "
                     f"{ev.text or 'no reason given'}", ord_status=ev.ord_status)
        return True

    # -- the broker's P for a pre-allocation ----------------------------------------------

    def on_prealloc_ack(self, ev: AllocationAckReceived) -> bool:
        """Handle a P for one of our pre-allocation AllocIDs; False for any other P."""
        d = self.d
        order_id, sep, _ = ev.alloc_id.rpartition("-PA")
        order = d.orders.get(order_id) if sep else None
        if order is None:
            return False
        state = ALLOC_STATUS_FROM_P.get(ev.alloc_status, "received")
        d.db.append_event("preallocation.ack", recorded_at=d.clock.now(),
                          session_id=ev.session, order_id=order.order_id,
                          detail={"alloc_id": ev.alloc_id, "status": state,
                                  "rej_code": ev.rej_code, "text": ev.text})
        if ev.alloc_id == order.prealloc_id:
            order.prealloc_status = state
        log.info("preallocation.ack", alloc_id=ev.alloc_id, status=state, rej_code=ev.rej_code)
        if state in ("block_rejected", "account_rejected"):
            self._prealloc_exceptions[order.order_id] = d.exceptions.open(
                "preallocation_rejected", order=order, session_id=ev.session,
                reason=f"broker {order.broker} rejected pre-allocation {ev.alloc_id} "
                       f"(87={ev.alloc_status}"
                       + (f", 88={ev.rej_code}" if ev.rej_code else "") + ")"
                       + (f": {ev.text}" if ev.text else ""),
                next_step="the order keeps working; its J after the fills carries the "
                          "pro-rated split for the broker to book (or send a cancel/replace "
                          "with corrected allocations)",
                detail={"prealloc_id": ev.alloc_id, "rej_code": ev.rej_code,
                        "lines": [list(x) for x in ev.rejected_lines]})
        return True

    def on_j_accepted(self, order: Order, alloc_id: str) -> None:
        """The block's J booked it: a refused pre-allocation needs nothing more."""
        exception_id = self._prealloc_exceptions.pop(order.order_id, None)
        if exception_id is not None:
            self.d.exceptions.resolve(by="broker", exception_id=exception_id,
                                      resolution=f"booked from J {alloc_id}")

    # -- restart --------------------------------------------------------------------------

    def restore(self, order: Order) -> None:
        """Before the order's stored ERs are re-applied: its pre-allocation and the replace
        requests it sent (a 150=5 among the ERs then applies its request again)."""
        self.preallocation_for_new(order)
        refused = {json.loads(e["detail_json"])["child_cl_ord_id"]
                   for e in self.d.db.events("order.replace_refused")
                   if e["order_id"] == order.order_id}
        for e in self.d.db.events("order.replace_requested"):
            if e["order_id"] != order.order_id:
                continue
            request = json.loads(e["detail_json"])
            order.replace_count = max(order.replace_count, int(request["replace_count"]))
            if request["child_cl_ord_id"] not in refused:
                order.replaces[request["child_cl_ord_id"]] = request

    def restore_acks(self, order: Order) -> None:
        """After the ERs: the latest P for the pre-allocation in force."""
        for e in self.d.db.events("preallocation.ack"):
            detail = json.loads(e["detail_json"])
            if e["order_id"] == order.order_id and detail["alloc_id"] == order.prealloc_id:
                order.prealloc_status = detail["status"]
        for row in self.d.db.exceptions(state="open"):
            if row["kind"] == "preallocation_rejected" and row["order_id"] == order.order_id:
                self._prealloc_exceptions[order.order_id] = int(row["id"])
