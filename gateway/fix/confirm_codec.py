"""Confirmation (AK), ConfirmationAck (AU), ConfirmationRequest (BH), AllocationReport (AS)
and AllocationReportAck (AT): build and parse.

One AK per allocation line (one ticket per account) carries the broker's economics of
that ticket; we answer each with an AU that affirms (940=3) or rejects it (940=2 with
ConfirmRejReason). A BH asks the broker for an AK that has not come; the AK that answers
echoes its ConfirmReqID. An AS tells us of an allocation the broker booked or amended out
of band; AT acknowledges it. Both directions are here: the gateway parses AK/AS and builds
AU/BH/AT, the broker simulator does the opposite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import quickfix as fix

from gateway.fix import tags as T
from gateway.fix.codec import (
    SIDE_FROM_FIX,
    SIDE_TO_FIX,
    _iso_date,
    fix_date,
    fmt,
    get_decimal,
    get_str,
    group,
    new_message,
    require_decimal,
    require_id,
    require_str,
    utc_timestamp,
)

# ConfirmType(773) / ConfirmStatus(665) / ConfirmTransType(666) / AffirmStatus(940)
CONFIRM_STATUS = {"1": "received", "2": "mismatched_account", "3": "missing_ssi",
                  "4": "confirmed", "5": "request_rejected"}
AFFIRMED, CONFIRM_REJECTED, AFFIRM_RECEIVED = "3", "2", "1"
# ConfirmRejReason(774), FIX 4.4
REJ_MISMATCHED_ACCOUNT, REJ_MISSING_SSI, REJ_OTHER = "1", "2", "99"

_CAPACITY_ORDER = [T.OrderCapacity, 529, T.OrderCapacityQty]  # 529 OrderRestrictions


@dataclass(frozen=True)
class ConfirmationFields:
    confirm_id: str
    confirm_ref_id: str | None
    confirm_req_id: str | None
    trans_type: str  # 0 new, 1 replace, 2 cancel
    confirm_type: str  # 1 status, 2 confirmation, 3 request rejected
    confirm_status: str
    copy: bool
    alloc_id: str | None
    individual_alloc_id: str | None
    account: str
    qty: Decimal
    side: str
    avg_px: Decimal
    gross: Decimal
    net_money: Decimal
    commission: Decimal | None
    trade_date: str | None
    settl_date: str | None
    text: str | None


def parse_confirmation(msg: fix.Message) -> ConfirmationFields:
    side_raw = require_str(msg, T.Side)
    return ConfirmationFields(
        confirm_id=require_id(msg, T.ConfirmID),
        confirm_ref_id=get_str(msg, T.ConfirmRefID),
        confirm_req_id=get_str(msg, T.ConfirmReqID),
        trans_type=require_str(msg, T.ConfirmTransType),
        confirm_type=require_str(msg, T.ConfirmType),
        confirm_status=require_str(msg, T.ConfirmStatus),
        copy=get_str(msg, T.CopyMsgIndicator) == "Y",
        alloc_id=get_str(msg, T.AllocID),
        individual_alloc_id=get_str(msg, T.IndividualAllocID),
        account=require_id(msg, T.AllocAccount),
        qty=require_decimal(msg, T.AllocQty),
        side=SIDE_FROM_FIX.get(side_raw, side_raw),
        avg_px=require_decimal(msg, T.AvgPx),
        gross=require_decimal(msg, T.GrossTradeAmt),
        net_money=require_decimal(msg, T.NetMoney),
        commission=get_decimal(msg, T.Commission),
        trade_date=_iso_date(get_str(msg, T.TradeDate)),
        settl_date=_iso_date(get_str(msg, T.SettlDate)),
        text=get_str(msg, T.Text),
    )


def build_confirmation(
    *, confirm_id: str, trans_type: str = "0", confirm_type: str = "2",
    confirm_status: str = "4", alloc_id: str, individual_alloc_id: str, account: str,
    qty: Decimal, side: str, symbol: str, avg_px: Decimal, gross: Decimal,
    net_money: Decimal, trade_date: str, settl_date: str | None, transact_time: datetime,
    confirm_ref_id: str | None = None, confirm_req_id: str | None = None,
    commission: Decimal | None = None, text: str | None = None,
) -> fix.Message:
    """An AK for one ticket (the broker simulator sends these)."""
    msg = new_message("AK")
    msg.setField(T.ConfirmID, confirm_id)
    if confirm_ref_id:
        msg.setField(T.ConfirmRefID, confirm_ref_id)
    if confirm_req_id:
        msg.setField(T.ConfirmReqID, confirm_req_id)
    msg.setField(T.ConfirmTransType, trans_type)
    msg.setField(T.ConfirmType, confirm_type)
    msg.setField(T.ConfirmStatus, confirm_status)
    msg.setField(T.AllocID, alloc_id)
    msg.setField(T.IndividualAllocID, individual_alloc_id)
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    msg.setField(T.TradeDate, fix_date(trade_date))
    if settl_date:
        msg.setField(T.SettlDate, fix_date(settl_date))
    msg.setField(T.Symbol, symbol)
    msg.setField(T.AllocQty, fmt(qty))
    msg.setField(T.Side, SIDE_TO_FIX[side])
    capacity = group(T.NoCapacities, T.OrderCapacity, _CAPACITY_ORDER)
    capacity.setField(T.OrderCapacity, "A")  # agency
    capacity.setField(T.OrderCapacityQty, fmt(qty))
    msg.addGroup(capacity)
    msg.setField(T.AllocAccount, account)
    msg.setField(T.AvgPx, fmt(avg_px))
    msg.setField(T.GrossTradeAmt, fmt(gross))
    msg.setField(T.NetMoney, fmt(net_money))
    if commission is not None:
        msg.setField(T.Commission, fmt(commission))
        msg.setField(T.CommType, "3")  # absolute
    if text:
        msg.setField(T.Text, text[:1000])
    return msg


@dataclass(frozen=True)
class ConfirmationAckFields:
    confirm_id: str
    affirm_status: str
    rej_reason: str | None
    text: str | None


def build_confirmation_ack(*, confirm_id: str, trade_date: str, affirm_status: str,
                           transact_time: datetime, rej_reason: str | None = None,
                           text: str | None = None) -> fix.Message:
    msg = new_message("AU")
    msg.setField(T.ConfirmID, confirm_id)
    msg.setField(T.TradeDate, fix_date(trade_date))
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    msg.setField(T.AffirmStatus, affirm_status)
    if rej_reason:
        msg.setField(T.ConfirmRejReason, rej_reason)
    if text:
        msg.setField(T.Text, text[:1000])
    return msg


def parse_confirmation_ack(msg: fix.Message) -> ConfirmationAckFields:
    return ConfirmationAckFields(
        confirm_id=require_str(msg, T.ConfirmID), affirm_status=require_str(msg, T.AffirmStatus),
        rej_reason=get_str(msg, T.ConfirmRejReason), text=get_str(msg, T.Text))


@dataclass(frozen=True)
class ConfirmationRequestFields:
    confirm_req_id: str
    alloc_id: str | None
    individual_alloc_id: str | None
    account: str | None


def build_confirmation_request(*, confirm_req_id: str, alloc_id: str,
                               individual_alloc_id: str, account: str,
                               transact_time: datetime, text: str | None = None
                               ) -> fix.Message:
    msg = new_message("BH")
    msg.setField(T.ConfirmReqID, confirm_req_id)
    msg.setField(T.ConfirmType, "2")  # confirmation
    msg.setField(T.AllocID, alloc_id)
    msg.setField(T.IndividualAllocID, individual_alloc_id)
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    msg.setField(T.AllocAccount, account)
    if text:
        msg.setField(T.Text, text[:1000])
    return msg


def parse_confirmation_request(msg: fix.Message) -> ConfirmationRequestFields:
    return ConfirmationRequestFields(
        confirm_req_id=require_str(msg, T.ConfirmReqID), alloc_id=get_str(msg, T.AllocID),
        individual_alloc_id=get_str(msg, T.IndividualAllocID),
        account=get_str(msg, T.AllocAccount))


@dataclass(frozen=True)
class AllocationReportFields:
    report_id: str
    alloc_id: str | None
    trans_type: str
    report_type: str
    status: str
    side: str
    symbol: str
    quantity: Decimal
    avg_px: Decimal
    trade_date: str | None
    lines: tuple[tuple[str, Decimal], ...]  # (account, qty)
    text: str | None


_AS_ALLOC_ORDER = [T.AllocAccount, T.AllocAcctIDSource, T.MatchStatus, T.AllocPrice,
                   T.AllocQty, T.IndividualAllocID]


def parse_allocation_report(msg: fix.Message) -> AllocationReportFields:
    lines: list[tuple[str, Decimal]] = []
    for i in range(1, int(get_str(msg, T.NoAllocs) or 0) + 1):
        grp = group(T.NoAllocs, T.AllocAccount, _AS_ALLOC_ORDER)
        msg.getGroup(i, grp)
        lines.append((require_id(grp, T.AllocAccount), require_decimal(grp, T.AllocQty)))
    side_raw = require_str(msg, T.Side)
    return AllocationReportFields(
        report_id=require_id(msg, T.AllocReportID), alloc_id=get_str(msg, T.AllocID),
        trans_type=require_str(msg, T.AllocTransType),
        report_type=require_str(msg, T.AllocReportType),
        status=require_str(msg, T.AllocStatus), side=SIDE_FROM_FIX.get(side_raw, side_raw),
        symbol=require_str(msg, T.Symbol), quantity=require_decimal(msg, T.Quantity),
        avg_px=require_decimal(msg, T.AvgPx),
        trade_date=_iso_date(get_str(msg, T.TradeDate)), lines=tuple(lines),
        text=get_str(msg, T.Text))


def build_allocation_report(*, report_id: str, alloc_id: str, side: str, symbol: str,
                            quantity: Decimal, avg_px: Decimal, trade_date: str,
                            lines: Sequence[tuple[str, Decimal]], transact_time: datetime,
                            text: str | None = None) -> fix.Message:
    """An AS (sell-side calculated, 794=4) as the broker simulator books one out of band."""
    msg = new_message("AS")
    msg.setField(T.AllocReportID, report_id)
    msg.setField(T.AllocID, alloc_id)
    msg.setField(T.AllocTransType, "0")
    msg.setField(T.AllocReportType, "4")
    msg.setField(T.AllocStatus, "0")
    msg.setField(T.AllocNoOrdersType, "0")
    msg.setField(T.Side, SIDE_TO_FIX[side])
    msg.setField(T.Symbol, symbol)
    msg.setField(T.Quantity, fmt(quantity))
    msg.setField(T.AvgPx, fmt(avg_px))
    msg.setField(T.TradeDate, fix_date(trade_date))
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    for account, qty in lines:
        grp = group(T.NoAllocs, T.AllocAccount, _AS_ALLOC_ORDER)
        grp.setField(T.AllocAccount, account)
        grp.setField(T.AllocQty, fmt(qty))
        msg.addGroup(grp)
    if text:
        msg.setField(T.Text, text[:1000])
    return msg


def build_allocation_report_ack(*, report_id: str, alloc_id: str | None, status: str,
                                transact_time: datetime, text: str | None = None
                                ) -> fix.Message:
    msg = new_message("AT")
    msg.setField(T.AllocReportID, report_id)
    msg.setField(T.AllocID, alloc_id or "NONE")
    msg.setField(T.TransactTime, utc_timestamp(transact_time))
    msg.setField(T.AllocStatus, status)
    if text:
        msg.setField(T.Text, text[:1000])
    return msg
