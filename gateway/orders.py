"""Block-order state owned by the dispatcher, and its allowed transitions.

Order status follows the broker's OrdStatus; the allocation status follows our J and the
broker's P. Any transition not in the tables raises, so a bug shows up as an error rather
than as a silently wrong state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.ledger import FillLedger


class InvalidTransition(RuntimeError):
    def __init__(self, what: str, old: str, new: str) -> None:
        super().__init__(f"invalid {what} transition {old} -> {new}")


ORD_STATUS: dict[str, str] = {
    "0": "new", "1": "partially_filled", "2": "filled", "3": "done_for_day", "4": "canceled",
    "6": "pending_cancel", "8": "rejected", "A": "pending_new", "C": "expired",
    "E": "pending_replace", "5": "replaced", "9": "suspended", "B": "calculated", "7": "stopped",
}

_WORKING = {"received", "pending_new", "new", "partially_filled", "pending_cancel",
            "pending_replace", "replaced", "suspended", "calculated", "stopped"}
TERMINAL = {"filled", "done_for_day", "canceled", "expired", "rejected"}

# Broker-driven order states may move between any working states and into a terminal one;
# a terminal order accepts only a later terminal update (e.g. DFD after fills then filled).
ORDER_TRANSITIONS: set[tuple[str, str]] = (
    {(a, b) for a in _WORKING for b in _WORKING | TERMINAL}
    | {("done_for_day", "filled"), ("done_for_day", "canceled"), ("filled", "filled"),
       ("done_for_day", "done_for_day"), ("canceled", "canceled"), ("expired", "expired")}
)

ALLOC_TRANSITIONS: dict[tuple[str, str], str] = {
    ("pending_send", "sent"): "sent",
    ("sent", "received"): "received",
    ("sent", "accepted"): "accepted",
    ("sent", "block_rejected"): "block_rejected",
    ("sent", "account_rejected"): "account_rejected",
    ("received", "accepted"): "accepted",
    ("received", "block_rejected"): "block_rejected",
    ("received", "account_rejected"): "account_rejected",
    ("received", "received"): "received",
    # The peer's session Reject (35=3) of the J itself: the J never reached its workflow.
    ("pending_send", "session_rejected"): "session_rejected",
    ("sent", "session_rejected"): "session_rejected",
    ("received", "session_rejected"): "session_rejected",
}

ALLOC_STATUS_FROM_P: dict[str, str] = {
    "0": "accepted", "1": "block_rejected", "2": "account_rejected", "3": "received",
    "4": "received", "5": "block_rejected",
}


def alloc_transition(old: str, new: str) -> str:
    try:
        return ALLOC_TRANSITIONS[(old, new)]
    except KeyError:
        raise InvalidTransition("allocation", old, new) from None


def make_order_id(session: str, cl_ord_id: str, trade_date: str) -> str:
    """A pure function of the OMS's identity for the order, so a re-driven D maps to the same id."""
    digest = hashlib.sha256(f"{session}|{cl_ord_id}|{trade_date}".encode()).hexdigest()[:10]
    return f"FA{trade_date.replace('-', '')}{digest.upper()}"


@dataclass
class Order:
    order_id: str
    oms_session: str
    oms_cl_ord_id: str
    book: str
    symbol: str
    side: str
    order_qty: Decimal
    ord_type: str
    price: Decimal | None
    time_in_force: str | None
    broker: str
    trade_date: str
    status: str = "received"
    broker_order_id: str | None = None
    leaves_qty: Decimal = Decimal(0)
    ledger: FillLedger = field(default_factory=FillLedger)
    last_report_id: int | None = None
    """The newest broker report folded into `ledger` (stored with each decision)."""
    """Fills applied so far; `ledger.last_fill_at` is when the latest one arrived."""
    alloc_id: str | None = None
    alloc_status: str | None = None
    cancel_count: int = 0
    oms_cancel_cl_ord_id: str | None = None
    preallocations: tuple[tuple[str, Decimal], ...] = ()
    preallocation_reason: str | None = None
    excluded: list[dict[str, Any]] = field(default_factory=list)
    stop_px: Decimal | None = None
    peg_offset: Decimal | None = None
    allocs: dict[str, str] = field(default_factory=dict)
    """Every J of this order (AllocID -> status); `alloc_id` is the one in force."""
    new_after_cancel: str | None = None
    """The reason for a J New to send once the pending Cancel is accepted (cancel_new)."""
    p_overdue: set[str] = field(default_factory=set)
    """AllocIDs already reported as waiting too long for their P."""
    held: bool = False
    """Accepted but not yet handed to the broker session, which is not logged on."""
    ack_due: datetime | None = None
    """When the broker must have acknowledged the order by; None once it has."""
    ack_overdue: bool = False
    replace_count: int = 0
    child_cl_ord_id: str | None = None
    """Our ClOrdID of the order at the broker since its last accepted replace (None: the
    order id itself, as on the D)."""
    replaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Cancel/replace requests sent to the broker and not yet answered, by child ClOrdID."""
    oms_orig_cl_ord_id: str | None = None
    """The OMS's ClOrdID before its latest accepted replace (OrigClOrdID on the relay)."""
    prealloc_id: str | None = None
    """AllocID of the pre-allocation the broker holds (send_preallocations)."""
    prealloc_status: str | None = None
    parent_id: str | None = None
    """The block this order is one broker's part of (gateway/split_orders.py); its
    `oms_cl_ord_id` is then the block's, so what the OMS hears names its own order."""

    def move_to(self, new: str) -> None:
        if new == self.status:
            return
        if (self.status, new) not in ORDER_TRANSITIONS:
            raise InvalidTransition("order", self.status, new)
        self.status = new

    def done(self) -> bool:
        """Done for allocation: filled, DFD, or canceled/expired with something executed."""
        if self.status in ("filled", "done_for_day"):
            return True
        return self.status in ("canceled", "expired") and self.ledger.cum_qty > 0

    def summary(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id, "cl_ord_id": self.oms_cl_ord_id, "book": self.book,
            "symbol": self.symbol, "side": self.side, "order_qty": str(self.order_qty),
            "status": self.status, "broker": self.broker,
            "cum_qty": str(self.ledger.cum_qty), "avg_px": str(self.ledger.avg_px),
            "leaves_qty": str(self.leaves_qty), "alloc_id": self.alloc_id,
            "alloc_status": self.alloc_status, "excluded_accounts": self.excluded,
            "queued_for_broker": self.held,
            "broker_ack_due": self.ack_due.isoformat() if self.ack_due else None,
            "broker_ack_overdue": self.ack_overdue,
            "replace_pending": bool(self.replaces), "prealloc_id": self.prealloc_id,
            "prealloc_status": self.prealloc_status,
        }
