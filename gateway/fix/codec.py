"""Pure conversions between quickfix messages and the gateway's domain values.

Explicit maps translate FIX chars to domain values: an automatic conversion could hide a
mapping error. Prices and quantities are read as strings straight into Decimal; the
binding would otherwise hand us doubles.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import quickfix as fix

from gateway.fix import tags as T

SIDE_FROM_FIX: Mapping[str, str] = {"1": "buy", "2": "sell", "5": "sell_short"}
SIDE_TO_FIX: Mapping[str, str] = {v: k for k, v in SIDE_FROM_FIX.items()}


TAG_NAMES: Mapping[int, str] = {T.Account: "Account", T.Side: "Side", T.OrderQty: "OrderQty",
                                T.Price: "Price", T.OrdType: "OrdType", T.Symbol: "Symbol",
                                T.AllocAccount: "AllocAccount", T.AllocQty: "AllocQty",
                                T.Text: "Text"}


class DecodeError(ValueError):
    """A required field is missing or malformed; carries the tag for the session Reject."""

    def __init__(self, tag: int, reason: str) -> None:
        super().__init__(f"tag {tag}: {reason}")
        self.tag = tag
        self.reason = reason


def display(value: str) -> str:
    r"""A field value as text that is safe to log, store and send back.

    The binding hands over each byte that is not UTF-8 as a surrogate escape; such a
    value is shown with those bytes as \xNN (the wire log keeps the bytes themselves).
    """
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def get_str(fmap: fix.FieldMap, tag: int) -> str | None:
    return display(fmap.getField(tag)) if fmap.isSetField(tag) else None


def require_str(fmap: fix.FieldMap, tag: int) -> str:
    value = get_str(fmap, tag)
    if value is None or value == "":
        raise DecodeError(tag, "required tag missing")
    return value


MAX_ID_LEN = 64


def require_id(fmap: fix.FieldMap, tag: int, max_len: int = MAX_ID_LEN) -> str:
    """An identifier we store, key on and echo back: exactly the peer's text, or refused.

    A value with bytes that are not UTF-8 or with control characters could not be echoed
    back byte for byte, and one longer than our columns could not be stored.
    """
    if not fmap.isSetField(tag) or fmap.getField(tag) == "":
        raise DecodeError(tag, "required tag missing")
    value: str = fmap.getField(tag)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError(tag, "value is not valid UTF-8") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise DecodeError(tag, "value contains control characters")
    if len(value) > max_len:
        raise DecodeError(tag, f"value is longer than {max_len} characters")
    return value


_FIX_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
MAX_DECIMAL_LEN = 30
# Quantities and prices beyond these bounds are not trades; refusing them at the edge
# keeps every product and sum the ledger makes inside Decimal's 28-digit context.
MAX_DECIMAL_MAGNITUDE = Decimal(10) ** 15
MAX_DECIMAL_PLACES = 10


def get_decimal(fmap: fix.FieldMap, tag: int) -> Decimal | None:
    """A FIX float (digits, an optional point and sign; no exponent) as a Decimal.

    An exponent is not FIX syntax, and refusing it also bounds the work a value can cause
    (Decimal("1e999999999") printed in full would be a billion characters).
    """
    raw = get_str(fmap, tag)
    if raw is None:
        return None
    if len(raw) > MAX_DECIMAL_LEN or not _FIX_DECIMAL.fullmatch(raw):
        raise DecodeError(tag, f"not a FIX decimal: {raw[:40]!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise DecodeError(tag, f"not a decimal: {raw!r}") from exc
    if abs(value) >= MAX_DECIMAL_MAGNITUDE:
        raise DecodeError(tag, f"out of range (|value| >= 10^15): {raw[:40]!r}")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
        raise DecodeError(tag, f"more than {MAX_DECIMAL_PLACES} decimal places: {raw[:40]!r}")
    return value


def require_decimal(fmap: fix.FieldMap, tag: int) -> Decimal:
    value = get_decimal(fmap, tag)
    if value is None:
        raise DecodeError(tag, "required tag missing")
    return value


def msg_type(msg: fix.Message) -> str:
    return str(msg.getHeader().getField(T.MsgType))


def seq_num(msg: fix.Message) -> int:
    return int(msg.getHeader().getField(T.MsgSeqNum))


def is_poss_dup(msg: fix.Message) -> bool:
    header = msg.getHeader()
    return bool(
        (header.isSetField(T.PossDupFlag) and header.getField(T.PossDupFlag) == "Y")
        or (header.isSetField(T.PossResend) and header.getField(T.PossResend) == "Y")
    )


def fmt(value: Decimal) -> str:
    """Plain decimal text without exponent, trailing zeros kept only where they were."""
    text = format(value, "f")
    return text


def utc_timestamp(ts: datetime) -> str:
    return ts.strftime("%Y%m%d-%H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def parse_utc_timestamp(value: str | None) -> datetime | None:
    """A FIX UTCTimestamp (YYYYMMDD-HH:MM:SS[.fff...]) as an aware datetime; None if absent/bad."""
    if not value or len(value) < 17:
        return None
    try:
        return datetime.strptime(value[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def build_session_reject(*, ref_seq_num: int, ref_msg_type: str, reason: str,
                         text: str) -> fix.Message:
    """35=3 naming the refused message: sent by the application when it refuses one itself."""
    msg = new_message("3")
    msg.setField(T.RefSeqNum, str(ref_seq_num))
    if ref_msg_type:
        msg.setField(T.RefMsgType, ref_msg_type)
    msg.setField(T.SessionRejectReason, reason)
    msg.setField(T.Text, text[:1000])
    return msg


def new_message(msg_type_value: str) -> fix.Message:
    msg = fix.Message()
    msg.getHeader().setField(fix.BeginString("FIX.4.4"))
    msg.getHeader().setField(fix.MsgType(msg_type_value))
    return msg


@functools.lru_cache(maxsize=64)
def _field_order(order: tuple[int, ...]) -> fix.IntArray:
    """One quickfix order array per group layout: quickfix copies it into each group, and
    building it costs a call per tag, which dominated the time to build a large J."""
    arr = fix.IntArray(len(order) + 1)
    for i, tag in enumerate(order):
        arr[i] = tag
    arr[len(order)] = 0
    return arr


def group(count_tag: int, first_tag: int, order: Sequence[int]) -> fix.Group:
    return fix.Group(count_tag, first_tag, _field_order(tuple(order)))


# -- inbound -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewOrderFields:
    cl_ord_id: str
    book: str
    symbol: str
    side: str
    order_qty: Decimal
    ord_type: str
    price: Decimal | None
    time_in_force: str | None
    preallocations: tuple[tuple[str, Decimal], ...] = ()
    preallocation_reason: str | None = None
    stop_px: Decimal | None = None
    peg_offset: Decimal | None = None


PREALLOC_ORDER = [T.AllocAccount, T.AllocAcctIDSource, T.AllocSettlCurrency,
                   T.IndividualAllocID, T.NoNestedPartyIDs, T.AllocQty]


def preallocations(msg: fix.Message) -> tuple[tuple[str, Decimal], ...]:
    """PreAllocGrp on a D or G: the OMS's manual split (gateway.order_checks judges it)."""
    out: list[tuple[str, Decimal]] = []
    for i in range(1, int(get_str(msg, T.NoAllocs) or 0) + 1):
        entry = group(T.NoAllocs, T.AllocAccount, PREALLOC_ORDER)
        msg.getGroup(i, entry)
        out.append((require_id(entry, T.AllocAccount), require_decimal(entry, T.AllocQty)))
    return tuple(out)


