"""Pure conversions between quickfix messages and the gateway's domain values.

Explicit maps translate FIX chars to domain values: an automatic conversion could hide a
mapping error. Prices and quantities are read as strings straight into Decimal; the
binding would otherwise hand us doubles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

import quickfix as fix

from gateway.fix import tags as T

SIDE_FROM_FIX: Mapping[str, str] = {"1": "buy", "2": "sell", "5": "sell_short"}
SIDE_TO_FIX: Mapping[str, str] = {v: k for k, v in SIDE_FROM_FIX.items()}
ALLOC_TYPE_TO_FIX: Mapping[str, str] = {"calculated": "1", "preliminary": "2"}


class DecodeError(ValueError):
    """A required field is missing or malformed; carries the tag for the session Reject."""

    def __init__(self, tag: int, reason: str) -> None:
        super().__init__(f"tag {tag}: {reason}")
        self.tag = tag
        self.reason = reason


def get_str(fmap: fix.FieldMap, tag: int) -> str | None:
    return fmap.getField(tag) if fmap.isSetField(tag) else None


def require_str(fmap: fix.FieldMap, tag: int) -> str:
    value = get_str(fmap, tag)
    if value is None or value == "":
        raise DecodeError(tag, "required tag missing")
    return value


def get_decimal(fmap: fix.FieldMap, tag: int) -> Decimal | None:
    raw = get_str(fmap, tag)
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise DecodeError(tag, f"not a decimal: {raw!r}") from exc
    if not value.is_finite():
        raise DecodeError(tag, f"not a finite decimal: {raw!r}")
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


def new_message(msg_type_value: str) -> fix.Message:
    msg = fix.Message()
    msg.getHeader().setField(fix.BeginString("FIX.4.4"))
    msg.getHeader().setField(fix.MsgType(msg_type_value))
    return msg


def _group(count_tag: int, first_tag: int, order: Sequence[int]) -> fix.Group:
    arr = fix.IntArray(len(order) + 1)
    for i, tag in enumerate(order):
        arr[i] = tag
    arr[len(order)] = 0
    return fix.Group(count_tag, first_tag, arr)


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


def parse_new_order_single(msg: fix.Message) -> NewOrderFields:
    side_raw = require_str(msg, T.Side)
    side = SIDE_FROM_FIX.get(side_raw)
    if side is None:
        raise DecodeError(T.Side, f"unsupported side {side_raw!r}")
    qty = require_decimal(msg, T.OrderQty)
    if qty <= 0:
        raise DecodeError(T.OrderQty, "must be positive")
    ord_type = require_str(msg, T.OrdType)
    price = get_decimal(msg, T.Price)
    if ord_type == "2" and price is None:
        raise DecodeError(T.Price, "required for a limit order")
    return NewOrderFields(
        cl_ord_id=require_str(msg, T.ClOrdID),
        book=require_str(msg, T.Account),
        symbol=require_str(msg, T.Symbol),
        side=side,
        order_qty=qty,
        ord_type=ord_type,
        price=price,
        time_in_force=get_str(msg, T.TimeInForce),
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


def parse_execution_report(msg: fix.Message) -> ExecutionReportFields:
    return ExecutionReportFields(
        broker_order_id=require_str(msg, T.OrderID),
        cl_ord_id=require_str(msg, T.ClOrdID),
        exec_id=require_str(msg, T.ExecID),
        exec_type=require_str(msg, T.ExecType),
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


@dataclass(frozen=True)
class AllocAckFields:
    alloc_id: str
    alloc_status: str
    rej_code: str | None
    text: str | None
    rejected_lines: tuple[tuple[str, str], ...]


def parse_allocation_ack(msg: fix.Message) -> AllocAckFields:
    rejected: list[tuple[str, str]] = []
    count = int(get_str(msg, T.NoAllocs) or 0)
    for i in range(1, count + 1):
        grp = _group(T.NoAllocs, T.AllocAccount, [T.AllocAccount, T.AllocPrice,
                                                  T.IndividualAllocID, T.IndividualAllocRejCode,
                                                  T.AllocText])
        msg.getGroup(i, grp)
        rejected.append((get_str(grp, T.IndividualAllocID) or get_str(grp, T.AllocAccount) or "",
                         get_str(grp, T.IndividualAllocRejCode) or ""))
    return AllocAckFields(
        alloc_id=require_str(msg, T.AllocID),
        alloc_status=require_str(msg, T.AllocStatus),
        rej_code=get_str(msg, T.AllocRejCode),
        text=get_str(msg, T.Text),
        rejected_lines=tuple(rejected),
    )


# -- outbound ------------------------------------------------------------------------------


def build_new_order_single(
    *, cl_ord_id: str, symbol: str, side: str, qty: Decimal, ord_type: str,
    price: Decimal | None, time_in_force: str | None, transact_time: datetime,
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
) -> fix.Message:
    msg = new_message("8")
    msg.setField(T.OrderID, order_id)
    msg.setField(T.ClOrdID, cl_ord_id)
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
    msg.setField(T.Side, SIDE_TO_FIX[side])
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


@dataclass(frozen=True)
class JLine:
    individual_alloc_id: str
    account_id: str
    qty: Decimal
    avg_px: Decimal
    custodian: str | None
    prime_broker: str | None
    strategy: str | None
    vehicle: str | None


@dataclass(frozen=True)
class JBlock:
    alloc_id: str
    alloc_trans_type: str
    alloc_type: str
    cl_ord_id: str
    broker_order_id: str | None
    order_qty: Decimal
    side: str
    symbol: str
    quantity: Decimal
    avg_px: Decimal
    trade_date: str
    settl_date: str
    transact_time: datetime
    secondary_alloc_id: str | None = None
    ref_alloc_id: str | None = None


_ALLOC_ORDER = [
    T.AllocAccount, T.AllocAcctIDSource, T.MatchStatus, T.AllocPrice, T.AllocQty,
    T.IndividualAllocID, T.ProcessCode, T.NoNestedPartyIDs, T.NotifyBrokerOfCredit,
    T.AllocHandlInst, T.AllocText, T.EncodedAllocTextLen, T.EncodedAllocText, T.Commission,
    T.CommType, T.CommCurrency, T.FundRenewWaiv, T.AllocAvgPx, T.AllocNetMoney,
    T.SettlCurrAmt, T.AllocSettlCurrAmt, T.SettlCurrency, T.AllocSettlCurrency,
    T.SettlCurrFxRate, T.SettlCurrFxRateCalc, T.AllocAccruedInterestAmt,
    T.AllocInterestAtMaturity, T.NoMiscFees, T.NoClearingInstructions, T.AllocSettlInstType,
    T.SettlDeliveryType, T.StandInstDbType, T.StandInstDbName, T.StandInstDbID,
    T.AllocStrategy, T.AllocVehicle,
]
_NESTED_ORDER = [T.NestedPartyID, T.NestedPartyIDSource, T.NestedPartyRole, T.NoNestedPartySubIDs]
_ORDERS_ORDER = [T.ClOrdID, T.OrderID, T.SecondaryOrderID, T.SecondaryClOrdID, T.ListID,
                 T.NoNested2PartyIDs, T.OrderQty, T.OrderAvgPx, T.OrderBookingQty]


def build_allocation_instruction(
    block: JBlock, lines: Sequence[JLine], *, send_udfs: bool = True
) -> fix.Message:
    """Build a J: NoOrders for the block order, one NoAllocs entry per account line."""
    if not lines and block.alloc_trans_type != "2":
        # FIX44.xml marks NoAllocs optional on J; the spec does not, so we enforce it here.
        raise ValueError("an AllocationInstruction New/Replace needs at least one NoAllocs line")
    total = sum((ln.qty for ln in lines), Decimal(0))
    if block.alloc_trans_type != "2" and total != block.quantity:
        raise ValueError(f"sum of AllocQty {total} differs from Quantity {block.quantity}")
    msg = new_message("J")
    msg.setField(T.AllocID, block.alloc_id)
    msg.setField(T.AllocTransType, block.alloc_trans_type)
    msg.setField(T.AllocType, block.alloc_type)
    if block.secondary_alloc_id:
        msg.setField(T.SecondaryAllocID, block.secondary_alloc_id)
    if block.ref_alloc_id:
        msg.setField(T.RefAllocID, block.ref_alloc_id)
        msg.setField(T.AllocCancReplaceReason, "2")
    msg.setField(T.AllocNoOrdersType, "1")
    order = _group(T.NoOrders, T.ClOrdID, _ORDERS_ORDER)
    order.setField(T.ClOrdID, block.cl_ord_id)
    if block.broker_order_id:
        order.setField(T.OrderID, block.broker_order_id)
    order.setField(T.OrderQty, fmt(block.order_qty))
    order.setField(T.OrderAvgPx, fmt(block.avg_px))
    order.setField(T.OrderBookingQty, fmt(block.quantity))
    msg.addGroup(order)
    msg.setField(T.Side, SIDE_TO_FIX[block.side])
    msg.setField(T.Symbol, block.symbol)
    msg.setField(T.Quantity, fmt(block.quantity))
    msg.setField(T.AvgPx, fmt(block.avg_px))
    msg.setField(T.TradeDate, fix_date(block.trade_date))
    msg.setField(T.TransactTime, utc_timestamp(block.transact_time))
    msg.setField(T.SettlDate, fix_date(block.settl_date))
    gross = sum((ln.qty * ln.avg_px for ln in lines), Decimal(0))
    msg.setField(T.GrossTradeAmt, fmt(gross.quantize(Decimal("0.01"))))
    for ln in lines:
        grp = _group(T.NoAllocs, T.AllocAccount, _ALLOC_ORDER)
        grp.setField(T.AllocAccount, ln.account_id)
        grp.setField(T.AllocAcctIDSource, "99")
        grp.setField(T.AllocQty, fmt(ln.qty))
        grp.setField(T.IndividualAllocID, ln.individual_alloc_id)
        for party_id, source, role in (
            (ln.custodian, "B", "28"),  # custodian, by BIC
            (ln.prime_broker, "D", "4"),  # prime broker as clearing firm: FIX 4.4 has no PB role
        ):
            if party_id:
                nested = _group(T.NoNestedPartyIDs, T.NestedPartyID, _NESTED_ORDER)
                nested.setField(T.NestedPartyID, party_id)
                nested.setField(T.NestedPartyIDSource, source)
                nested.setField(T.NestedPartyRole, role)
                grp.addGroup(nested)
        grp.setField(T.AllocAvgPx, fmt(ln.avg_px))
        grp.setField(T.AllocNetMoney, fmt((ln.qty * ln.avg_px).quantize(Decimal("0.01"))))
        grp.setField(T.AllocSettlInstType, "0")
        if send_udfs:
            if ln.strategy:
                grp.setField(T.AllocStrategy, ln.strategy)
            if ln.vehicle:
                grp.setField(T.AllocVehicle, ln.vehicle)
        elif ln.strategy or ln.vehicle:
            grp.setField(T.AllocText, f"STRAT={ln.strategy or ''};VEH={ln.vehicle or ''}")
        msg.addGroup(grp)
    if block.alloc_type == "1":
        net = sum(((ln.qty * ln.avg_px).quantize(Decimal("0.01")) for ln in lines), Decimal(0))
        msg.setField(T.NetMoney, fmt(net))
    return msg


def build_allocation_ack(
    *, alloc_id: str, status: str, transact_time: datetime, rej_code: str | None = None,
    text: str | None = None,
) -> fix.Message:
    msg = new_message("P")
    msg.setField(T.AllocID, alloc_id)
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    msg.setField(T.AllocStatus, status)
    if rej_code is not None:
        msg.setField(T.AllocRejCode, rej_code)
    if text:
        msg.setField(T.Text, text[:1000])
    return msg


@dataclass(frozen=True)
class JReceived:
    """What a receiver (our simulators, tests) reads back out of a J."""

    alloc_id: str
    alloc_trans_type: str
    alloc_type: str
    quantity: Decimal
    avg_px: Decimal
    symbol: str
    side: str
    trade_date: str
    settl_date: str | None
    cl_ord_ids: tuple[str, ...]
    lines: tuple[Mapping[str, object], ...]


def parse_allocation_instruction(msg: fix.Message) -> JReceived:
    lines: list[Mapping[str, object]] = []
    count = int(get_str(msg, T.NoAllocs) or 0)
    for i in range(1, count + 1):
        grp = _group(T.NoAllocs, T.AllocAccount, _ALLOC_ORDER)
        msg.getGroup(i, grp)
        parties: list[tuple[str, str, str]] = []
        n_nested = int(get_str(grp, T.NoNestedPartyIDs) or 0)
        for j in range(1, n_nested + 1):
            nested = _group(T.NoNestedPartyIDs, T.NestedPartyID, _NESTED_ORDER)
            grp.getGroup(j, nested)
            parties.append((require_str(nested, T.NestedPartyID),
                            get_str(nested, T.NestedPartyIDSource) or "",
                            get_str(nested, T.NestedPartyRole) or ""))
        lines.append({
            "account": require_str(grp, T.AllocAccount),
            "qty": require_decimal(grp, T.AllocQty),
            "individual_alloc_id": get_str(grp, T.IndividualAllocID),
            "avg_px": get_decimal(grp, T.AllocAvgPx),
            "parties": tuple(parties),
            "strategy": get_str(grp, T.AllocStrategy),
            "vehicle": get_str(grp, T.AllocVehicle),
            "text": get_str(grp, T.AllocText),
        })
    cl_ord_ids: list[str] = []
    for i in range(1, int(get_str(msg, T.NoOrders) or 0) + 1):
        order = _group(T.NoOrders, T.ClOrdID, _ORDERS_ORDER)
        msg.getGroup(i, order)
        cl_ord_ids.append(require_str(order, T.ClOrdID))
    side_raw = require_str(msg, T.Side)
    return JReceived(
        alloc_id=require_str(msg, T.AllocID),
        alloc_trans_type=require_str(msg, T.AllocTransType),
        alloc_type=require_str(msg, T.AllocType),
        quantity=require_decimal(msg, T.Quantity),
        avg_px=require_decimal(msg, T.AvgPx),
        symbol=require_str(msg, T.Symbol),
        side=SIDE_FROM_FIX.get(side_raw, side_raw),
        trade_date=require_str(msg, T.TradeDate),
        settl_date=get_str(msg, T.SettlDate),
        cl_ord_ids=tuple(cl_ord_ids),
        lines=tuple(lines),
    )
