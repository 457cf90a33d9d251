"""Startup recovery: rebuild the dispatcher's state from the database and re-drive the rest.

Recovery shares the live code paths: stored ERs are folded with `apply_report`, unsent
relays and allocations go out through the same methods, and a done order without an
allocation is allocated exactly as if its last fill had just arrived.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import structlog

from gateway import faults
from gateway.config import CROSS_VENUE
from gateway.dispatcher import Dispatcher
from gateway.events import (
    AllocationAckReceived,
    BlockOrderReceived,
    BrokerReportReceived,
    ConfirmationReceived,
)
from gateway.fix import confirm_codec
from gateway.orders import TERMINAL, Order
from gateway.report_relay import relay_exec_id

log = structlog.get_logger("fixalloc.recovery")

_ALLOC_STATUS = re.compile(rb"\x0187=(\d)\x01")


def recover(d: Dispatcher) -> dict[str, int]:
    """Rebuild orders from the database; return counts of what was re-driven."""
    counts = {"orders": 0, "relayed": 0, "allocated": 0, "resent": 0, "routed": 0,
              "validated": 0}
    # Released orders are finished: they stay in the database until an event needs them.
    for row in d.db.unreleased_orders():
        restore(d, row, counts)
    counts["confirmations"] = _recover_confirmations(d)
    for alloc in d.db.allocations_awaiting_aks():
        d.confirmations.watch(alloc["order_id"], alloc["broker"], alloc["alloc_id"],
                              alloc["acked_at"])
    open_orders = sum(1 for o in d.orders.values() if o.status not in TERMINAL)
    log.info("recovery.done", open_orders=open_orders, **counts)
    return counts


def load_back(d: Dispatcher, order_id: str, *, before_report: int | None = None
              ) -> Order | None:
    """A released order back in memory for a late event (a bust, an operator's action),
    by the same path as startup; None when it is not ours or was never more than a reject.

    `before_report`: the ER that brings it back, already stored, is left out so that the
    live path applies, relays and acts on it as on any other."""
    row = d.db.load_order(order_id)
    if row is None or row.get("released_at") is None:
        return None
    counts: dict[str, int] = {}
    order = restore(d, row, counts, before_report=before_report)
    if order is not None:
        d.db.mark_released(order_id, None)
        log.info("order.loaded_back", order_id=order_id, **counts)
    return order


def restore(d: Dispatcher, row: dict[str, Any], counts: dict[str, int], *,
            before_report: int | None = None) -> Order | None:
    """One order from its row, reports, replaces and Js, re-driving what is unfinished."""
    def bump(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    if row["status"] in ("rejected", "split"):
        return None  # a split block lives on in its children
    if row["status"] in TERMINAL and not d.db.load_reports(row["order_id"]):
        # Closed by us without ever reaching the broker (its acknowledgement deadline
        # passed while it was queued): the OMS has had its final answer.
        return None
    order = Order(
        order_id=row["order_id"], oms_session=row["oms_session"],
        oms_cl_ord_id=row["oms_cl_ord_id"], book=row["book"], symbol=row["symbol"],
        side=row["side"], order_qty=Decimal(row["order_qty"]), ord_type=row["ord_type"],
        price=Decimal(row["price"]) if row["price"] else None,
        time_in_force=row["time_in_force"], broker=row["broker"],
        trade_date=row["trade_date"], status="pending_new" if row["broker"] else "received",
        broker_order_id=row["broker_order_id"], leaves_qty=Decimal(row["order_qty"]),
        stop_px=Decimal(row["stop_px"]) if row.get("stop_px") else None,
        peg_offset=Decimal(row["peg_offset"]) if row.get("peg_offset") else None,
    )
    if row.get("parent_order_id"):
        # One broker's part of a split block: it answers the OMS under the block's ClOrdID.
        order.parent_id = row["parent_order_id"]
        d.splits.restore(order)
        parent = d.splits.parents.get(row["parent_order_id"])
        if parent is not None:
            order.oms_cl_ord_id = parent.cl_ord_id
    if row.get("preallocations_json"):
        pre = json.loads(row["preallocations_json"])
        order.preallocations = tuple((a, Decimal(q)) for a, q in pre["lines"])
        order.preallocation_reason = pre["reason"]
    if order.status == "received":
        # Stored by the FIX callback, but the process died before the dispatcher saw it:
        # validate and route it now, exactly as the live path would have.
        d.handle(BlockOrderReceived(
            session=order.oms_session, order_id=order.order_id, duplicate=False,
            cl_ord_id=order.oms_cl_ord_id, book=order.book, symbol=order.symbol,
            side=order.side, order_qty=order.order_qty, ord_type=order.ord_type,
            price=order.price, time_in_force=order.time_in_force, seq_num=0,
            ts_recv=d.clock.now(), trade_date=order.trade_date, stop_px=order.stop_px,
            peg_offset=order.peg_offset,
            preallocations=order.preallocations,
            preallocation_reason=order.preallocation_reason))
        bump("validated")
        return d.orders.in_memory(order.order_id)
    d.orders[order.order_id] = order
    bump("orders")
    cancels = d.db.events("order.cancel_requested", order_id=order.order_id)
    if cancels:
        order.cancel_count = len(cancels)
        order.oms_cancel_cl_ord_id = json.loads(cancels[-1]["detail_json"])["cl_ord_id"]
    d.replaces.restore(order)
    reports = [r for r in d.db.load_reports(order.order_id)
               if before_report is None or int(r["id"]) < before_report]
    for rep in reports:
        if rep.get("dk_reason"):
            continue  # answered with a DK when it arrived; never part of the ledger
        ev = BrokerReportReceived.from_row(rep)
        if d.reports.refused(order, ev):
            continue
        d.apply_report(order, ev)
        if rep["relayed_at"] is None:
            # The relay may have gone to quickfix just before the crash that kept it
            # from being marked: the wire log and quickfix's store decide, so the OMS
            # never gets it twice.
            exec_id = relay_exec_id(order.order_id, ev.report_id)
            if d.out.handed_over(order.oms_session, "8", exec_id):
                d.db.mark_relayed(ev.report_id, d.clock.now())
            else:
                d.reports.relay(order, ev, ev.report_id, poss_resend=True)
                bump("relayed")
                faults.point("recovery_redriving")
    d.orders.index(order)  # a replace re-applied above changed the OMS's ClOrdID
    d.replaces.restore_acks(order)
    if not reports:
        if d.out.handed_over(d.out.broker_key(order.broker), "D", order.order_id):
            # Sent before the crash, not answered yet: the broker's deadline runs again.
            d.intake.route_sent(order, d.clock.now())
        else:
            # Never reached the wire: held until the broker session logs on.
            d.intake.route(order, d.clock.now(), restarting=True)
            bump("routed")
    rows = d.db.allocations_for_order(order.order_id)
    if rows:
        counts["resent"] = counts.get("resent", 0) + _recover_allocations(d, order, rows)
    elif order.done():
        d.flow.allocate(order)
        bump("allocated")
    return order


def _recover_allocations(d: Dispatcher, order: Order, rows: list[dict[str, object]]) -> int:
    """Every J of the order back in memory; unsent parts sent, received Ps applied."""
    resent = 0
    for alloc in rows:
        alloc_id = str(alloc["alloc_id"])
        order.allocs[alloc_id] = str(alloc["status"])
        order.alloc_id, order.alloc_status = alloc_id, str(alloc["status"])
    live = d.lifecycle.live(order)
    if live is not None:
        order.alloc_id, order.alloc_status = live, order.allocs[live]
    for alloc in rows:
        alloc_id = str(alloc["alloc_id"])
        if alloc["sent_at"] is None or alloc["oms_sent_at"] is None:
            d.flow.send(order, alloc_id, check_wire=True)
            resent += 1
            faults.point("recovery_redriving")
        venue = order.broker == CROSS_VENUE.name
        if venue:
            # The venue's P to a J just re-sent is in the wire log: applied below, once.
            d.out.cross_venue().forget(alloc_id)
        # After sending: a J that reached the wire before its row said "sent" may already
        # have its P in the wire log, received but never applied.
        _replay_acks(d, order, alloc_id)
        if venue and order.allocs.get(alloc_id) == "sent":
            # The crash came between the venue's J and its P: the venue answers now.
            d.out.cross_venue().accept(alloc_id)
    live = d.lifecycle.live(order)
    current = d.db.load_allocation(live) if live else None
    if current is not None and current["alloc_trans_type"] != "2" and (
            Decimal(str(current["quantity"])) != order.ledger.cum_qty
            or Decimal(str(current["avg_px"])) != order.ledger.avg_px):
        # A bust or correction was stored but the process died before its Replace.
        d.lifecycle.on_correction(order, "recovery")
    else:
        order.ledger.changed_by_correction = False
    return resent


def _replay_acks(d: Dispatcher, order: Order, alloc_id: str) -> None:
    """Apply a P that reached the wire log but not the allocation row before a crash."""
    if order.allocs.get(alloc_id) not in ("sent", "received"):
        return
    key = d.out.broker_key(order.broker)
    for msg in d.db.received_with_ref(key, "P", alloc_id):
        match = _ALLOC_STATUS.search(bytes(msg["raw"]))
        if match is None:
            continue
        d.lifecycle.on_ack(AllocationAckReceived(
            session=key, alloc_id=alloc_id, alloc_status=match.group(1).decode(),
            rej_code=None, text="replayed from the wire log at startup",
            ts_recv=msg["recorded_at"]))


def _recover_confirmations(d: Dispatcher) -> int:
    """AKs stored but never matched are matched now; an AU lost in a crash is sent again."""
    redone = 0
    for row in d.db.confirmations():
        if row["outcome"] == "pending":
            fields = _confirmation_fields(row)
            d.confirmations.on_confirmation(ConfirmationReceived(
                session=row["session_id"], confirmation_id=row["id"], fields=fields,
                ts_recv=row["received_at"]))
            redone += 1
        elif row["affirm_status"] and row["answered_at"] is None and not d.out.handed_over(
                row["session_id"], "AU", row["confirm_id"]):
            d.confirmations.resend_answer(row)
            redone += 1
    return redone


def _confirmation_fields(row: dict[str, object]) -> confirm_codec.ConfirmationFields:
    eco = json.loads(str(row["economics_json"]))

    def dec(key: str) -> Decimal | None:
        return None if eco.get(key) is None else Decimal(eco[key])

    return confirm_codec.ConfirmationFields(
        confirm_id=str(row["confirm_id"]), confirm_ref_id=row["confirm_ref_id"],  # type: ignore[arg-type]
        confirm_req_id=row["confirm_req_id"], trans_type=str(row["trans_type"]),  # type: ignore[arg-type]
        confirm_type=str(row["confirm_type"]), confirm_status=str(row["confirm_status"]),
        copy=bool(eco.get("copy")), alloc_id=row["alloc_id"],  # type: ignore[arg-type]
        individual_alloc_id=row["individual_alloc_id"],  # type: ignore[arg-type]
        account=str(row["account_id"]), qty=Decimal(eco["qty"]), side=eco["side"],
        avg_px=Decimal(eco["avg_px"]), gross=Decimal(eco["gross"]),
        net_money=Decimal(eco["net_money"]), commission=dec("commission"),
        trade_date=eco.get("trade_date"), settl_date=eco.get("settl_date"),
        text=eco.get("text"))
