"""Blocks split across brokers, on the dispatcher thread (gateway/book_routing.py says
which books, engine/broker_split.py how).

The OMS's block keeps its row, marked `split`; each broker gets a child order of its own
(row, ClOrdID at the broker, fills, allocation and J), which the rest of the gateway
handles like any order. What the OMS sees stays one order under its own ClOrdID:

* every execution report it gets carries the block's cumulative view over all children
  (CumQty, AvgPx, LeavesQty of the block; OrdStatus of the block);
* a child's report reaches it when it changes that view: the first acknowledgement, each
  fill, bust or correction, and the terminal state once every child is terminal (a
  child done earlier is recorded, not relayed, since the block is still working);
* each broker's J goes to that broker at its own average price, and the OMS gets a copy of
  every one (one J per broker for its one block);
* a cancel fans out to every child still working; a replace is refused (cancel and send
  a new block).

The view is rebuilt at restart from the children's rows and reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

import engine
from engine.broker_split import Leg, SplitError, by_account, by_wheel
from gateway.events import BrokerReportReceived, CancelRequested
from gateway.orders import TERMINAL, Order, make_order_id

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.split")

ZERO = Decimal(0)
_SIDES = {"buy": engine.Side.BUY, "sell": engine.Side.SELL,
          "sell_short": engine.Side.SELL_SHORT}


@dataclass
class LegState:
    order_id: str
    broker: str
    qty: Decimal
    cum: Decimal = ZERO
    notional: Decimal = ZERO
    status: str = "pending_new"


@dataclass
class SplitParent:
    order_id: str
    oms_session: str
    cl_ord_id: str
    order_qty: Decimal
    legs: dict[str, LegState] = field(default_factory=dict)
    acked: bool = False
    cancel_pending_sent: bool = False
    pending_new_sent: bool = False

    @property
    def cum(self) -> Decimal:
        return sum((leg.cum for leg in self.legs.values()), ZERO)

    def avg_px(self) -> Decimal:
        cum = self.cum
        notional = sum((leg.notional for leg in self.legs.values()), ZERO)
        return (notional / cum).quantize(Decimal("0.00000001")) if cum else ZERO

    def all_terminal(self) -> bool:
        return all(leg.status in TERMINAL for leg in self.legs.values())

    def leaves(self) -> Decimal:
        return sum((leg.qty - leg.cum for leg in self.legs.values()
                    if leg.status not in TERMINAL), ZERO)

    def totals(self, exec_type: str) -> dict[str, Any]:
        """What an execution report to the OMS says of the block as a whole."""
        return {"order_id": self.order_id, "exec_type": exec_type,
                "ord_status": self.ord_status(exec_type), "order_qty": self.order_qty,
                "cum_qty": self.cum, "avg_px": self.avg_px(),
                "leaves_qty": ZERO if self.all_terminal() else self.leaves()}

    def ord_status(self, exec_type: str) -> str:
        """The block's OrdStatus(39) over its children."""
        cum = self.cum
        if cum >= self.order_qty:
            return "2"
        if self.all_terminal():
            statuses = {leg.status for leg in self.legs.values()}
            if cum == 0 and statuses == {"rejected"}:
                return "8"
            if "canceled" in statuses:
                return "4"
            if "expired" in statuses:
                return "C"
            return "3"
        if exec_type == "6" or self.cancel_pending_sent:
            return "6"
        return "1" if cum > 0 else "0"