def parse_new_order_single(msg: fix.Message) -> NewOrderFields:
    """The fields of a block D, decoded; what they must satisfy is gateway.order_checks'."""
    side_raw = require_str(msg, T.Side)
    side = SIDE_FROM_FIX.get(side_raw)
    if side is None:
        raise DecodeError(T.Side, f"unsupported side {side_raw!r}")
    pre = preallocations(msg)
    return NewOrderFields(
        cl_ord_id=require_id(msg, T.ClOrdID),
        book=require_id(msg, T.Account),
        symbol=require_id(msg, T.Symbol, max_len=32),
        side=side,
        order_qty=require_decimal(msg, T.OrderQty),
        ord_type=require_str(msg, T.OrdType),
        price=get_decimal(msg, T.Price),
        time_in_force=get_str(msg, T.TimeInForce),
        preallocations=pre,
        preallocation_reason=get_str(msg, T.Text) if pre else None,
        stop_px=get_decimal(msg, T.StopPx),
        peg_offset=get_decimal(msg, T.PegOffsetValue),
    )


@dataclass(frozen=True)
class ExecutionReportFields:
    broker_order_id: str
    cl_ord_id: str
    exec_id: str
    exec_type: str
    ord_status: str
    last_qty: Decimal
    last_px: Decimal
    cum_qty: Decimal
    avg_px: Decimal
    leaves_qty: Decimal
    trade_date: str | None
    transact_time: str | None
    text: str | None
    exec_ref_id: str | None = None
    exec_trans_type: str | None = None


