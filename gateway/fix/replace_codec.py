"""Cancel/replace (35=G) and pre-allocations (PreAllocGrp) on order messages.

The OMS's G to us is decoded here; our G to the broker, its OrderCancelReject answer
(CxlRejResponseTo=2), and the pre-allocation a broker books from (AllocID,
PreallocMethod=0 pro rata, NoAllocs on the D or the G: FIX_ALLOCATION.md §1.3) are built
here. A G whose allocations are unchanged carries no NoAllocs; one that changes them
carries the complete new set under a new AllocID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import quickfix as fix

from gateway.fix import tags as T
from gateway.fix.codec import (
    PREALLOC_ORDER,
    SIDE_FROM_FIX,
    SIDE_TO_FIX,
    DecodeError,
    fmt,
    get_decimal,
    get_str,
    group,
    new_message,
    preallocations,
    require_decimal,
    require_id,
    require_str,
    utc_timestamp,
)

PRO_RATA = "0"
"""PreallocMethod(591) 0: a partial fill is split over the pre-allocations pro rata."""


@dataclass(frozen=True)
class ReplaceFields:
    """An OrderCancelReplaceRequest from the OMS, decoded (judged by gateway.replaces)."""

    cl_ord_id: str
    orig_cl_ord_id: str
    book: str | None
    symbol: str
    side: str
    order_qty: Decimal
    ord_type: str
    price: Decimal | None
    time_in_force: str | None
    preallocations: tuple[tuple[str, Decimal], ...] | None
    """None: NoAllocs absent, the allocations are unchanged."""
    text: str | None


def _allocations(msg: fix.Message) -> tuple[tuple[str, Decimal], ...] | None:
    """The PreAllocGrp, or None when NoAllocs is absent (allocations unchanged)."""
    return preallocations(msg) if msg.isSetField(T.NoAllocs) else None


def parse_cancel_replace(msg: fix.Message) -> ReplaceFields:
    side_raw = require_str(msg, T.Side)
    side = SIDE_FROM_FIX.get(side_raw)
    if side is None:
        raise DecodeError(T.Side, f"unsupported side {side_raw!r}")
    return ReplaceFields(
        cl_ord_id=require_id(msg, T.ClOrdID), orig_cl_ord_id=require_id(msg, T.OrigClOrdID),
        book=get_str(msg, T.Account), symbol=require_id(msg, T.Symbol, max_len=32),
        side=side, order_qty=require_decimal(msg, T.OrderQty),
        ord_type=require_str(msg, T.OrdType), price=get_decimal(msg, T.Price),
        time_in_force=get_str(msg, T.TimeInForce), preallocations=_allocations(msg),
        text=get_str(msg, T.Text))


def add_preallocations(msg: fix.Message, alloc_id: str,
                       lines: Sequence[tuple[str, Decimal]]) -> None:
    """AllocID, PreallocMethod=0 and one NoAllocs entry per account (IndividualAllocID
    = AllocID-n, so the broker's P and AKs can name the line)."""
    msg.setField(T.AllocID, alloc_id)
    msg.setField(T.PreallocMethod, PRO_RATA)
    entry = group(T.NoAllocs, T.AllocAccount, PREALLOC_ORDER)
    for n, (account, qty) in enumerate(lines, start=1):
        entry.clear()
        entry.setField(T.AllocAccount, account)
        entry.setField(T.AllocAcctIDSource, "99")
        entry.setField(T.IndividualAllocID, f"{alloc_id}-{n}")
        entry.setField(T.AllocQty, fmt(qty))
        msg.addGroup(entry)


def read_preallocations(msg: fix.Message) -> tuple[str | None, tuple[tuple[str, Decimal], ...]]:
    """(AllocID, lines) of a D or G's PreAllocGrp (the broker simulator reads it)."""
    return get_str(msg, T.AllocID), _allocations(msg) or ()


def build_cancel_replace(
    *, cl_ord_id: str, orig_cl_ord_id: str, broker_order_id: str | None, symbol: str,
    side: str, qty: Decimal, ord_type: str, price: Decimal | None,
    time_in_force: str | None, transact_time: datetime, stop_px: Decimal | None = None,
    book: str | None = None, text: str | None = None,
) -> fix.Message:
    msg = new_message("G")
    if broker_order_id:
        msg.setField(T.OrderID, broker_order_id)
    msg.setField(T.OrigClOrdID, orig_cl_ord_id)
    msg.setField(T.ClOrdID, cl_ord_id)
    if book:
        msg.setField(T.Account, book)
    msg.setField(T.HandlInst, "1")
    msg.setField(T.Symbol, symbol)
    msg.setField(T.Side, SIDE_TO_FIX[side])
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    msg.setField(T.OrderQty, fmt(qty))
    msg.setField(T.OrdType, ord_type)
    if price is not None:
        msg.setField(T.Price, fmt(price))
    if stop_px is not None:
        msg.setField(T.StopPx, fmt(stop_px))
    if time_in_force:
        msg.setField(T.TimeInForce, time_in_force)
    if text:
        msg.setField(T.Text, text[:1000])
    return msg


def build_replace_reject(*, order_id: str, cl_ord_id: str, orig_cl_ord_id: str,
                         ord_status: str, reason: str, text: str) -> fix.Message:
    """35=9 answering a G (CxlRejResponseTo 2): the order stands as it was."""
    msg = new_message("9")
    msg.setField(T.OrderID, order_id)
    msg.setField(T.ClOrdID, cl_ord_id)
    msg.setField(T.OrigClOrdID, orig_cl_ord_id)
    msg.setField(T.OrdStatus, ord_status)
    msg.setField(T.CxlRejResponseTo, "2")
    msg.setField(T.CxlRejReason, reason)
    msg.setField(T.Text, text[:1000])
    return msg
