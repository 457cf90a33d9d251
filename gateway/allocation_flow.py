"""From a done order to an AllocationInstruction on the wire, and the broker's ack back.

Runs on the dispatcher thread. The decision, the allocation and its lines are stored in
one transaction *before* the J is handed to quickfix, and the allocation id is a pure
function of the order, so a restart never produces a second J as New for the same block.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import structlog

import engine
from gateway import faults
from gateway.alerts import Alerts
from gateway.clock import Clock, settlement_date
from gateway.config import Config
from gateway.events import AllocationAckReceived
from gateway.fix.allocation_codec import ALLOC_TYPE_TO_FIX, JBlock, JLine
from gateway.fix.outbound import FixOutbound
from gateway.metrics import METRICS
from gateway.orders import ALLOC_STATUS_FROM_P, InvalidTransition, Order, alloc_transition
from gateway.persistence.store import Database
from gateway.reference import ReferenceData

log = structlog.get_logger("fixalloc.allocation")

SIDES = {"buy": engine.Side.BUY, "sell": engine.Side.SELL, "sell_short": engine.Side.SELL_SHORT}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal | date):
        return str(value)
    if hasattr(value, "value") and hasattr(value, "name"):
        return value.value
    return value


class AllocationFlow:
    def __init__(self, config: Config, db: Database, out: FixOutbound, refdata: ReferenceData,
                 rulebooks: Any, executor: Any, clock: Clock,
                 alerts: Alerts | None = None) -> None:
        self.config = config
        self.alerts = alerts or Alerts(db, clock)
        self.db = db
        self.out = out
        self.refdata = refdata
        self.rulebooks = rulebooks
        self.executor = executor
        self.clock = clock
        self._config_hash = config.config_hash()

    # -- pre-trade ------------------------------------------------------------------------

    def pre_trade(self, order: Order) -> dict[str, Any]:
        intent = engine.OrderIntent(block_id=order.order_id, symbol=order.symbol,
                                    side=SIDES[order.side], qty=order.order_qty,
                                    limit_px=order.price)
        report = engine.evaluate_eligibility(intent, self.refdata.accounts_for(order.book),
                                             self.refdata.securities, self.rulebooks.current(),
                                             self.executor)
        return {"eligible": list(report.eligible),
                "excluded": [_plain(r) for r in report.excluded],
                "rulebook_version": report.rulebook_version}

    def eligibility_json(self, order: Order) -> str:
        return json.dumps({"excluded": order.excluded}, sort_keys=True)

    # -- allocation -----------------------------------------------------------------------

    def allocate(self, order: Order, *, include_oms: bool = True) -> None:
        bound = log.bind(cl_ord_id=order.oms_cl_ord_id, order_id=order.order_id)
        book = self.config.book(order.book)
        started = self.clock.now()
        request = engine.AllocationRequest(
            block_id=order.order_id, symbol=order.symbol, side=SIDES[order.side],
            executed_qty=order.ledger.cum_qty, avg_px=order.ledger.avg_px,
            trade_date=date.fromisoformat(order.trade_date),
            accounts=self.refdata.accounts_for(order.book), securities=self.refdata.securities,
            decided_at=started,
            # A pre-allocated order is split as the OMS said (pro-rated on a partial fill).
            method=None if order.preallocations else (book.method if book else None),
            preallocations=dict(order.preallocations) or None,
            preallocation_reason=order.preallocation_reason,
            # A rotation tie-break stays fair over time: each block of the book starts the
            # rotation one account further on, and the count lives in the database.
            rotation_offset=self.db.allocations_for_book(order.book),
        )
        try:
            decision = engine.allocate(request, self.rulebooks.current(), self.executor)
            engine.check_decision(decision)
            settl = settlement_date(date.fromisoformat(order.trade_date)).isoformat()
        except Exception as exc:
            # Whatever the engine raised, the block becomes an exception for operations to
            # see, never a crash of the dispatcher and never a J.
            order.alloc_status = "exception"
            self.alerts.raise_("allocation_failed", order_id=order.order_id,
                               detail={"cl_ord_id": order.oms_cl_ord_id, "error": str(exc)})
            return
        METRICS.decision_seconds.observe((self.clock.now() - started).total_seconds())
        if decision.unallocated_qty > 0 or not decision.lines:
            order.alloc_status = "exception"
            self.alerts.raise_("unallocated_quantity", order_id=order.order_id,
                               detail={"cl_ord_id": order.oms_cl_ord_id,
                                       "unallocated_qty": str(decision.unallocated_qty),
                                       "reason": decision.unallocated_reason,
                                       "decision_id": decision.decision_id})
            return
        alloc_id = f"{order.order_id}-J1"
        broker = self.config.broker(order.broker)
        accounts = {a.account_id: a for a in self.refdata.accounts_for(order.book)}
        now = self.clock.now()
        lines = [
            {"individual_alloc_id": f"{alloc_id}-{i:05d}", "alloc_id": alloc_id,
             "account_id": ln.account_id, "qty": str(ln.qty), "avg_px": str(ln.avg_px),
             "custodian": accounts[ln.account_id].custodian,
             "prime_broker": accounts[ln.account_id].prime_broker,
             "strategy": accounts[ln.account_id].strategy,
             "vehicle": accounts[ln.account_id].vehicle,
             "lots_json": json.dumps(_plain(ln.lots)) if ln.lots else None}
            for i, ln in enumerate(decision.lines, start=1)
        ]
        allocation = {
            "alloc_id": alloc_id, "order_id": order.order_id,
            "decision_id": decision.decision_id, "broker": order.broker,
            "alloc_trans_type": "0", "alloc_type": ALLOC_TYPE_TO_FIX[broker.alloc_type],
            "quantity": str(decision.allocated_qty), "avg_px": str(decision.avg_px),
            "trade_date": order.trade_date, "settl_date": settl, "status": "pending_send",
            "created_at": now, "last_fill_at": order.ledger.last_fill_at}
        self.db.save_allocation(
            {"decision_id": decision.decision_id, "order_id": order.order_id,
             "method": decision.method, "rulebook_version": decision.rulebook_version,
             "inputs_hash": decision.inputs_hash, "config_hash": self._config_hash,
             "decided_at": started, "canonical_json": decision.to_canonical_json()},
            allocation, lines,
        )
        faults.point("decision_stored")
        order.alloc_id = alloc_id
        order.alloc_status = "pending_send"
        bound = bound.bind(alloc_id=alloc_id)
        bound.info("allocation.decided", method=decision.method, accounts=len(lines),
                   quantity=str(decision.allocated_qty), avg_px=str(decision.avg_px),
                   decision_id=decision.decision_id, rulebook=decision.rulebook_version)
        METRICS.allocations.labels(state="decided").inc()
        # What was just stored is handed over as is: no read-back on the last-fill path.
        self.send_pending(order, include_oms=include_oms, stored=(allocation, lines))

    def _j(self, order: Order, alloc: Mapping[str, Any], *, to_oms: bool) -> JBlock:
        order_ref: str | None
        if to_oms:
            cl_ord_id, order_ref = order.oms_cl_ord_id, order.order_id
        else:
            # A J quotes the latest ClOrdID of the chain at the broker (FIX_ALLOCATION §1.5).
            cl_ord_id = (order.order_id if order.cancel_count == 0
                         else f"{order.order_id}~C{order.cancel_count}")
            order_ref = order.broker_order_id
        return JBlock(
            alloc_id=alloc["alloc_id"], alloc_trans_type=alloc["alloc_trans_type"],
            alloc_type=alloc["alloc_type"], cl_ord_id=cl_ord_id, broker_order_id=order_ref,
            order_qty=order.order_qty, side=order.side, symbol=order.symbol,
            quantity=Decimal(alloc["quantity"]), avg_px=Decimal(alloc["avg_px"]),
            trade_date=alloc["trade_date"], settl_date=alloc["settl_date"],
            transact_time=self.clock.now(), secondary_alloc_id=order.order_id,
        )

    def send_pending(
        self, order: Order, *, check_wire: bool = False, include_oms: bool = True,
        stored: tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        """Send whatever of this order's allocation has not been handed to quickfix yet.

        Used right after the decision and again by startup recovery, which passes
        `check_wire`: the outbound wire log and quickfix's store then decide whether a J
        already went to quickfix before the crash, so it is never sent twice as New.
        """
        if order.alloc_id is None:
            return
        if stored is not None:
            alloc, rows = stored
        else:
            loaded = self.db.load_allocation(order.alloc_id)
            if loaded is None:
                return
            alloc, rows = loaded, self.db.load_allocation_lines(order.alloc_id)
        j_lines = [JLine(r["individual_alloc_id"], r["account_id"], Decimal(r["qty"]),
                         Decimal(r["avg_px"]), r["custodian"], r["prime_broker"], r["strategy"],
                         r["vehicle"]) for r in rows]
        broker_key = self.out.broker_key(order.broker)
        if alloc.get("sent_at") is None:
            if check_wire and self.out.handed_over(broker_key, "J", order.alloc_id):
                log.info("allocation.already_on_wire", alloc_id=order.alloc_id)
            else:
                self.out.allocation(broker_key, self._j(order, alloc, to_oms=False), j_lines,
                                    send_udfs=self.out.send_udfs(broker_key))
                faults.point("broker_j_sent")
            sent = self.clock.now()
            self.db.update_allocation(order.alloc_id, status="sent", sent_at=sent)
            faults.point("broker_j_recorded")
            order.alloc_status = "sent"
            METRICS.allocations.labels(state="sent").inc()
            if order.ledger.last_fill_at is not None:
                METRICS.allocation_seconds.observe(
                    (sent - order.ledger.last_fill_at).total_seconds())
            log.info("allocation.sent", alloc_id=order.alloc_id, broker=order.broker,
                     cl_ord_id=order.oms_cl_ord_id, lines=len(j_lines))
        if include_oms and alloc.get("oms_sent_at") is None:
            if not (check_wire and self.out.handed_over(order.oms_session, "J",
                                                          order.alloc_id)):
                self.out.allocation(order.oms_session, self._j(order, alloc, to_oms=True),
                                    j_lines, send_udfs=self.out.send_udfs(order.oms_session))
                faults.point("oms_j_sent")
            self.db.update_allocation(order.alloc_id, oms_sent_at=self.clock.now())
            log.info("allocation.sent_to_oms", alloc_id=order.alloc_id,
                     cl_ord_id=order.oms_cl_ord_id)

    # -- acks -----------------------------------------------------------------------------

    def on_ack(self, ev: AllocationAckReceived, orders: Mapping[str, Order]) -> None:
        order = next((o for o in orders.values() if o.alloc_id == ev.alloc_id), None)
        if order is None or order.alloc_status is None:
            self.alerts.raise_("unknown_alloc_ack", severity="warning", session_id=ev.session,
                               alloc_id=ev.alloc_id, detail={"status": ev.alloc_status,
                                                             "from": "broker"})
            return
        faults.point("ack_received")
        target = ALLOC_STATUS_FROM_P.get(ev.alloc_status, "received")
        try:
            new = alloc_transition(order.alloc_status, target)
        except InvalidTransition as exc:
            log.error("allocation.invalid_transition", alloc_id=ev.alloc_id, error=str(exc))
            return
        order.alloc_status = new
        self.db.update_allocation(ev.alloc_id, status=new, ack_status=ev.alloc_status,
                                  rej_code=ev.rej_code, ack_text=ev.text,
                                  acked_at=self.clock.now())
        METRICS.allocations.labels(state=new).inc()
        level = "warning" if "rejected" in new else "info"
        getattr(log, level)("allocation.ack", alloc_id=ev.alloc_id, status=new,
                            rej_code=ev.rej_code, text=ev.text, cl_ord_id=order.oms_cl_ord_id)
        if "rejected" in new:
            self.alerts.raise_(f"allocation_{new}", session_id=ev.session,
                               alloc_id=ev.alloc_id, order_id=order.order_id,
                               detail={"rej_code": ev.rej_code, "text": ev.text,
                                       "lines": [list(x) for x in ev.rejected_lines]})
