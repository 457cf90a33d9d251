"""AllocationInstruction (J) and AllocationInstructionAck (P): build and parse.

Kept apart from the order/execution codec because J is where the allocation contract
lives: Σ AllocQty = Quantity is enforced here, NoAllocs is required although FIX44.xml
marks it optional, and the strategy/vehicle UDFs are placed inside each NoAllocs entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

import quickfix as fix

from gateway.fix import j_layout
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
    cross_id: str | None = None
    """Set on a line crossed internally (the OMS's copy marks it, AllocText CROSS=id)."""


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
    text: str | None = None
    """Text(58): what the J is (an internal cross says so, with its id and price)."""


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
    return j_layout.build("J", j_fields(block, lines, send_udfs=send_udfs, fragment=fragment))


def j_fields(block: JBlock, lines: Sequence[JLine], *, send_udfs: bool = True,
             fragment: tuple[int, bool] | None = None) -> j_layout.Fields:
    """The J's fields in the order they are set (`build_allocation_instruction`)."""
    ready_to_book = block.alloc_type == "5"
    if not lines and block.alloc_trans_type != "2" and not ready_to_book:
        # FIX44.xml marks NoAllocs optional on J; the spec does not (except on Cancel,
        # Ready-To-Book and Warehouse), so we enforce it here.
        raise ValueError("an AllocationInstruction New/Replace needs at least one NoAllocs line")
    total = sum((ln.qty for ln in lines), Decimal(0))
    if fragment is None and block.alloc_trans_type != "2" and not ready_to_book \
            and total != block.quantity:
        raise ValueError(f"sum of AllocQty {total} differs from Quantity {block.quantity}")
    out: j_layout.Fields = [(T.AllocID, block.alloc_id),
                            (T.AllocTransType, block.alloc_trans_type),
                            (T.AllocType, block.alloc_type)]
    if block.secondary_alloc_id:
        out.append((T.SecondaryAllocID, block.secondary_alloc_id))
    if block.ref_alloc_id:
        out += [(T.RefAllocID, block.ref_alloc_id),
                (T.AllocCancReplaceReason, block.canc_replace_reason)]
    out.append((T.AllocNoOrdersType, "1"))
    order: j_layout.Fields = [(T.ClOrdID, block.cl_ord_id)]
    if block.broker_order_id:
        order.append((T.OrderID, block.broker_order_id))
    order += [(T.OrderQty, fmt(block.order_qty)), (T.OrderAvgPx, fmt(block.avg_px)),
              (T.OrderBookingQty, fmt(block.quantity))]
    out += [(T.NoOrders, [order]), (T.Side, SIDE_TO_FIX[block.side]), (T.Symbol, block.symbol),
            (T.Quantity, fmt(block.quantity)), (T.AvgPx, fmt(block.avg_px)),
            (T.TradeDate, fix_date(block.trade_date)),
            (T.TransactTime, utc_timestamp(block.transact_time)),
            (T.SettlDate, fix_date(block.settl_date))]
    gross, net = (block.gross, block.net_money) if block.gross is not None \
        and block.net_money is not None else block_totals(lines)
    if ready_to_book and not lines:
        # No lines to add up: the block's gross as given, else Quantity x AvgPx.
        gross = block.gross if block.gross is not None \
            else _cents(block.quantity * block.avg_px)
    if block.alloc_trans_type != "2":
        out.append((T.GrossTradeAmt, fmt(gross)))
    if fragment is not None:
        out += [(T.TotNoAllocs, str(fragment[0])),
                (T.LastFragment, "Y" if fragment[1] else "N")]
    if lines:
        out.append((T.NoAllocs, j_layout.Entries(lines, lambda ln: _line_fields(ln, send_udfs))))
    # NetMoney (Σ AllocNetMoney) only on a calculated J; never on Ready-To-Book (626=5),
    # whose accounts, and so their net money, are booked elsewhere.
    if block.alloc_type == "1" and block.alloc_trans_type != "2":
        out.append((T.NetMoney, fmt(net)))
    if block.text:
        out.append((T.Text, block.text))
    return out


def _line_fields(ln: JLine, send_udfs: bool) -> j_layout.Fields:
    fields: j_layout.Fields = [(T.AllocAccount, ln.account_id), (T.AllocAcctIDSource, "99"),
                               (T.AllocQty, fmt(ln.qty)),
                               (T.IndividualAllocID, ln.individual_alloc_id)]
    parties: list[j_layout.Fields] = [
        [(T.NestedPartyID, party_id), (T.NestedPartyIDSource, source),
         (T.NestedPartyRole, role)]
        for party_id, source, role in (
            (ln.custodian, "B", "28"),  # custodian, by BIC
            (ln.prime_broker, "D", "4"),  # prime broker as clearing firm: FIX 4.4 has no PB role
        ) if party_id]
    if parties:
        fields.append((T.NoNestedPartyIDs, parties))
    fields += [(T.AllocAvgPx, fmt(ln.avg_px)), (T.AllocNetMoney, fmt(_cents(ln.qty * ln.avg_px))),
               (T.AllocSettlInstType, "0")]
    text = [f"CROSS={ln.cross_id}"] if ln.cross_id else []
    if send_udfs:
        if ln.strategy:
            fields.append((T.AllocStrategy, ln.strategy))
        if ln.vehicle:
            fields.append((T.AllocVehicle, ln.vehicle))
    elif ln.strategy or ln.vehicle:
        text.append(f"STRAT={ln.strategy or ''};VEH={ln.vehicle or ''}")
    if text:
        fields.append((T.AllocText, ";".join(text)))
    return fields


def sample_j() -> tuple[str, j_layout.Fields]:
    """A J with every part a J can have: the dictionary check of `j_layout.use_dictionary`."""
    lines = [JLine(f"S-J1-{i:05d}", f"ACC{i}", Decimal(100), Decimal("10.125"), "CUSTBIC",
                   "PB1" if i else None, "GROWTH", "SMA", "XR-1" if i else None)
             for i in range(2)]
    block = JBlock("S-J1", "1", "1", "CL1", "BO1", Decimal(200), "buy", "AAPL", Decimal(200),
                   Decimal("10.125"), "2026-11-30", "2026-12-01",
                   datetime(2026, 11, 30, 15, 0, tzinfo=UTC), secondary_alloc_id="S",
                   ref_alloc_id="S-J0", text="internal cross XR-1")
    fields = j_fields(block, lines, fragment=(4, False))
    plain = j_fields(block, lines, send_udfs=False, fragment=(4, True))
    # Both placements of strategy/vehicle (UDFs, and AllocText) in one sample.
    mixed: list[j_layout.Fields] = []
    for layout in (fields, plain):
        mixed += next(list(v) for tag, v in layout if tag == T.NoAllocs and not isinstance(v, str))
    return "J", [(T.NoAllocs, mixed) if tag == T.NoAllocs else (tag, v) for tag, v in fields]


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
    text: str | None = None


def parse_allocation_instruction(msg: fix.Message) -> JReceived:
    lines: list[Mapping[str, object]] = []
    count = int(get_str(msg, T.NoAllocs) or 0)
    # reused: getGroup overwrites
    grp = group(T.NoAllocs, T.AllocAccount, j_layout.GROUPS[T.NoAllocs][1])
    nested = group(T.NoNestedPartyIDs, T.NestedPartyID, j_layout.GROUPS[T.NoNestedPartyIDs][1])
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
        order = group(T.NoOrders, T.ClOrdID, j_layout.GROUPS[T.NoOrders][1])
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
        text=get_str(msg, T.Text),
    )
