"""The orders the dispatcher holds in memory: only those still moving.

An order leaves memory once it is finished for the dispatcher (`finished`): terminal at
the broker, no cancel/replace or acknowledgement pending, and either nothing to allocate
or its J accepted (or cancelled) with no other J of it waiting for a P. What can still
happen to it (an AK, a BH when AKs are late, a bust, an operator's action, the sweep)
works from the database, and whatever needs the order in memory loads it back through
startup recovery's own path (`get`), which clears the release mark. The mark
(orders.released_at) also keeps restarts quick: recovery skips released orders.

Lookups by the OMS's ClOrdID go through an index (cancel and replace used to scan every
order), and the orders changed since the last snapshot are tracked (`dirty`), so
publishing state for HTTP readers costs O(changed orders).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.events import (
    AllocationAckReceived,
    BlockOrderInvalid,
    BlockOrderReceived,
    BrokerReportReceived,
    CancelRejectedByBroker,
    CancelRequested,
    ConfirmationReceived,
    OmsAllocationAckReceived,
    OperatorRequested,
    ReplaceRequested,
    Tick,
)
from gateway.orders import TERMINAL, Order

FINAL_ALLOCS = frozenset({"accepted", "cancelled", "replaced"})


@dataclass(frozen=True)
class OrderFacts:
    """What an AK, a BH or an exception needs of an order that is no longer in memory."""

    order_id: str
    book: str
    broker: str
    trade_date: str
    side: str
    oms_session: str
    oms_cl_ord_id: str

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> OrderFacts:
        return cls(**{k: str(row[k]) for k in ("order_id", "book", "broker", "trade_date",
                                               "side", "oms_session", "oms_cl_ord_id")})


def finished(order: Order) -> bool:
    if order.status not in TERMINAL or order.replaces or order.held:
        return False
    if order.ack_due is not None or order.new_after_cancel is not None:
        return False
    if not order.allocs:
        # Nothing executed (a reject, a cancel before any fill): nothing to allocate. An
        # order done with executions but no J yet is an exception a person must see.
        return not order.done()
    return (order.alloc_status in ("accepted", "cancelled")
            and all(s in FINAL_ALLOCS for s in order.allocs.values()))


class OrderBook:
    def __init__(self, load: Callable[[str], Order | None] | None = None) -> None:
        self._orders: dict[str, Order] = {}
        self._by_cl: dict[tuple[str, str], str] = {}
        self._load = load
        self.dirty: set[str] = set()
        """Order ids whose summary changed (or that left memory) since the last publish."""
        self.loaded: set[str] = set()
        """Order ids loaded back since the dispatcher last looked (it releases them again)."""
        self.released = 0

    # -- a mapping of the orders in memory ------------------------------------------------

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def __len__(self) -> int:
        return len(self._orders)

    def __iter__(self) -> Iterator[str]:
        return iter(self._orders)

    def __getitem__(self, order_id: str) -> Order:
        return self._orders[order_id]

    def __setitem__(self, order_id: str, order: Order) -> None:
        self._orders[order_id] = order
        self.index(order)
        self.dirty.add(order_id)

    def __delitem__(self, order_id: str) -> None:
        order = self._orders.pop(order_id)
        self._unindex(order)
        self.dirty.add(order_id)

    def values(self) -> Iterator[Order]:
        return iter(list(self._orders.values()))

    def in_memory(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    def get(self, order_id: str, default: Any = None) -> Order | Any:
        """The order, loaded back from the database if it was released."""
        order = self._orders.get(order_id)
        if order is None and self._load is not None and order_id:
            order = self._load(order_id)
        return default if order is None else order

    # -- the OMS's ClOrdIDs ---------------------------------------------------------------

    def index(self, order: Order) -> None:
        """(session, current ClOrdID) -> order; call again after a replace changes it.
        A split block's children share its ClOrdID: gateway/split_orders.py finds them."""
        if order.parent_id is not None:
            return
        key = (order.oms_session, order.oms_cl_ord_id)
        held = self._orders.get(self._by_cl.get(key, ""))
        if held is None or held is order or held.trade_date <= order.trade_date:
            self._by_cl[key] = order.order_id
        if order.oms_orig_cl_ord_id is not None:
            old = (order.oms_session, order.oms_orig_cl_ord_id)
            if self._by_cl.get(old) == order.order_id:
                del self._by_cl[old]

    def _unindex(self, order: Order) -> None:
        if order.parent_id is not None:
            return
        key = (order.oms_session, order.oms_cl_ord_id)
        if self._by_cl.get(key) == order.order_id:
            del self._by_cl[key]

    def by_cl_ord_id(self, session: str, cl_ord_id: str,
                     find: Callable[[str, str], str | None] | None = None) -> Order | None:
        """The newest order under this ClOrdID: in memory, else (through `find`, a database
        lookup of the OMS's first ClOrdID) loaded back."""
        order_id = self._by_cl.get((session, cl_ord_id))
        if order_id is not None:
            return self._orders.get(order_id)
        found = find(session, cl_ord_id) if find is not None else None
        return self.get(found) if found else None

    # -- leaving memory -------------------------------------------------------------------

    def release(self, order: Order, mark: Callable[[str, datetime | None], None],
                now: datetime) -> bool:
        """Let a finished order go; False (and kept) when it is not finished."""
        if order.order_id not in self._orders or not finished(order):
            return False
        mark(order.order_id, now)
        del self[order.order_id]
        self.released += 1
        return True


def order_of_alloc(alloc_id: str) -> str:
    """Our AllocIDs are <order>-J<n> (a J) or <order>-PA<n> (a pre-allocation)."""
    for sep in ("-J", "-PA"):
        head, found, _ = alloc_id.rpartition(sep)
        if found:
            return head
    return alloc_id


def touched_orders(d: Any, event: object) -> set[str] | None:
    """The orders an event may change, for the snapshot and the release check; None when
    it may change any (session, sweep and reference-data events: rare)."""
    if isinstance(event, Tick | ConfirmationReceived | BlockOrderInvalid):
        return set()  # a tick touches orders itself (d.orders.dirty); an AK changes none
    if isinstance(event, BlockOrderReceived | BrokerReportReceived | CancelRejectedByBroker):
        return {event.order_id} if event.order_id else set()
    if isinstance(event, AllocationAckReceived | OmsAllocationAckReceived | OperatorRequested):
        return {order_of_alloc(event.alloc_id)}
    if isinstance(event, CancelRequested | ReplaceRequested):
        orig = event.orig_cl_ord_id if isinstance(event, CancelRequested) \
            else event.fields.orig_cl_ord_id
        order = d.orders.by_cl_ord_id(event.session, orig)
        return {order.order_id} if order is not None else set()
    return None
