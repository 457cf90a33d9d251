"""The broker simulator's side of pre-allocated orders and cancel/replace (35=G).

A D or G carrying AllocID and NoAllocs (PreAllocGrp) is a pre-allocation the broker books
from. `preallocation_answer` says how the simulated broker answers it:
  "accept"        P 87=3 then P 87=0 (Saxo's FIX API does this)
  "reject_p"      P 87=3 then P 87=1 (AllocRejCode 0, unknown account); the order keeps
                  working
  "reject_order"  the whole D is refused with ER 150=8/39=8 naming the pre-allocation
A G changes quantity and price (never below what is executed) and answers 150=5 under
the new ClOrdID; one it cannot apply is answered 35=9 with CxlRejResponseTo 2.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import quickfix as fix

from gateway.fix import allocation_codec, codec, replace_codec
from gateway.fix import tags as T
from gateway.fix.sim.orders import DONE, SimOrder, order_root

PREALLOCATION_ANSWERS = ("accept", "reject_p", "reject_order")


class OrderChanges:
    """Mixed into BrokerSimulator, which provides `orders`, `engine`, `_lock`, `_report`
    and `_on_message`."""

    orders: dict[str, SimOrder]
    engine: Any
    _lock: Any
    _report: Callable[..., fix.Message]
    _on_message: Callable[[str, Any], None]

    def _init_order_changes(self) -> None:
        self.preallocation_answer = "accept"
        self.preallocation_acks: list[allocation_codec.AllocAckFields] = []
        """Every P sent for a pre-allocation (87=3, then 87=0 or 87=1)."""
        self.replaces: list[tuple[str, str | None, tuple[tuple[str, Decimal], ...]]] = []
        """(ClOrdID, AllocID or None, NoAllocs) of every G applied, in order."""
        self.replace_rejects: list[str] = []

    def _take_preallocation(self, order: SimOrder, message: fix.Message) -> bool:
        """Read a D's pre-allocation; False when the plan refuses the whole order."""
        alloc_id, lines = replace_codec.read_preallocations(message)
        if alloc_id is None:
            return True
        with self._lock:
            order.prealloc_id, order.preallocations = alloc_id, lines
        if self.preallocation_answer == "reject_order":
            with self._lock:
                order.status = "8"
            self._report(order, exec_type="8", last_qty=Decimal(0), last_px=Decimal(0),
                         text=f"pre-allocation {alloc_id} refused: account "
                              f"{lines[0][0] if lines else '?'} unknown at this broker")
            return False
        return True

    def _answer_preallocation(self, order: SimOrder) -> None:
        """P 87=3, then the outcome the plan says, for the order's pre-allocation."""
        alloc_id = order.prealloc_id
        if alloc_id is None or order.status == "8":
            return
        now = datetime.now(UTC)
        self._send_prealloc_ack(allocation_codec.build_allocation_ack(
            alloc_id=alloc_id, status="3", transact_time=now))
        if self.preallocation_answer == "reject_p":
            self._send_prealloc_ack(allocation_codec.build_allocation_ack(
                alloc_id=alloc_id, status="1", rej_code="0", transact_time=now,
                text=f"unknown account {order.preallocations[0][0]}"
                if order.preallocations else "unknown account"))
        else:
            self._send_prealloc_ack(allocation_codec.build_allocation_ack(
                alloc_id=alloc_id, status="0", transact_time=now))

    def _send_prealloc_ack(self, msg: fix.Message) -> None:
        self.preallocation_acks.append(allocation_codec.parse_allocation_ack(msg))
        self.engine.send(msg)

    def _on_replace(self, message: fix.Message) -> None:
        orig = codec.require_str(message, T.OrigClOrdID)
        new_id = codec.require_str(message, T.ClOrdID)
        qty = codec.require_decimal(message, T.OrderQty)
        order = self.orders.get(order_root(orig))
        problem = None
        if order is None:
            problem = ("1", "unknown order")
        elif order.status in DONE:
            problem = ("0", "too late to replace")
        elif qty <= order.cum_qty:
            problem = ("99", f"OrderQty {qty} is not above CumQty {order.cum_qty}")
        if problem is not None:
            self.replace_rejects.append(new_id)
            self.engine.send(replace_codec.build_replace_reject(
                order_id=order.broker_order_id if order else "NONE", cl_ord_id=new_id,
                orig_cl_ord_id=orig, ord_status=order.status if order else "8",
                reason=problem[0], text=problem[1]))
            return
        assert order is not None
        alloc_id, lines = replace_codec.read_preallocations(message)
        with self._lock:
            order.qty = qty
            order.price = codec.get_decimal(message, T.Price)
            order.current_cl_ord_id = new_id
            if alloc_id is not None:
                order.prealloc_id, order.preallocations = alloc_id, lines
            self.replaces.append((new_id, alloc_id, lines))
        self._report(order, exec_type="5", last_qty=Decimal(0), last_px=Decimal(0),
                     cl_ord_id=new_id, orig_cl_ord_id=orig)
        self._on_message("replace", new_id)
        if alloc_id is not None:
            self._answer_preallocation(order)