class SplitOrders:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        self.parents: dict[str, SplitParent] = {}
        self._by_cl: dict[tuple[str, str], str] = {}

    # -- the split ------------------------------------------------------------------------

    def routed(self, book: str) -> bool:
        settings = self.d.config.book(book)
        return settings is not None and settings.routing is not None

    def plan(self, order: Order) -> tuple[Leg, ...]:
        """The children's brokers and quantities; SplitError says why there are none."""
        d = self.d
        book = d.config.book(order.book)
        assert book is not None and book.routing is not None
        routing = book.routing
        security = d.refdata.securities.get(order.symbol)
        if routing.by == "wheel":
            if order.preallocations:
                raise SplitError("a pre-allocated block cannot go round a broker wheel (its "
                                 "accounts' quantities would not add up at each broker)")
            return by_wheel(order.order_qty, sorted(routing.wheel.items()),
                            security.lot_size if security else 1)
        lines = list(order.preallocations) or self.planned_lines(order)
        field_name = routing.account_field or ""
        broker_of = {}
        for account in d.refdata.accounts_for(order.book):
            value = getattr(account, field_name, "")
            if value in routing.brokers:
                broker_of[account.account_id] = routing.brokers[value]
        return by_account(lines, broker_of)

    def planned_lines(self, order: Order) -> list[tuple[str, Decimal]]:
        """The book's scheme over the whole block, as if it filled: each account's share."""
        d = self.d
        security = d.refdata.securities.get(order.symbol)
        px = order.price or (security.price if security else None) or Decimal(1)
        book = d.config.book(order.book)
        request = engine.AllocationRequest(
            block_id=order.order_id, symbol=order.symbol, side=_SIDES[order.side],
            executed_qty=order.order_qty, avg_px=px,
            trade_date=date.fromisoformat(order.trade_date),
            accounts=d.refdata.accounts_for(order.book), securities=d.refdata.securities,
            decided_at=d.clock.now(), method=book.method if book else None,
            rotation_offset=0)
        decision = engine.allocate(request, d.flow.rulebooks.current(), d.flow.executor)
        if decision.unallocated_qty > 0:
            raise SplitError(f"the book's scheme leaves {decision.unallocated_qty} of the "
                             f"block unallocated: {decision.unallocated_reason}")
        return [(line.account_id, line.qty) for line in decision.lines]

    def start(self, order: Order, legs: tuple[Leg, ...], now: datetime) -> None:
        """The block becomes its children: all rows in one transaction, then each routed."""
        d = self.d
        book = d.config.book(order.book)
        routing = book.routing if book else None
        reasons: dict[str, str | None] = {
            leg.broker: f"split by {routing.account_field}: the accounts {leg.broker} "
                        "executes for, each with its share of the block under the book's "
                        "scheme" for leg in legs
        } if routing is not None and not order.preallocations else {}
        children, rows = self.children(order, legs, now, reasons)
        d.db.split_order(order.order_id, rows, now)
        self.adopt(order, children, now)
        for child in children:
            d.intake.route(child, now)

    def children(self, order: Order, legs: tuple[Leg, ...], now: datetime,
                 reasons: dict[str, str | None]) -> tuple[list[Order], list[dict[str, Any]]]:
        """The child orders of `legs` and their rows (`reasons`: per broker, the reason
        its pre-allocation is stored with; the block's own by default)."""
        d = self.d
        children, rows = [], []
        for leg in legs:
            key = f"{order.oms_cl_ord_id}/{leg.broker}"  # the child row's unique key
            reason = reasons.get(leg.broker) or order.preallocation_reason
            child = Order(
                order_id=make_order_id(order.oms_session, key, order.trade_date),
                oms_session=order.oms_session, oms_cl_ord_id=order.oms_cl_ord_id,
                book=order.book, symbol=order.symbol, side=order.side, order_qty=leg.qty,
                ord_type=order.ord_type, price=order.price, time_in_force=order.time_in_force,
                broker=leg.broker, trade_date=order.trade_date, status="pending_new",
                leaves_qty=leg.qty, preallocations=leg.preallocations,
                preallocation_reason=reason if leg.preallocations else None,
                excluded=order.excluded, stop_px=order.stop_px, peg_offset=order.peg_offset,
                parent_id=order.order_id)
            children.append(child)
            rows.append(child_row(child, key, d.flow.eligibility_json(order), now))
        return children, rows

    def adopt(self, order: Order, children: list[Order], now: datetime, *,
              event: str = "order.split", crossed: bool = False) -> None:
        """The stored children taken into memory, under the block's one view. `crossed`:
        a part already executed (gateway/crossing_live.py), so the OMS is past "new" and
        "pending new" for this block."""
        d = self.d
        parent = self._register(order.order_id, order.oms_session, order.oms_cl_ord_id,
                                order.order_qty)
        if crossed:
            parent.acked = parent.pending_new_sent = True
        for child in children:
            parent.legs[child.order_id] = LegState(child.order_id, child.broker, child.order_qty)
        log.info(event, order_id=order.order_id, cl_ord_id=order.oms_cl_ord_id,
                 legs=[f"{c.broker}:{c.order_qty}" for c in children])
        d.db.append_event(event, recorded_at=now, session_id=order.oms_session,
                          order_id=order.order_id,
                          detail={"children": [{"order_id": c.order_id, "broker": c.broker,
                                                "qty": str(c.order_qty),
                                                "accounts": len(c.preallocations)}
                                               for c in children]})
        for child in children:
            d.orders[child.order_id] = child

    def _register(self, parent_id: str, session: str, cl: str, qty: Decimal) -> SplitParent:
        parent = self.parents.get(parent_id)
        if parent is None:
            parent = self.parents[parent_id] = SplitParent(parent_id, session, cl, qty)
            self._by_cl[(session, cl)] = parent_id
        return parent

    def restore(self, child: Order) -> None:
        """At restart (or a child loaded back): the block's view from its children's rows."""
        assert child.parent_id is not None
        if child.parent_id in self.parents:
            return
        row = self.d.db.load_order(child.parent_id)
        if row is None:
            return
        parent = self._register(row["order_id"], row["oms_session"], row["oms_cl_ord_id"],
                                Decimal(row["order_qty"]))
        for r in self.d.db.children_of(parent.order_id):
            cum, avg = Decimal(r["cum_qty"]), Decimal(r["avg_px"])
            parent.legs[r["order_id"]] = LegState(r["order_id"], r["broker"],
                                                  Decimal(r["order_qty"]), cum, cum * avg,
                                                  r["status"])
        parent.acked = any(leg.status not in ("pending_new", "received", "rejected")
                           for leg in parent.legs.values())

    def forget_if_done(self, parent_id: str) -> None:
        """Drop a block's view once every child has left memory (finished): a late report
        for one of them loads it back with its view (`restore`), as for any order."""
        parent = self.parents.get(parent_id)
        if parent is not None and not any(self.d.orders.in_memory(i) for i in parent.legs):
            del self.parents[parent_id]
            self._by_cl.pop((parent.oms_session, parent.cl_ord_id), None)

    def parent_of(self, session: str, cl_ord_id: str) -> SplitParent | None:
        pid = self._by_cl.get((session, cl_ord_id))
        return self.parents.get(pid) if pid else None

    # -- what the OMS hears ------------------------------------------------------------------

    def terminal_view(self, child: Order, exec_type: str) -> dict[str, Any] | None:
        """The block's totals when `child` ended without a report from its broker (never
        sent: its session stayed down), or None while other children still work."""
        parent = self.parents.get(child.parent_id or "")
        if parent is None:
            return None
        leg = parent.legs.get(child.order_id)
        if leg is not None:
            leg.status = child.status
        if not parent.all_terminal():
            return None
        return parent.totals(exec_type)

    def view(self, child: Order, ev: BrokerReportReceived) -> dict[str, Any] | None:
        """The relay's fields for the block as a whole, or None when this report does not
        change what the OMS sees (it is recorded and marked, not sent)."""
        parent = self.parents.get(child.parent_id or "")
        if parent is None:
            return None
        leg = parent.legs.setdefault(child.order_id, LegState(child.order_id, child.broker,
                                                              child.order_qty))
        leg.cum, leg.notional = child.ledger.cum_qty, child.ledger.notional
        leg.status = child.status
        et = ev.exec_type
        if et == "0":
            if parent.acked:
                return None
            parent.acked = True
        elif et in ("4", "3", "C", "8"):
            if et == "8":
                # One broker refused its part: people must know now, not when the block ends.
                self.d.alerts.raise_("split_part_rejected", session_id=ev.session,
                                     order_id=parent.order_id,
                                     detail={"broker": child.broker, "child": child.order_id,
                                             "cl_ord_id": parent.cl_ord_id, "text": ev.text})
            if not parent.all_terminal():
                return None
        elif et == "6":
            if parent.cancel_pending_sent:
                return None
            parent.cancel_pending_sent = True
        elif et not in ("F", "G", "H"):
            return None
        return parent.totals(et)

    def on_cancel(self, ev: CancelRequested) -> bool:
        """The OMS cancels a split block: every child still working is cancelled at its
        broker. False when the ClOrdID is not a split block's."""
        parent = self.parent_of(ev.session, ev.orig_cl_ord_id)
        if parent is None:
            return False
        d = self.d
        working = [o for o in (d.orders.in_memory(i) for i in parent.legs)
                   if o is not None and o.status not in TERMINAL]
        if not working:
            d.out.cancel_reject(ev.session, order_id=parent.order_id, cl_ord_id=ev.cl_ord_id,
                                orig_cl_ord_id=ev.orig_cl_ord_id,
                                ord_status=parent.ord_status("0"), reason="0",
                                text=f"cannot cancel {ev.orig_cl_ord_id}: every broker's "
                                     "order is done")
            return True
        for child in working:
            d.cancels.cancel(child, ev)
        return True


def child_row(child: Order, key: str, eligibility_json: str, now: datetime) -> dict[str, Any]:
    return {
        "order_id": child.order_id, "oms_session": child.oms_session, "oms_cl_ord_id": key,
        "book": child.book, "symbol": child.symbol, "side": child.side,
        "order_qty": str(child.order_qty), "ord_type": child.ord_type,
        "price": str(child.price) if child.price is not None else None,
        "stop_px": str(child.stop_px) if child.stop_px is not None else None,
        "peg_offset": str(child.peg_offset) if child.peg_offset is not None else None,
        "time_in_force": child.time_in_force, "broker": child.broker,
        "status": "pending_new", "cum_qty": "0", "avg_px": "0",
        "leaves_qty": str(child.order_qty), "trade_date": child.trade_date,
        "eligibility_json": eligibility_json,
        "preallocations_json": json.dumps({
            "lines": [[a, str(q)] for a, q in child.preallocations],
            "reason": child.preallocation_reason}) if child.preallocations else None,
        "created_at": now, "updated_at": now, "parent_order_id": child.parent_id,
    }