# FIX 4.2 marked a bust or correction with ExecTransType(20) 1/2; 4.4 with ExecType H/G.
_TRANS_TYPE_AS_EXEC_TYPE = {"1": "H", "2": "G"}


def parse_execution_report(msg: fix.Message) -> ExecutionReportFields:
    trans_type = get_str(msg, T.ExecTransType)
    exec_type = require_str(msg, T.ExecType)
    return ExecutionReportFields(
        broker_order_id=require_id(msg, T.OrderID),
        cl_ord_id=require_id(msg, T.ClOrdID),
        exec_id=require_id(msg, T.ExecID),
        exec_type=_TRANS_TYPE_AS_EXEC_TYPE.get(trans_type or "", exec_type),
        exec_ref_id=get_str(msg, T.ExecRefID),
        exec_trans_type=trans_type,
        ord_status=require_str(msg, T.OrdStatus),
        last_qty=get_decimal(msg, T.LastQty) or Decimal(0),
        last_px=get_decimal(msg, T.LastPx) or Decimal(0),
        cum_qty=require_decimal(msg, T.CumQty),
        avg_px=require_decimal(msg, T.AvgPx),
        leaves_qty=require_decimal(msg, T.LeavesQty),
        trade_date=_iso_date(get_str(msg, T.TradeDate)),
        transact_time=get_str(msg, T.TransactTime),
        text=get_str(msg, T.Text),
    )


def _iso_date(local_mkt_date: str | None) -> str | None:
    if local_mkt_date is None:
        return None
    if len(local_mkt_date) != 8 or not local_mkt_date.isdigit():
        raise DecodeError(T.TradeDate, f"not a LocalMktDate: {local_mkt_date!r}")
    return f"{local_mkt_date[:4]}-{local_mkt_date[4:6]}-{local_mkt_date[6:]}"


def fix_date(iso: str) -> str:
    return iso.replace("-", "")


# -- outbound ------------------------------------------------------------------------------


def build_new_order_single(
    *, cl_ord_id: str, symbol: str, side: str, qty: Decimal, ord_type: str,
    price: Decimal | None, time_in_force: str | None, transact_time: datetime,
    stop_px: Decimal | None = None, peg_offset: Decimal | None = None,
) -> fix.Message:
    msg = new_message("D")
    msg.setField(T.ClOrdID, cl_ord_id)
    msg.setField(T.HandlInst, "1")
    msg.setField(T.Symbol, symbol)
    msg.setField(T.Side, SIDE_TO_FIX[side])
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    msg.setField(T.OrderQty, fmt(qty))
    msg.setField(T.OrdType, ord_type)
    if price is not None:
        msg.setField(T.Price, fmt(price))
    if time_in_force:
        msg.setField(T.TimeInForce, time_in_force)
    if stop_px is not None:
        msg.setField(T.StopPx, fmt(stop_px))
    if peg_offset is not None:
        msg.setField(T.PegOffsetValue, fmt(peg_offset))
    return msg


def build_cancel_request(
    *, cl_ord_id: str, orig_cl_ord_id: str, broker_order_id: str | None, symbol: str,
    side: str, qty: Decimal, transact_time: datetime,
) -> fix.Message:
    msg = new_message("F")
    msg.setField(T.ClOrdID, cl_ord_id)
    msg.setField(T.OrigClOrdID, orig_cl_ord_id)
    if broker_order_id:
        msg.setField(T.OrderID, broker_order_id)
    msg.setField(T.Symbol, symbol)
    msg.setField(T.Side, SIDE_TO_FIX[side])
    msg.setField(T.OrderQty, fmt(qty))
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    return msg


