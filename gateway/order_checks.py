"""What a block order must satisfy before it is routed: one set of checks, two callers.

The dispatcher runs these on every D from the OMS, and `fixalloc allocate` runs the same
function on its ORDER.json, so a dry run refuses exactly what the daemon would refuse.
Each refusal names the FIX field and carries the OrdRejReason(103) for the ER 39=8.
Pure: no I/O, no quickfix; the book settings and reference data are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.config import ORD_TYPES, TIME_IN_FORCE, BookSettings

ORD_TYPE_NAMES = {v: k for k, v in ORD_TYPES.items()}
TIF_NAMES = {v: k for k, v in TIME_IN_FORCE.items()}

# OrdRejReason(103) values used here (FIX 4.4).
UNKNOWN_SYMBOL = "1"
EXCEEDS_LIMIT = "3"
UNKNOWN_ORDER = "5"
DUPLICATE = "6"
UNSUPPORTED_CHARACTERISTIC = "11"
INCORRECT_QUANTITY = "13"
OTHER = "99"


@dataclass(frozen=True)
class Rejection:
    reason_code: str  # OrdRejReason(103)
    text: str


@dataclass(frozen=True)
class BlockOrder:
    """The fields of a block order that the checks look at, already decoded."""

    book: str
    symbol: str
    side: str
    order_qty: Decimal
    ord_type: str  # the FIX char, e.g. "2"
    price: Decimal | None = None
    stop_px: Decimal | None = None
    peg_offset: Decimal | None = None
    time_in_force: str | None = None  # the FIX char; None means day
    preallocations: tuple[tuple[str, Decimal], ...] = ()
    preallocation_reason: str | None = None


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), ",f") if value == value.to_integral_value() \
        else format(value, ",f")


def check_block_order(order: BlockOrder, book: BookSettings | None,
                      securities: Mapping[str, Any], accounts: Sequence[Any],
                      known_books: Iterable[str] = ()) -> Rejection | None:
    """The first problem that keeps this order from being routed, or None."""
    if book is None:
        known = ", ".join(sorted(known_books)) or "none"
        return Rejection(OTHER, f"unknown book {order.book!r} in Account(1); known books: {known}")
    security = securities.get(order.symbol)
    if security is None:
        return Rejection(UNKNOWN_SYMBOL,
                         f"unknown symbol {order.symbol!r}: not in the security master")
    if not accounts:
        return Rejection(OTHER, f"book {order.book!r} has no accounts")
    return (_type_and_tif(order, book) or _prices(order) or _quantity(order, book, security)
            or _preallocations(order, accounts))


def _type_and_tif(order: BlockOrder, book: BookSettings) -> Rejection | None:
    name = ORD_TYPE_NAMES.get(order.ord_type)
    if name is None or name not in book.ord_types:
        allowed = ", ".join(f"{ORD_TYPES[t]} ({t})" for t in book.ord_types)
        shown = f"{order.ord_type} ({name})" if name else repr(order.ord_type)
        return Rejection(UNSUPPORTED_CHARACTERISTIC,
                         f"OrdType(40) {shown} is not accepted for book {book.name}; "
                         f"accepted: {allowed}")
    tif = order.time_in_force or "0"
    tif_name = TIF_NAMES.get(tif)
    if tif_name is None or tif_name not in book.time_in_force:
        allowed = ", ".join(f"{TIME_IN_FORCE[t]} ({t})" for t in book.time_in_force)
        shown = f"{tif} ({tif_name})" if tif_name else repr(tif)
        return Rejection(UNSUPPORTED_CHARACTERISTIC,
                         f"TimeInForce(59) {shown} is not accepted for book {book.name}; "
                         f"accepted: {allowed}")
    return None


def _prices(order: BlockOrder) -> Rejection | None:
    """Each OrdType's required companions, and no price that cannot be traded."""
    kind = ORD_TYPE_NAMES[order.ord_type]
    needs_price = kind in ("limit", "stop_limit")
    needs_stop = kind in ("stop", "stop_limit")
    if order.price is not None and order.price <= 0:
        return Rejection(OTHER, f"Price(44) must be positive, was {order.price}")
    if order.stop_px is not None and order.stop_px <= 0:
        return Rejection(OTHER, f"StopPx(99) must be positive, was {order.stop_px}")
    if needs_price and order.price is None:
        return Rejection(OTHER, f"Price(44) is required for a {kind.replace('_', ' ')} order")
    if not needs_price and order.price is not None and kind != "pegged":
        return Rejection(OTHER, f"Price(44) is not allowed on a {kind} order")
    if needs_stop and order.stop_px is None:
        return Rejection(OTHER, f"StopPx(99) is required for a {kind.replace('_', ' ')} order")
    if kind == "pegged" and order.peg_offset is None:
        return Rejection(OTHER, "PegOffsetValue(211) is required for a pegged order")
    return None


def _quantity(order: BlockOrder, book: BookSettings, security: Any) -> Rejection | None:
    qty = order.order_qty
    if qty <= 0:
        return Rejection(INCORRECT_QUANTITY, f"OrderQty(38) must be positive, was {qty}")
    if qty != qty.to_integral_value():
        return Rejection(INCORRECT_QUANTITY,
                         f"OrderQty(38) {qty} is not a whole number of shares")
    if qty > book.max_order_qty:
        return Rejection(EXCEEDS_LIMIT, f"OrderQty(38) {_fmt(qty)} exceeds the maximum of "
                                        f"{_fmt(book.max_order_qty)} for book {book.name}")
    px = order.price if order.price is not None else order.stop_px
    source = "the limit price" if order.price is not None else "the stop price"
    if px is None:
        px = getattr(security, "price", None)
        source = "the reference price"
    if px is None:
        return Rejection(OTHER, f"no reference price for {order.symbol} to check the "
                                f"notional of a {ORD_TYPE_NAMES[order.ord_type]} order")
    notional = qty * px
    if notional > book.max_notional:
        return Rejection(EXCEEDS_LIMIT,
                         f"OrderQty(38) {_fmt(qty)} at {source} {px} is a notional of "
                         f"{_fmt(notional)}, above the maximum of {_fmt(book.max_notional)} "
                         f"for book {book.name}")
    return None


def _preallocations(order: BlockOrder, accounts: Sequence[Any]) -> Rejection | None:
    """An OMS's manual split must name the book's accounts and cover OrderQty exactly."""
    if not order.preallocations:
        return None
    seen: set[str] = set()
    for account, qty in order.preallocations:
        if qty <= 0 or qty != qty.to_integral_value():
            return Rejection(OTHER, f"AllocQty(80) for {account} must be a positive whole "
                                    f"number of shares, was {qty}")
        if account in seen:
            return Rejection(OTHER, f"AllocAccount(79) {account} is pre-allocated twice")
        seen.add(account)
    total = sum((q for _, q in order.preallocations), Decimal(0))
    if total != order.order_qty:
        return Rejection(OTHER, f"AllocQty(80): pre-allocations sum to {total}, "
                                f"OrderQty is {order.order_qty}")
    if not (order.preallocation_reason or "").strip():
        return Rejection(OTHER, "Text(58): required: the reason for the manual pre-allocation")
    in_book = {a.account_id for a in accounts}
    strangers = sorted(a for a, _ in order.preallocations if a not in in_book)
    if strangers:
        return Rejection(OTHER, f"pre-allocation names accounts not in book {order.book}: "
                                f"{', '.join(strangers)}")
    return None
