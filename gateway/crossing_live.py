"""Internal crossing of live blocks, on the dispatcher thread.

With `crossing.live_window_seconds` set in the rulebook's policy (docs/crossing.md), a
market or limit buy or sell block from the OMS or the desk does not go to its broker at
once: it waits up to that long for a block on the other side of the same security (the
OMS hears "pending new" meanwhile). When one arrives, the two are crossed by the same
engine as a rebalance's blocks (engine/crossing.py: eligible accounts, the policy's price
from the reference prices pushed to the gateway, the cap on either block), and then:

* each block becomes two children (gateway/split_orders.py): its crossed part at the
  internal venue (gateway/fix/cross_venue.py) and the rest at its broker, each pre-
  allocated to its accounts, what each account crosses coming off what it routes;
* the venue's execution reports (one per side, at the cross price, no commission) are
  stored with both splits in one transaction, then go the way of any broker's fill: the
  OMS hears each block's cumulative execution, the crossed part is allocated and its J
  goes to the venue and to the OMS with every line marked as crossed, and the broker
  gets, and its J covers, only what it executes;
* a refused cross (stale or missing price, no eligible account, a limit the price would
  break, ...) is recorded with its reason and both blocks go to their brokers whole.

A block whose window ends without a cross is routed whole. So is a waiting block at a
restart (the window is not carried over) and any block the policy cannot take: a short
sale, a stop or pegged order, a book routed to several brokers.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import structlog

from engine.broker_split import Leg
from engine.crossing import Cross, Refusal, cross_blocks
from engine.crossing_policy import CrossingPolicy
from engine.rebalance_blocks import Block
from gateway import faults
from gateway.config import CROSS_VENUE
from gateway.events import BrokerReportReceived, CancelRequested
from gateway.orders import Order
from gateway.reference_prices import MemoryPrices, quotes_for

if TYPE_CHECKING:
    from gateway.dispatcher import Dispatcher

log = structlog.get_logger("fixalloc.crossing")

ZERO = Decimal(0)
_CROSSABLE_TYPES = ("1", "2")  # market, limit
# Day orders only: an IOC or FOK must not wait, and an at-the-open or at-the-close order
# is not for a price in the middle of the day.
_CROSSABLE_TIF = (None, "0")


class LiveCrossing:
    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        self.prices = MemoryPrices()
        """Reference prices for crossing: pushed over HTTP (POST /prices)."""
        self.waiting: dict[str, datetime] = {}
        """Blocks waiting for opposite interest: order id -> end of its window."""

    def policy(self) -> CrossingPolicy | None:
        policy: CrossingPolicy | None = self.d.flow.rulebooks.current().crossing
        if policy is None or not policy.enabled or policy.live_window_seconds <= 0:
            return None
        return policy

    # -- arrival ---------------------------------------------------------------------------

    def offer(self, order: Order, now: datetime) -> bool:
        """An accepted block, before it is routed. True when it is taken here: crossed at
        once, or waiting for the other side; False: route it as usual."""
        policy = self.policy()
        if policy is None or order.side not in ("buy", "sell") \
                or order.ord_type not in _CROSSABLE_TYPES \
                or order.time_in_force not in _CROSSABLE_TIF or self.d.splits.routed(order.book):
            return False
        other = self._opposite(order)
        if other is None:
            self._wait(order, now, policy)
            return True
        del self.waiting[other.order_id]
        try:
            crossed = self._cross(other, order, now, policy)
        except Exception:
            # Nothing was stored: both go to their brokers whole rather than wait forever.
            log.exception("cross.failed", buy_or_sell=other.order_id, other=order.order_id)
            self.d.alerts.raise_("cross_failed", order_id=order.order_id,
                                 detail={"other": other.order_id})
            crossed = False
        if crossed:
            return True
        self.d.orders.dirty.add(other.order_id)
        self.d.intake.route(other, now)
        return False

    def _opposite(self, order: Order) -> Order | None:
        """The longest-waiting block on the other side of the same security and day."""
        for order_id in self.waiting:
            other = self.d.orders.in_memory(order_id)
            if other is not None and other.symbol == order.symbol \
                    and other.side != order.side and other.trade_date == order.trade_date:
                return other
        return None

    def _wait(self, order: Order, now: datetime, policy: CrossingPolicy) -> None:
        d = self.d
        until = now + timedelta(seconds=policy.live_window_seconds)
        self.waiting[order.order_id] = until
        log.info("cross.waiting", order_id=order.order_id, symbol=order.symbol,
                 side=order.side, until=until.isoformat())
        d.db.append_event("cross.waiting", recorded_at=now, session_id=order.oms_session,
                          order_id=order.order_id,
                          detail={"cl_ord_id": order.oms_cl_ord_id, "until": until.isoformat(),
                                  "window_seconds": policy.live_window_seconds})
        d.out.execution_report(
            order.oms_session, order_id=order.order_id, cl_ord_id=order.oms_cl_ord_id,
            exec_id=f"{order.order_id}-PX", exec_type="A", ord_status="A",
            symbol=order.symbol, side=order.side, order_qty=order.order_qty,
            last_qty=ZERO, last_px=ZERO, cum_qty=ZERO, avg_px=ZERO,
            leaves_qty=order.order_qty, book=order.book, transact_time=now,
            text=f"pending new: open to internal crossing for "
                 f"{policy.live_window_seconds} s before it goes to {order.broker}")

    # -- the window ------------------------------------------------------------------------

    def on_tick(self, now: datetime) -> None:
        for order_id, until in list(self.waiting.items()):
            if now < until:
                continue
            del self.waiting[order_id]
            order = self.d.orders.in_memory(order_id)
            if order is None:
                continue
            log.info("cross.window_ended", order_id=order_id)
            self.d.db.append_event("cross.none", recorded_at=now,
                                   session_id=order.oms_session, order_id=order_id,
                                   detail={"code": "NO_OPPOSITE_INTEREST",
                                           "text": "no block on the other side arrived "
                                                   "within the window; routed whole"})
            self.d.orders.dirty.add(order_id)
            self.d.intake.route(order, now)

    def waiting_for(self, order_id: str) -> bool:
        return order_id in self.waiting

    def on_cancel(self, order: Order, ev: CancelRequested) -> bool:
        """The OMS cancels a waiting block: nothing was sent anywhere, so it ends here."""
        d = self.d
        if order.order_id not in self.waiting:
            return False
        del self.waiting[order.order_id]
        now = d.clock.now()
        order.status = "canceled"
        d.db.update_order(order.order_id, status="canceled", leaves_qty="0", updated_at=now,
                          released_at=now)
        d.db.append_event("order.canceled", recorded_at=now, session_id=ev.session,
                          order_id=order.order_id,
                          detail={"cl_ord_id": ev.cl_ord_id,
                                  "text": "canceled while waiting to cross; never routed"})
        d.out.execution_report(
            order.oms_session, order_id=order.order_id, cl_ord_id=ev.cl_ord_id,
            orig_cl_ord_id=order.oms_cl_ord_id, exec_id=f"{order.order_id}-XC",
            exec_type="4", ord_status="4", symbol=order.symbol, side=order.side,
            order_qty=order.order_qty, last_qty=ZERO, last_px=ZERO, cum_qty=ZERO,
            avg_px=ZERO, leaves_qty=ZERO, book=order.book, transact_time=now,
            text="canceled before it was routed (it was waiting to cross)")
        del d.orders[order.order_id]
        return True

    # -- the cross ---------------------------------------------------------------------------

    def _interest(self, order: Order) -> tuple[tuple[str, Decimal], ...] | None:
        """Each account's quantity in the block: the OMS's pre-allocation, else the book's
        scheme over the whole block (as a split by account does); None if it has none."""
        if order.preallocations:
            return tuple(sorted(order.preallocations))
        try:
            return tuple(sorted(self.d.splits.planned_lines(order)))
        except Exception as exc:
            log.warning("cross.no_interest", order_id=order.order_id, error=str(exc))
            return None

    def _cross(self, resting: Order, incoming: Order, now: datetime,
               policy: CrossingPolicy) -> bool:
        d = self.d
        buy, sell = (resting, incoming) if resting.side == "buy" else (incoming, resting)
        interest = {o.order_id: self._interest(o) for o in (buy, sell)}
        blocks = [Block(o.order_id, o.symbol, o.side, o.order_qty, lines,
                        o.preallocation_reason or "")
                  for o in (buy, sell) if (lines := interest[o.order_id])]
        accounts = {a.account_id: a for o in (buy, sell)
                    for a in d.refdata.accounts_for(o.book)}
        # An account of a block that pre-trade compliance excluded from that block's side
        # never crosses (an OMS's pre-allocation is its word, not a checked trade list).
        kept_out = {x["account_id"] for o in (buy, sell) for x in o.excluded
                    if x["account_id"] in dict(interest[o.order_id] or ())}
        if kept_out:
            policy = replace(policy, exclude_accounts=policy.exclude_accounts | kept_out)
        security = d.refdata.securities.get(buy.symbol)
        digest = hashlib.sha256(f"{buy.order_id}|{sell.order_id}".encode()).hexdigest()
        outcome: Cross | Refusal
        if len(blocks) < 2:
            outcome = Refusal(f"XR-{digest[:12]}-{buy.symbol}", buy.symbol, "NO_INTEREST",
                              "the accounts of a block could not be told; both are routed "
                              "whole", buy.order_id, sell.order_id)
        else:
            result = cross_blocks(
                blocks, policy, accounts.values(), quotes_for(self.prices, [buy.symbol]),
                now=now, inputs_hash=digest,
                lot_sizes={buy.symbol: security.lot_size} if security else None)
            outcome = result.crosses[0] if result.crosses else result.refusals[0]
        if isinstance(outcome, Cross):
            breach = _beyond_limit(buy, sell, outcome.price)
            if breach:
                outcome = Refusal(outcome.cross_id, outcome.symbol, "PRICE_BEYOND_LIMIT",
                                  f"{breach}; both blocks are routed whole", buy.order_id,
                                  sell.order_id, outcome.excluded)
        if isinstance(outcome, Refusal):
            log.info("cross.refused", code=outcome.code, buy=buy.order_id, sell=sell.order_id)
            for o in (buy, sell):
                d.db.append_event("cross.refused", recorded_at=now, severity="info",
                                  session_id=o.oms_session, order_id=o.order_id,
                                  detail=outcome.to_json())
            return False
        self._execute(buy, sell, outcome, interest, now)
        return True

    def _execute(self, buy: Order, sell: Order, cross: Cross,
                 interest: dict[str, tuple[tuple[str, Decimal], ...] | None],
                 now: datetime) -> None:
        d = self.d
        venue = d.out.cross_venue()
        text = (f"internal cross {cross.cross_id}: {cross.qty} {cross.symbol} at "
                f"{cross.price} ({cross.price_rule} from {cross.price_source} as of "
                f"{cross.price_as_of.isoformat()}); no commission")
        splits, wires, reports, plans = [], [], [], []
        for order, crossed in ((buy, cross.buys), (sell, cross.sells)):
            took = dict(crossed)
            rest = tuple((a, q - took.get(a, ZERO)) for a, q in interest[order.order_id] or ()
                         if q - took.get(a, ZERO) > 0)
            legs = [Leg(CROSS_VENUE.name, cross.qty, tuple(crossed))]
            if order.order_qty > cross.qty:
                legs.append(Leg(order.broker, order.order_qty - cross.qty, rest))
            reasons: dict[str, str | None] = {
                CROSS_VENUE.name: f"{text}: each account's crossed part of the block",
                order.broker: "the rest of each account's part of the block, after what it "
                              "crossed internally"}
            children, rows = d.splits.children(order, tuple(legs), now, reasons)
            cross_child = children[0]
            wire, report = venue.execution(
                child_id=cross_child.order_id, cross_id=cross.cross_id,
                exec_id=f"{cross.cross_id}-{order.side[0].upper()}", symbol=order.symbol,
                side=order.side, qty=cross.qty, price=cross.price,
                trade_date=order.trade_date, text=text, now=now)
            splits.append((order.order_id, rows))
            wires.append(wire)
            reports.append(report)
            plans.append((order, children))
        # The cross's record commits with the splits and the venue's reports.
        detail = cross.to_json()
        events = [{"kind": "cross.executed", "session_id": o.oms_session,
                   "order_id": o.order_id, "detail": {**detail, "exec_id": r["exec_id"]}}
                  for (o, _c), r in zip(plans, reports, strict=True)]
        report_ids = d.db.record_cross(splits, wires, reports, events, now)
        faults.point("cross_stored")
        for order, children in plans:
            if order.order_id in d.orders:
                del d.orders[order.order_id]
            d.splits.adopt(order, children, now, event="order.crossed", crossed=True)
        log.info("cross.executed", cross_id=cross.cross_id, qty=str(cross.qty),
                 price=str(cross.price), buy=buy.order_id, sell=sell.order_id)
        for (_order, children), report, report_id in zip(plans, reports, report_ids,
                                                          strict=True):
            # Stored: whatever fails from here is re-driven at restart, as for any fill;
            # one side's failure must not keep the other side's part from its broker.
            try:
                d.handle(BrokerReportReceived.from_row({**report, "id": report_id}))
            except Exception:
                log.exception("cross.relay_failed", cross_id=cross.cross_id)
            for street in children[1:]:
                d.intake.route(street, now)


def _beyond_limit(buy: Order, sell: Order, price: Decimal) -> str | None:
    """A limit the cross price would break (a buy above its limit, a sell below)."""
    if buy.ord_type == "2" and buy.price is not None and price > buy.price:
        return f"the cross price {price} is above the buy block's limit {buy.price}"
    if sell.ord_type == "2" and sell.price is not None and price < sell.price:
        return f"the cross price {price} is below the sell block's limit {sell.price}"
    return None