def build_execution_report(
    *, order_id: str, cl_ord_id: str, exec_id: str, exec_type: str, ord_status: str,
    symbol: str, side: str, order_qty: Decimal, last_qty: Decimal, last_px: Decimal,
    cum_qty: Decimal, avg_px: Decimal, leaves_qty: Decimal, book: str | None,
    transact_time: datetime, trade_date: str | None = None, text: str | None = None,
    orig_cl_ord_id: str | None = None, ord_rej_reason: str | None = None,
    side_fix: str | None = None, exec_ref_id: str | None = None,
) -> fix.Message:
    """An ER; `side_fix` passes the peer's raw Side through when it is not one we trade."""
    msg = new_message("8")
    msg.setField(T.OrderID, order_id)
    msg.setField(T.ClOrdID, cl_ord_id)
    if exec_ref_id:
        msg.setField(T.ExecRefID, exec_ref_id)
    if orig_cl_ord_id:
        msg.setField(T.OrigClOrdID, orig_cl_ord_id)
    msg.setField(T.ExecID, exec_id)
    msg.setField(T.ExecType, exec_type)
    msg.setField(T.OrdStatus, ord_status)
    if ord_rej_reason:
        msg.setField(T.OrdRejReason, ord_rej_reason)
    if book:
        msg.setField(T.Account, book)
    msg.setField(T.Symbol, symbol)
    msg.setField(T.Side, side_fix or SIDE_TO_FIX[side])
    msg.setField(T.OrderQty, fmt(order_qty))
    if exec_type in ("F", "G", "H"):
        msg.setField(T.LastQty, fmt(last_qty))
        msg.setField(T.LastPx, fmt(last_px))
    msg.setField(T.LeavesQty, fmt(leaves_qty))
    msg.setField(T.CumQty, fmt(cum_qty))
    msg.setField(T.AvgPx, fmt(avg_px))
    if trade_date:
        msg.setField(T.TradeDate, fix_date(trade_date))
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    if text:
        msg.setField(T.Text, text[:1000])
    return msg


def build_order_cancel_reject(
    *, order_id: str, cl_ord_id: str, orig_cl_ord_id: str, ord_status: str, reason: str,
    text: str,
) -> fix.Message:
    """35=9: the specific reject for an OrderCancelRequest (never a BusinessMessageReject)."""
    msg = new_message("9")
    msg.setField(T.OrderID, order_id)
    msg.setField(T.ClOrdID, cl_ord_id)
    msg.setField(T.OrigClOrdID, orig_cl_ord_id)
    msg.setField(T.OrdStatus, ord_status)
    msg.setField(T.CxlRejResponseTo, "1")
    msg.setField(T.CxlRejReason, reason)
    msg.setField(T.Text, text[:1000])
    return msg


@dataclass(frozen=True)
class CancelRejectFields:
    broker_order_id: str
    cl_ord_id: str
    orig_cl_ord_id: str
    ord_status: str
    reason: str | None
    text: str | None
    response_to: str = "1"
    """CxlRejResponseTo(434): 1 a cancel was refused, 2 a cancel/replace."""


def parse_order_cancel_reject(msg: fix.Message) -> CancelRejectFields:
    return CancelRejectFields(
        broker_order_id=require_str(msg, T.OrderID), cl_ord_id=require_str(msg, T.ClOrdID),
        orig_cl_ord_id=require_str(msg, T.OrigClOrdID), ord_status=require_str(msg, T.OrdStatus),
        reason=get_str(msg, T.CxlRejReason), text=get_str(msg, T.Text),
        response_to=get_str(msg, T.CxlRejResponseTo) or "1")


def build_dont_know_trade(
    *, broker_order_id: str, exec_id: str, side: str | None, symbol: str | None,
    reason: str, text: str,
) -> fix.Message:
    msg = new_message("Q")
    msg.setField(T.OrderID, broker_order_id)
    msg.setField(T.ExecID, exec_id)
    msg.setField(T.DKReason, reason)
    msg.setField(T.Symbol, symbol or "UNKNOWN")
    msg.setField(T.Side, side or "1")
    msg.setField(T.Text, text[:1000])
    return msg


def build_business_reject(
    *, ref_seq_num: int, ref_msg_type: str, reason: str, text: str, ref_id: str | None = None,
) -> fix.Message:
    msg = new_message("j")
    msg.setField(T.RefSeqNum, str(ref_seq_num))
    msg.setField(T.RefMsgType, ref_msg_type)
    if ref_id:
        msg.setField(T.BusinessRejectRefID, ref_id)
    msg.setField(T.BusinessRejectReason, reason)
    msg.setField(T.Text, text[:1000])
    return msg


