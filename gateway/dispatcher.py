"""The single owner of mutable state: consumes the inbox, drives orders to allocation.

Only this thread mutates orders and allocations. FIX threads persist and enqueue; the
HTTP server reads `snapshot`, an immutable dict swapped in after every event.
Startup recovery rebuilds state from the database and re-drives anything unfinished
through the same code paths as live traffic.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import structlog

import engine
from gateway import faults
from gateway.alerts import Alerts
from gateway.allocation_flow import AllocationFlow
from gateway.approvals.desk import ApprovalDesk
from gateway.cancels import OrderCancels
from gateway.clock import Clock
from gateway.config import Config
from gateway.crossing_live import LiveCrossing
from gateway.events import (
    AllocationAckReceived,
    AllocationReportReceived,
    ApprovalRequested,
    BlockOrderInvalid,
    BlockOrderReceived,
    BrokerReportReceived,
    CancelRejectedByBroker,
    CancelRequested,
    ConfirmationReceived,
    DeskOrdersSubmitted,
    OmsAllocationAckReceived,
    OperatorRequested,
    ReferenceDataChanged,
    ReplaceRequested,
    RulebookChanged,
    SessionRejectReceived,
    SessionStateChanged,
    Stop,
    SweepDue,
    Tick,
)
from gateway.fix.outbound import FixOutbound
from gateway.inbox import Inbox
from gateway.intake import OrderIntake
from gateway.metrics import METRICS
from gateway.order_book import OrderBook, OrderFacts, touched_orders
from gateway.orders import ORD_STATUS, InvalidTransition, Order
from gateway.persistence.store import Database
from gateway.posttrade.confirmations import Confirmations
from gateway.posttrade.exceptions import ExceptionsQueue
from gateway.posttrade.lifecycle import Lifecycle
from gateway.posttrade.sweep_runner import SweepRunner
from gateway.reference import ReferenceData
from gateway.replaces import OrderReplaces
from gateway.report_relay import ReportRelay
from gateway.session_watch import SessionWatch
from gateway.split_orders import SplitOrders

log = structlog.get_logger("fixalloc.dispatcher")

class Dispatcher:
    def __init__(self, config: Config, db: Database, inbox: Inbox, out: FixOutbound,
                 refdata: ReferenceData, flow: AllocationFlow, clock: Clock) -> None:
        self.config = config
        self.db = db
        self.inbox = inbox
        self.out = out
        self.refdata = refdata
        self.flow = flow
        self.clock = clock
        self.orders = OrderBook(load=self._load_back)
        """The orders still moving; a finished one is released and loaded back on demand."""
        self._summaries: dict[str, Mapping[str, Any]] = {}
        self._facts: OrderedDict[str, OrderFacts] = OrderedDict()
        self.sessions_up: dict[str, bool] = {}
        self.snapshot: Mapping[str, Any] = {"live": {}}
        self.alerts: Alerts = flow.alerts
        self.intake = OrderIntake(self)
        self.replaces = OrderReplaces(self)
        self.cancels = OrderCancels(self)
        self.splits = SplitOrders(self)
        self.crossing = LiveCrossing(self)
        self.reports = ReportRelay(self)
        self.sessions = SessionWatch(self, loop_logons=config.fix.reconnect_alert_logons,
                                     loop_window_seconds=config.fix.reconnect_alert_seconds)
        self.exceptions = ExceptionsQueue(db, clock, self.alerts)
        self.lifecycle = Lifecycle(self)
        self.confirmations = Confirmations(self)
        self.sweep = SweepRunner(self)
        # Approvals still pending at the DTCC allocation deadline are alerted by name.
        self.approvals = ApprovalDesk(self, cutoff=config.sweep.allocation_deadline)
        self.tick_seconds = 0.5
        self.publish_seconds = 0.1
        self._stale = True  # the first snapshot is taken once recovery has run
        self._published_at = 0.0
        self._thread: threading.Thread | None = None
        self.stopped = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain everything queued so far, then stop."""
        self.inbox.put(Stop())
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # Deadlines are checked between events, and at least every tick while idle.
        next_tick = time.monotonic() + self.tick_seconds
        while True:
            wait = next_tick - time.monotonic()
            if self._stale:
                wait = min(wait, self._published_at + self.publish_seconds - time.monotonic())
            try:
                event = self.inbox.get(timeout=max(0.0, wait))
            except queue.Empty:
                event = None
            if event is None or time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.tick_seconds
                self._safely(Tick(self.clock.now()))
            if event is None:
                self._publish_if_due()
                continue
            METRICS.inbox_depth.set(self.inbox.depth())
            if isinstance(event, Stop):
                self._stale = True
                self._publish_if_due(force=True)
                self.stopped.set()
                return
            self._safely(event)

    def _safely(self, event: object) -> None:
        touched = touched_orders(self, event)
        try:
            self.handle(event)
        except Exception:
            # One bad event must never stop the gateway; it is logged with its context.
            METRICS.dispatcher_errors.inc()
            log.exception("dispatcher.event_failed", event_type=type(event).__name__)
        if touched is None:
            touched = set(self.orders)
        touched |= self.orders.loaded
        self.orders.loaded = set()
        self.orders.dirty |= touched
        self._release(touched)
        if self.orders.dirty or not isinstance(event, Tick):
            # Session health and the inbox depth change without touching an order.
            self._stale = True
        if not isinstance(event, Tick):
            self._publish_if_due()
        # The crossing venue answers our Js at once; each answer is an event of its own.
        for ack in self.out.venue_acks():
            self._safely(ack)

    def _release(self, order_ids: set[str]) -> None:
        """Let the finished ones of these orders go from memory (gateway/order_book.py)."""
        now = self.clock.now()
        for order_id in order_ids:
            order = self.orders.in_memory(order_id)
            if order is not None and self.orders.release(order, self.db.mark_released, now):
                METRICS.orders_released.inc()
                if order.parent_id is not None:
                    self.splits.forget_if_done(order.parent_id)

    def _load_back(self, order_id: str, *, before_report: int | None = None) -> Order | None:
        from gateway.recovery import load_back  # recovery builds on the dispatcher

        self._facts.pop(order_id, None)  # what it says may change while it is back
        order = load_back(self, order_id, before_report=before_report)
        if order is not None:
            METRICS.orders_loaded_back.inc()
            self.orders.loaded.add(order_id)
        return order

    def order_facts(self, order_id: str) -> Order | OrderFacts | None:
        """The order in memory, else what its row says (no loading back). The facts of
        the latest released orders are kept: a block's 200 AKs read its row once."""
        order = self.orders.in_memory(order_id)
        if order is not None:
            return order
        facts = self._facts.get(order_id)
        if facts is None:
            row = self.db.load_order(order_id)
            if row is None:
                return None
            facts = self._facts[order_id] = OrderFacts.of(row)
            while len(self._facts) > 256:
                self._facts.popitem(last=False)
        return facts

    def find_order_id(self, session: str, cl_ord_id: str) -> str | None:
        row = self.db.find_order(session, cl_ord_id)
        return None if row is None else str(row["order_id"])

    def _publish_if_due(self, *, force: bool = False) -> None:
        """Swap in a new snapshot at most every `publish_seconds` while events stream in.

        The snapshot summarises every order of the day; rebuilding it after each event made
        the dispatcher's cost grow with the day (O(orders) per message). Readers see state
        at most `publish_seconds` old while busy, and current state as soon as it is idle.
        """
        if not self._stale:
            return
        if not force and time.monotonic() - self._published_at < self.publish_seconds:
            return
        try:
            self._publish()
        except Exception:
            # A value that breaks a summary must not end the only thread that owns state.
            METRICS.dispatcher_errors.inc()
            log.exception("dispatcher.publish_failed")
        self._stale = False
        self._published_at = time.monotonic()

    def handle(self, event: object) -> None:
        if isinstance(event, BlockOrderReceived):
            self.intake.on_block_order(event)
        elif isinstance(event, BrokerReportReceived):
            self._on_broker_report(event)
        elif isinstance(event, Tick):
            self.intake.on_tick(event.ts)
            self.crossing.on_tick(event.ts)
            self.lifecycle.on_tick(event.ts)
            self.confirmations.on_tick(event.ts)
            self.approvals.on_tick(event.ts)
        elif isinstance(event, ConfirmationReceived):
            self.confirmations.on_confirmation(event)
        elif isinstance(event, AllocationReportReceived):
            self.confirmations.on_report(event)
        elif isinstance(event, OperatorRequested):
            self._answer(event.reply, lambda: self.lifecycle.operator(
                event.action, event.alloc_id, actor=event.actor, reason=event.reason))
        elif isinstance(event, ApprovalRequested):
            self._answer(event.reply, lambda: self.approvals.handle(event))
        elif isinstance(event, DeskOrdersSubmitted):
            self._answer(event.reply, lambda: self._desk_orders(event))
        elif isinstance(event, SweepDue):
            self.sweep.on_sweep_due(event)
        elif isinstance(event, BlockOrderInvalid):
            self.intake.on_invalid(event)
        elif isinstance(event, CancelRequested):
            self.cancels.on_request(event)
        elif isinstance(event, ReplaceRequested):
            self.replaces.on_request(event)
        elif isinstance(event, CancelRejectedByBroker):
            if not self.replaces.on_broker_reject(event):
                self.cancels.on_broker_reject(event)
        elif isinstance(event, AllocationAckReceived):
            if not self.replaces.on_prealloc_ack(event):
                self.lifecycle.on_ack(event)
        elif isinstance(event, OmsAllocationAckReceived):
            self.sessions.on_oms_ack(event)
        elif isinstance(event, SessionRejectReceived):
            self.sessions.on_session_reject(event)
        elif isinstance(event, SessionStateChanged):
            self.sessions_up[event.session] = event.logged_on
            METRICS.session_up.labels(session=event.session).set(1 if event.logged_on else 0)
            self.sessions.on_state(event)
            if event.logged_on:
                self.intake.on_session_up(event.session)
        elif isinstance(event, ReferenceDataChanged):
            self._on_refdata(event)
        elif isinstance(event, RulebookChanged):
            # Workers hold the rulebook per version; re-arm them here, on the only thread
            # that uses the executor, so no evaluation races the switch.
            prepare = getattr(self.flow.executor, "prepare", None)
            if callable(prepare):
                prepare(self.flow.rulebooks.current())
            log.info("rulebook.active", version=event.version)

    def _on_refdata(self, ev: ReferenceDataChanged) -> None:
        self.refdata = ev.refdata
        self.flow.refdata = ev.refdata
        for accounts in ev.refdata.accounts_by_book.values():
            engine.prepare_accounts(accounts, self.flow.executor)
        log.info("refdata.active", version=ev.refdata.version)

    def _publish(self) -> None:
        """Summaries of the orders in memory, recomputed only for those that changed; the
        day's blotter and counts are read from the database by HTTP (gateway/node.py)."""
        dirty, self.orders.dirty = self.orders.dirty, set()
        for order_id in dirty:
            order = self.orders.in_memory(order_id)
            if order is None:
                self._summaries.pop(order_id, None)
            else:
                self._summaries[order_id] = order.summary()
        METRICS.orders_in_memory.set(len(self.orders))
        self.snapshot = {
            "live": dict(self._summaries),
            "orders_in_memory": len(self.orders),
            "orders_released": self.orders.released,
            "inbox_depth": self.inbox.depth(),
            "session_health": self.sessions.health(),
        }

    def session_up(self, key: str) -> bool:
        return self.sessions_up.get(key, False)

    def _answer(self, reply: Any, act: Callable[[], dict[str, Any]]) -> None:
        """A person's action (HTTP or CLI): the answer goes back to the waiting request."""
        try:
            result = act()
        except (LookupError, ValueError) as exc:
            reply.set_exception(exc)
        except Exception as exc:
            # The request must be answered even when the action itself failed.
            log.exception("operator.failed")
            reply.set_exception(exc)
        else:
            reply.set_result(result)

    def _desk_orders(self, ev: DeskOrdersSubmitted) -> dict[str, Any]:
        for order in ev.events:
            self.handle(order)
        return {"taken": len(ev.events)}

    # -- execution reports from brokers ----------------------------------------------------

    def _on_broker_report(self, ev: BrokerReportReceived) -> None:
        order = self.orders.in_memory(ev.order_id) if ev.order_id else None
        if order is None and ev.order_id:
            # A late report (a bust after the J) for an order that left memory: it comes
            # back as it stood before this report, which then goes the live way.
            order = self._load_back(ev.order_id, before_report=ev.report_id)
        if order is None:
            log.warning("fill.unknown_order", session=ev.session, cl_ord_id=ev.cl_ord_id,
                        exec_id=ev.exec_id)
            self.alerts.raise_("dk_unknown_order", severity="warning", session_id=ev.session,
                               detail={"cl_ord_id": ev.cl_ord_id, "exec_id": ev.exec_id})
            self.out.dont_know(ev.session, broker_order_id=ev.broker_order_id,
                               exec_id=ev.exec_id,
                               text=f"no matching order for ClOrdID {ev.cl_ord_id}")
            return
        self.intake.on_broker_answer(order)
        if self.reports.refused(order, ev):
            return
        corrected = self.apply_report(order, ev, store=False)
        allocating = order.done() and order.alloc_id is None
        if not (allocating or corrected):
            # The common case, a fill that changes nothing else: the order's row and the
            # relay's mark commit with the relay's wire record, which quickfix writes
            # after storing the relay for resend (recovery rebuilds the order from its
            # reports and asks that store whether a relay went out).
            values, at = self._order_row(order), self.clock.now()

            def write(conn: Any) -> None:
                faults.point("relay_stored")
                self.db.write_fill_applied(conn, order.order_id, ev.report_id, at, **values)

            with self.db.riding_on_wire(order.oms_session, write) as ride:
                self.reports.relay(order, ev, ev.report_id, mark=False)
            if not ride.done:
                self.db.store_fill_applied(order.order_id, ev.report_id, at, **values)
            return
        self.db.update_order(order.order_id, **self._order_row(order))
        if allocating:
            # The broker's J first: it is what the T+1 clock waits for. The OMS still sees
            # its final ER before its copy of the J.
            self.flow.allocate(order, include_oms=False)
        self.reports.relay(order, ev, ev.report_id)
        if allocating:
            self.flow.send_pending(order)
        elif corrected and order.allocs:
            self.lifecycle.on_correction(order, ev.exec_id)

    def apply_report(self, order: Order, ev: BrokerReportReceived, *,
                     store: bool = True) -> bool:
        """Fold one ER into the order: shared by live traffic and startup recovery.

        Returns True when the ER busted or corrected a fill (the ledger changed).
        `store=False`: the caller writes the order's row (`_order_row`) itself.
        """
        bound = log.bind(cl_ord_id=order.oms_cl_ord_id, order_id=order.order_id,
                         session=ev.session)
        order.broker_order_id = order.broker_order_id or ev.broker_order_id
        order.last_report_id = max(order.last_report_id or 0, ev.report_id)
        if ev.exec_type == "5":
            self.replaces.on_replaced(order, ev.cl_ord_id)
        corrected = False
        if ev.exec_type == "F" and ev.last_qty > 0:
            order.ledger.apply_fill(ev.exec_id, ev.last_qty, ev.last_px)
            order.ledger.last_fill_at = ev.ts_recv
            METRICS.fills.labels(broker=order.broker).inc()
        elif ev.exec_type in ("G", "H"):
            ref = ev.exec_ref_id or ""
            corrected = (order.ledger.bust(ref, ev.exec_id) if ev.exec_type == "H"
                         else order.ledger.correct(ref, ev.exec_id, ev.last_qty, ev.last_px))
            if corrected:
                bound.info("fill.corrected", exec_id=ev.exec_id, exec_ref_id=ref,
                           kind="bust" if ev.exec_type == "H" else "correction",
                           cum_qty=str(order.ledger.cum_qty), avg_px=str(order.ledger.avg_px))
                self.db.append_event("fill.corrected", recorded_at=self.clock.now(),
                                     session_id=ev.session, order_id=order.order_id,
                                     detail={"exec_id": ev.exec_id, "exec_ref_id": ref,
                                             "exec_type": ev.exec_type,
                                             "last_qty": str(ev.last_qty),
                                             "last_px": str(ev.last_px)})
            else:
                self.alerts.raise_("correction_of_unknown_fill", session_id=ev.session,
                                   order_id=order.order_id,
                                   detail={"exec_id": ev.exec_id, "exec_type": ev.exec_type,
                                           "exec_ref_id": ref})
        order.ledger.observe_totals(ev.cum_qty, ev.avg_px)
        order.leaves_qty = ev.leaves_qty
        new_status = ORD_STATUS.get(ev.ord_status, order.status)
        if ev.exec_type == "3":
            new_status = "done_for_day"
        old = order.status
        try:
            if corrected:
                # A bust can take a filled order back to partially filled: the broker's
                # OrdStatus after a correction is the truth, whatever it was before.
                order.status = new_status
            else:
                order.move_to(new_status)
        except InvalidTransition as exc:
            bound.error("order.invalid_transition", error=str(exc))
        for problem in order.ledger.discrepancies():
            self.alerts.raise_("ledger_mismatch", severity="warning", session_id=ev.session,
                               order_id=order.order_id,
                               detail={"exec_id": ev.exec_id, "problem": problem})
        if store:
            self.db.update_order(order.order_id, **self._order_row(order))
        if old != order.status:
            bound.info("order.state", old=old, new=order.status,
                       cum_qty=str(order.ledger.cum_qty), avg_px=str(order.ledger.avg_px))
        return corrected

    def _order_row(self, order: Order) -> dict[str, Any]:
        return {"status": order.status, "broker_order_id": order.broker_order_id,
                "cum_qty": str(order.ledger.cum_qty), "avg_px": str(order.ledger.avg_px),
                "leaves_qty": str(order.leaves_qty), "updated_at": self.clock.now()}
