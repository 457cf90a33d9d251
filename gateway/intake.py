"""Block orders from the OMS up to the broker's first answer, on the dispatcher's thread.

Every D gets an answer: a reject naming the field (gateway.order_checks), or routing. A
block for a broker whose session is down is held here, not handed to quickfix (which
would store it and replay it as PossDup whenever the session returns): the OMS hears
"pending new" at once, the order goes out when the session logs on, and if the broker
has not acknowledged it by the book's deadline an alert is raised and the OMS is told
(rejected or done for the day, as the book says; a routed order is also cancelled at the
broker so that nothing executes behind an answer the OMS has already had).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from engine.broker_split import SplitError
from gateway.clock import trade_date_of
from gateway.events import BlockOrderInvalid, BlockOrderReceived
from gateway.metrics import METRICS
from gateway.order_checks import BlockOrder, Rejection, check_block_order
from gateway.orders import Order

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.intake")

_PLAIN_DECIMAL = re.compile(r"[+-]?(?:\d{1,20}(?:\.\d{0,8})?|\.\d{1,8})")

ZERO = Decimal(0)


class OrderIntake:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d

    # -- validation -----------------------------------------------------------------------

    def validate(self, ev: BlockOrderReceived) -> Rejection | None:
        d = self.d
        if ev.duplicate:
            return Rejection("6", f"duplicate ClOrdID {ev.cl_ord_id!r} on this session")
        today = trade_date_of(ev.ts_recv).isoformat()
        if ev.trade_date != today:
            return Rejection("99", f"TransactTime(60) puts the order on trade date "
                                   f"{ev.trade_date}, not today's ({today})")
        order = BlockOrder(book=ev.book, symbol=ev.symbol, side=ev.side,
                           order_qty=ev.order_qty, ord_type=ev.ord_type, price=ev.price,
                           stop_px=ev.stop_px, peg_offset=ev.peg_offset,
                           time_in_force=ev.time_in_force, preallocations=ev.preallocations,
                           preallocation_reason=ev.preallocation_reason)
        return check_block_order(order, d.config.book(ev.book), d.refdata.securities,
                                 d.refdata.accounts_for(ev.book),
                                 (b.name for b in d.config.books))

    # -- intake ---------------------------------------------------------------------------

    def on_block_order(self, ev: BlockOrderReceived) -> None:
        d = self.d
        book = d.config.book(ev.book)
        order = Order(
            order_id=ev.order_id, oms_session=ev.session, oms_cl_ord_id=ev.cl_ord_id,
            book=ev.book, symbol=ev.symbol, side=ev.side, order_qty=ev.order_qty,
            ord_type=ev.ord_type, price=ev.price, time_in_force=ev.time_in_force,
            broker=book.broker if book else "", trade_date=ev.trade_date,
            leaves_qty=ev.order_qty, preallocations=ev.preallocations,
            preallocation_reason=ev.preallocation_reason, stop_px=ev.stop_px,
            peg_offset=ev.peg_offset,
        )
        rejection = self.validate(ev)
        if rejection is None:
            try:
                report = d.flow.pre_trade(order)
            except Exception as exc:
                # Whatever broke, the OMS must hear back rather than wait on an order in limbo.
                log.exception("pretrade.failed", cl_ord_id=ev.cl_ord_id)
                d.alerts.raise_("pretrade_failed", session_id=ev.session,
                                order_id=ev.order_id, detail={"error": str(exc)})
                rejection = Rejection("99", f"pre-trade compliance could not be evaluated: "
                                            f"{exc}")
            else:
                order.excluded = report["excluded"]
                if not report["eligible"]:
                    reasons = "; ".join(
                        f"{x['account_id']}: "
                        f"{x['reasons'][0]['text'] if x['reasons'] else x['status']}"
                        for x in report["excluded"][:5])
                    rejection = Rejection("99", f"no eligible account in book {ev.book}: "
                                                f"{reasons}")
        if rejection is None and d.splits.routed(ev.book):
            try:
                legs = d.splits.plan(order)
            except SplitError as exc:
                rejection = Rejection("99", f"cannot split the block across brokers: {exc}")
            else:
                METRICS.orders.labels(outcome="accepted").inc()
                d.splits.start(order, legs, d.clock.now())
                return
        if rejection is not None:
            self.reject(ev, order, rejection)
            return
        d.orders[order.order_id] = order
        order.move_to("pending_new")
        now = d.clock.now()
        d.db.update_order(order.order_id, status=order.status, broker=order.broker,
                          eligibility_json=d.flow.eligibility_json(order), updated_at=now)
        log.info("order.accepted", session=ev.session, cl_ord_id=ev.cl_ord_id,
                 order_id=order.order_id, book=order.book, symbol=order.symbol,
                 side=order.side, qty=str(order.order_qty), broker=order.broker,
                 excluded=len(order.excluded))
        METRICS.orders.labels(outcome="accepted").inc()
        if d.crossing.offer(order, now):
            return  # crossed at once, or waiting for the other side (crossing_live.py)
        self.route(order, now)

    def route(self, order: Order, now: datetime, *, restarting: bool = False) -> None:
        """Hand the child order to the broker, or hold it while the broker session is down."""
        d = self.d
        book = d.config.book(order.book)
        if order.ack_due is None:
            timeout = book.ack_timeout_seconds if book else 30.0
            order.ack_due = now + timedelta(seconds=timeout)
        if not d.session_up(d.out.broker_key(order.broker)):
            if not order.held:
                order.held = True
                log.warning("order.queued", order_id=order.order_id, broker=order.broker,
                            cl_ord_id=order.oms_cl_ord_id)
                if not restarting:
                    self._pending_new(order, now)
            self._publish_waiting()
            return
        order.held = False
        METRICS.orders.labels(outcome="routed").inc()
        d.out.new_order(order.broker, cl_ord_id=order.order_id, symbol=order.symbol,
                        side=order.side, qty=order.order_qty, ord_type=order.ord_type,
                        price=order.price, time_in_force=order.time_in_force, now=now,
                        stop_px=order.stop_px, peg_offset=order.peg_offset,
                        preallocation=d.replaces.preallocation_for_new(order))
        self._publish_waiting()

    def route_sent(self, order: Order, now: datetime) -> None:
        """An order the broker has (on the wire before a restart) but has not answered yet."""
        book = self.d.config.book(order.book)
        order.ack_due = now + timedelta(seconds=book.ack_timeout_seconds if book else 30.0)
        self._publish_waiting()

    def _pending_new(self, order: Order, now: datetime) -> None:
        """ER 39=A at once: the OMS knows the block is taken but not yet at the broker."""
        qty = order.order_qty
        if order.parent_id is not None:
            # One "pending new" for a split block, whichever broker is down first.
            parent = self.d.splits.parents.get(order.parent_id)
            if parent is None or parent.pending_new_sent:
                return
            parent.pending_new_sent, qty = True, parent.order_qty
        self.d.out.execution_report(
            order.oms_session, order_id=order.parent_id or order.order_id,
            cl_ord_id=order.oms_cl_ord_id,
            exec_id=f"{order.order_id}-PN", exec_type="A", ord_status="A",
            symbol=order.symbol, side=order.side, order_qty=qty,
            last_qty=ZERO, last_px=ZERO, cum_qty=ZERO, avg_px=ZERO,
            leaves_qty=qty, book=order.book, transact_time=now,
            text=f"queued: broker session {order.broker} is not logged on")

    def on_session_up(self, key: str) -> None:
        d = self.d
        now = d.clock.now()
        for order in list(d.orders.values()):
            if order.held and d.out.broker_key(order.broker) == key:
                log.info("order.released", order_id=order.order_id, broker=order.broker)
                self.route(order, now)

    def on_broker_answer(self, order: Order) -> None:
        if order.ack_due is not None or order.ack_overdue:
            order.ack_due = None
            order.ack_overdue = False
            self._publish_waiting()

    def _publish_waiting(self) -> None:
        METRICS.orders_awaiting_ack.set(
            sum(1 for o in self.d.orders.values() if o.ack_due is not None))

    # -- deadlines ------------------------------------------------------------------------

    def on_tick(self, now: datetime) -> None:
        for order in list(self.d.orders.values()):
            if order.ack_due is not None and not order.ack_overdue and now >= order.ack_due:
                self._ack_overdue(order, now)

    def _ack_overdue(self, order: Order, now: datetime) -> None:
        d = self.d
        book = d.config.book(order.book)
        policy = book.on_ack_timeout if book else "reject"
        waited = (book.ack_timeout_seconds if book else 30.0)
        order.ack_overdue = True
        d.orders.dirty.add(order.order_id)  # a tick changed it: the snapshot must show it
        d.alerts.raise_("broker_ack_overdue", session_id=d.out.broker_key(order.broker),
                        order_id=order.order_id,
                        detail={"cl_ord_id": order.oms_cl_ord_id, "broker": order.broker,
                                "queued": order.held, "timeout_seconds": waited,
                                "policy": policy})
        if order.held:
            # Never handed to quickfix: nothing can reach the broker, so answer and forget.
            order.held = False
            order.ack_due = None
            text = (f"broker session {order.broker} did not log on within {waited:g} s; "
                    "the order was not sent")
            if policy == "reject":
                order.status = "rejected"
                self._final_to_oms(order, now, exec_type="8", ord_status="8", text=text)
            else:
                order.status = "done_for_day"
                self._final_to_oms(order, now, exec_type="3", ord_status="3", text=text)
            d.db.update_order(order.order_id, status=order.status, updated_at=now)
            d.db.append_event("order.not_sent", recorded_at=now, severity="error",
                              order_id=order.order_id, detail={"text": text, "policy": policy})
            del d.orders[order.order_id]
            self._publish_waiting()
            return
        # Routed but unanswered: pull it back at the broker; the broker's answer to the
        # cancel (or a fill that beat it) reaches the OMS as usual.
        order.cancel_count += 1
        d.db.append_event("order.cancel_requested", recorded_at=now,
                          session_id=order.oms_session, order_id=order.order_id,
                          detail={"cl_ord_id": None, "cancel_count": order.cancel_count,
                                  "reason": "broker acknowledgement overdue"})
        d.out.cancel(order.broker, cl_ord_id=f"{order.order_id}~C{order.cancel_count}",
                     orig_cl_ord_id=order.child_cl_ord_id or order.order_id,
                     broker_order_id=order.broker_order_id,
                     symbol=order.symbol, side=order.side, qty=order.order_qty, now=now)
        if order.parent_id is not None:
            return  # a split block's OMS hears the broker's answer (split_orders.py)
        d.out.execution_report(
            order.oms_session, order_id=order.order_id, cl_ord_id=order.oms_cl_ord_id,
            exec_id=f"{order.order_id}-PC{order.cancel_count}", exec_type="6",
            ord_status="6", symbol=order.symbol, side=order.side, order_qty=order.order_qty,
            last_qty=ZERO, last_px=ZERO, cum_qty=order.ledger.cum_qty,
            avg_px=order.ledger.avg_px, leaves_qty=order.leaves_qty, book=order.book,
            transact_time=now,
            text=f"broker {order.broker} did not acknowledge within {waited:g} s; "
                 "cancel requested")

    def _final_to_oms(self, order: Order, now: datetime, *, exec_type: str, ord_status: str,
                      text: str) -> None:
        totals: dict[str, Any] = {"order_id": order.order_id, "exec_type": exec_type,
                                  "ord_status": ord_status, "order_qty": order.order_qty,
                                  "cum_qty": ZERO, "avg_px": ZERO, "leaves_qty": ZERO}
        if order.parent_id is not None:
            # A split block ends for the OMS when its last broker's part does.
            block = self.d.splits.terminal_view(order, exec_type)
            if block is None:
                return
            totals = block
        self.d.out.execution_report(
            order.oms_session, cl_ord_id=order.oms_cl_ord_id,
            exec_id=f"{order.order_id}-T{exec_type}", symbol=order.symbol, side=order.side,
            last_qty=ZERO, last_px=ZERO, book=order.book, transact_time=now, text=text,
            ord_rej_reason="99" if totals["ord_status"] == "8" else None, **totals)

    # -- rejects --------------------------------------------------------------------------

    def reject(self, ev: BlockOrderReceived, order: Order, rej: Rejection) -> None:
        d = self.d
        now = d.clock.now()
        log.warning("order.rejected", session=ev.session, cl_ord_id=ev.cl_ord_id,
                    reason=rej.text)
        METRICS.orders.labels(outcome="rejected").inc()
        if not ev.duplicate:
            d.db.update_order(order.order_id, status="rejected", updated_at=now)
        rejection_id = d.db.record_rejection(
            session_id=ev.session, cl_ord_id=ev.cl_ord_id, trade_date=ev.trade_date,
            seq_num=ev.seq_num, order_id=None if ev.duplicate else order.order_id,
            reason_code=rej.reason_code, text=rej.text, created_at=now)
        d.db.append_event("order.rejected", recorded_at=now, severity="warning",
                          session_id=ev.session, order_id=order.order_id,
                          detail={"cl_ord_id": ev.cl_ord_id, "text": rej.text,
                                  "exec_id": f"REJ{rejection_id}"})
        d.out.execution_report(
            ev.session, order_id=order.order_id if not ev.duplicate else "NONE",
            cl_ord_id=ev.cl_ord_id, exec_id=f"REJ{rejection_id}", exec_type="8",
            ord_status="8", symbol=ev.symbol, side=ev.side, order_qty=ev.order_qty,
            last_qty=ZERO, last_px=ZERO, cum_qty=ZERO, avg_px=ZERO, leaves_qty=ZERO,
            book=ev.book, transact_time=now, text=rej.text, ord_rej_reason=rej.reason_code)

    def on_invalid(self, ev: BlockOrderInvalid) -> None:
        d = self.d
        now = d.clock.now()
        log.warning("order.rejected", session=ev.session, cl_ord_id=ev.cl_ord_id,
                    reason=ev.reason)
        METRICS.orders.labels(outcome="rejected").inc()
        d.db.append_event("order.rejected", recorded_at=now, severity="warning",
                          session_id=ev.session,
                          detail={"cl_ord_id": ev.cl_ord_id, "text": ev.reason,
                                  "exec_id": f"REJ{ev.rejection_id}"})
        # Echo OrderQty only when it is a plain FIX decimal (no exponent to blow up).
        qty = Decimal(ev.order_qty) if _PLAIN_DECIMAL.fullmatch(ev.order_qty) else ZERO
        d.out.execution_report(
            ev.session, order_id="NONE", cl_ord_id=ev.cl_ord_id,
            exec_id=f"REJ{ev.rejection_id}", exec_type="8", ord_status="8",
            symbol=ev.symbol[:32] or "UNKNOWN", side="buy", side_fix=ev.side_fix[:1] or "1",
            order_qty=qty, last_qty=ZERO, last_px=ZERO, cum_qty=ZERO, avg_px=ZERO,
            leaves_qty=ZERO, book=None, transact_time=now, text=ev.reason,
            ord_rej_reason="99")
