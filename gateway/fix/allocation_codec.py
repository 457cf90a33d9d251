"""AllocationInstruction (J) and AllocationInstructionAck (P): build and parse.

Kept apart from the order/execution codec because J is where the allocation contract
lives: Σ AllocQty = Quantity is enforced here, NoAllocs is required although FIX44.xml
marks it optional, and the strategy/vehicle UDFs are placed inside each NoAllocs entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

import quickfix as fix

from gateway.fix import tags as T
from gateway.fix.codec import (
    SIDE_FROM_FIX,
    SIDE_TO_FIX,
    fix_date,
    fmt,
    get_decimal,
    get_str,
    group,
    new_message,
    require_decimal,
    require_str,
    utc_timestamp,
)

ALLOC_TYPE_TO_FIX: Mapping[str, str] = {"calculated": "1", "preliminary": "2",
                                        "ready_to_book": "5"}
CENT = Decimal("0.01")


def _cents(amount: Decimal) -> Decimal:
    """Money on the J: to the cent, half-even, whatever the thread's Decimal context says."""
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


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
        grp = group(T.NoAllocs, T.AllocAccount, [T.AllocAccount, T.AllocPrice,
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
    canc_replace_reason: str = "2"
    """AllocCancReplaceReason(796) on a Replace/Cancel: 1 original details incomplete or
    incorrect, 2 change in underlying order details (a bust or correction), 99 other."""
    gross: Decimal | None = None
    net_money: Decimal | None = None
    """Block totals over every line; given when the lines are sent in fragments."""


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


def block_totals(lines: Sequence[JLine]) -> tuple[Decimal, Decimal]:
    """(GrossTradeAmt, NetMoney): Σ qty x price, and Σ of each line's rounded net money."""
    gross = sum((ln.qty * ln.avg_px for ln in lines), Decimal(0))
    net = sum((_cents(ln.qty * ln.avg_px) for ln in lines), Decimal(0))
    return _cents(gross), net


def build_allocation_instruction(
    block: JBlock, lines: Sequence[JLine], *, send_udfs: bool = True,
    fragment: tuple[int, bool] | None = None,
) -> fix.Message:
    """Build a J: NoOrders for the block order, one NoAllocs entry per account line.

    `fragment` = (TotNoAllocs, is the last fragment): `lines` are then this fragment's
    share; the block fields (Quantity, GrossTradeAmt, NetMoney from `block`) are the
    whole allocation's, repeated on every fragment. A Ready-To-Book J (626=5) normally
    has no lines: the broker books the block and the accounts are split elsewhere.
    """
    ready_to_book = block.alloc_type == "5"
    if not lines and block.alloc_trans_type != "2" and not ready_to_book:
        # FIX44.xml marks NoAllocs optional on J; the spec does not (except on Cancel,
        # Ready-To-Book and Warehouse), so we enforce it here.
        raise ValueError("an AllocationInstruction New/Replace needs at least one NoAllocs line")
    total = sum((ln.qty for ln in lines), Decimal(0))
    if fragment is None and block.alloc_trans_type != "2" and not ready_to_book \
            and total != block.quantity:
        raise ValueError(f"sum of AllocQty {total} differs from Quantity {block.quantity}")
    msg = new_message("J")
    msg.setField(T.AllocID, block.alloc_id)
    msg.setField(T.AllocTransType, block.alloc_trans_type)
    msg.setField(T.AllocType, block.alloc_type)
    if block.secondary_alloc_id:
        msg.setField(T.SecondaryAllocID, block.secondary_alloc_id)
    if block.ref_alloc_id:
        msg.setField(T.RefAllocID, block.ref_alloc_id)
        msg.setField(T.AllocCancReplaceReason, block.canc_replace_reason)
    msg.setField(T.AllocNoOrdersType, "1")
    order = group(T.NoOrders, T.ClOrdID, _ORDERS_ORDER)
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
    gross, net = (block.gross, block.net_money) if block.gross is not None \
        and block.net_money is not None else block_totals(lines)
    if ready_to_book and not lines:
        # No lines to add up: the block's gross as given, else Quantity x AvgPx.
        gross = block.gross if block.gross is not None \
            else _cents(block.quantity * block.avg_px)
    if block.alloc_trans_type != "2":
        msg.setField(T.GrossTradeAmt, fmt(gross))
    if fragment is not None:
        msg.setField(T.TotNoAllocs, str(fragment[0]))
        msg.setField(T.LastFragment, "Y" if fragment[1] else "N")
    # One group object per layout, cleared for each line: addGroup copies it into the
    # message, and the copies share its field-order table. A Group built from an order
    # array allocates a table as large as its highest tag (20102, our UDFs: 80 KB), and
    # each line's own group kept its own: 85,000 lines held 6.8 GB and took 90 us each.
    grp = group(T.NoAllocs, T.AllocAccount, _ALLOC_ORDER)
    nested = group(T.NoNestedPartyIDs, T.NestedPartyID, _NESTED_ORDER)
    for ln in lines:
        grp.clear()
        grp.setField(T.AllocAccount, ln.account_id)
        grp.setField(T.AllocAcctIDSource, "99")
        grp.setField(T.AllocQty, fmt(ln.qty))
        grp.setField(T.IndividualAllocID, ln.individual_alloc_id)
        for party_id, source, role in (
            (ln.custodian, "B", "28"),  # custodian, by BIC
            (ln.prime_broker, "D", "4"),  # prime broker as clearing firm: FIX 4.4 has no PB role
        ):
            if party_id:
                nested.clear()
                nested.setField(T.NestedPartyID, party_id)
                nested.setField(T.NestedPartyIDSource, source)
                nested.setField(T.NestedPartyRole, role)
                grp.addGroup(nested)
        grp.setField(T.AllocAvgPx, fmt(ln.avg_px))
        grp.setField(T.AllocNetMoney, fmt(_cents(ln.qty * ln.avg_px)))
        grp.setField(T.AllocSettlInstType, "0")
        if send_udfs:
            if ln.strategy:
                grp.setField(T.AllocStrategy, ln.strategy)
            if ln.vehicle:
                grp.setField(T.AllocVehicle, ln.vehicle)
        elif ln.strategy or ln.vehicle:
            grp.setField(T.AllocText, f"STRAT={ln.strategy or ''};VEH={ln.vehicle or ''}")
        msg.addGroup(grp)
    # NetMoney (Σ AllocNetMoney) only on a calculated J; never on Ready-To-Book (626=5),
    # whose accounts, and so their net money, are booked elsewhere.
    if block.alloc_type == "1" and block.alloc_trans_type != "2":
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
    ref_alloc_id: str | None = None
    tot_no_allocs: int | None = None
    last_fragment: bool | None = None


def parse_allocation_instruction(msg: fix.Message) -> JReceived:
    lines: list[Mapping[str, object]] = []
    count = int(get_str(msg, T.NoAllocs) or 0)
    grp = group(T.NoAllocs, T.AllocAccount, _ALLOC_ORDER)  # reused: getGroup overwrites
    nested = group(T.NoNestedPartyIDs, T.NestedPartyID, _NESTED_ORDER)
    for i in range(1, count + 1):
        msg.getGroup(i, grp)
        parties: list[tuple[str, str, str]] = []
        n_nested = int(get_str(grp, T.NoNestedPartyIDs) or 0)
        for j in range(1, n_nested + 1):
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
        order = group(T.NoOrders, T.ClOrdID, _ORDERS_ORDER)
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
        ref_alloc_id=get_str(msg, T.RefAllocID),
        tot_no_allocs=int(v) if (v := get_str(msg, T.TotNoAllocs)) else None,
        last_fragment=None if (f := get_str(msg, T.LastFragment)) is None else f == "Y",
    )
