"""A block NewOrderSingle from the OMS, from the callback's side: decode, store, describe.

Every D is stored before the callback returns: a valid one as an order row, one that
cannot be decoded as a refused order (`order_rejections`), so that a PossDup/PossResend
repeat of either is recognised and dropped rather than answered a second time, and every
reject's ExecID (REJ<id>) is unique for the life of the database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import quickfix as fix
import structlog

from gateway.clock import trade_date_of
from gateway.events import BlockOrderInvalid, BlockOrderReceived
from gateway.fix import codec
from gateway.fix import tags as T
from gateway.orders import make_order_id
from gateway.persistence.store import Database

log = structlog.get_logger("fixalloc.fix")

Store = Callable[[str, Callable[[], Any]], Any]


def order_trade_date(message: fix.Message, now: datetime) -> str:
    """The New York trade date of a D, the same for the original and any repeat of it.

    From its TransactTime(60) (required on a 4.4 D and carried unchanged by a resend),
    else its original sending time; the arrival time only as a last resort.
    """
    header = message.getHeader()
    for stamp in (codec.get_str(message, T.TransactTime),
                  codec.get_str(header, T.OrigSendingTime), codec.get_str(header, T.SendingTime)):
        ts = codec.parse_utc_timestamp(stamp)
        if ts is not None:
            return trade_date_of(ts).isoformat()
    return trade_date_of(now).isoformat()


def block_order(message: fix.Message, key: str, now: datetime, db: Database,
                store: Store) -> BlockOrderReceived | BlockOrderInvalid | None:
    """The event for the dispatcher, or None when this D is a repeat already answered."""
    trade_date = order_trade_date(message, now)
    repeat = codec.is_poss_dup(message)
    try:
        f = codec.parse_new_order_single(message)
    except codec.DecodeError as exc:
        # The dictionary accepted it, so this is a business problem: the D's own reject
        # (ER 39=8 with the reason) answers it. Without a usable ClOrdID there is nothing
        # to answer under: require_id raises and the guard sends a session Reject instead.
        cl_ord_id = codec.require_id(message, T.ClOrdID)
        if repeat and db.find_rejection(key, cl_ord_id, trade_date) is not None:
            log.info("order.duplicate_dropped", session=key, cl_ord_id=cl_ord_id,
                     reason="repeat of a rejected order")
            return None
        reason = f"{codec.TAG_NAMES.get(exc.tag, 'tag')}({exc.tag}): {exc.reason}"
        rejection_id = store(f"order {cl_ord_id}", lambda: db.record_rejection(
            session_id=key, cl_ord_id=cl_ord_id, trade_date=trade_date,
            seq_num=codec.seq_num(message), order_id=None, reason_code="99", text=reason,
            created_at=now))
        return BlockOrderInvalid(
            session=key, cl_ord_id=cl_ord_id, symbol=codec.get_str(message, T.Symbol) or "",
            side_fix=codec.get_str(message, T.Side) or "",
            order_qty=codec.get_str(message, T.OrderQty) or "0", reason=reason,
            seq_num=codec.seq_num(message), ts_recv=now, rejection_id=rejection_id)
    order_id = make_order_id(key, f.cl_ord_id, trade_date)
    row = {
        "order_id": order_id, "oms_session": key, "oms_cl_ord_id": f.cl_ord_id,
        "book": f.book, "symbol": f.symbol, "side": f.side,
        "order_qty": codec.fmt(f.order_qty), "ord_type": f.ord_type,
        "price": codec.fmt(f.price) if f.price is not None else None,
        "stop_px": codec.fmt(f.stop_px) if f.stop_px is not None else None,
        "peg_offset": codec.fmt(f.peg_offset) if f.peg_offset is not None else None,
        "time_in_force": f.time_in_force, "broker": "", "status": "received",
        "cum_qty": "0", "avg_px": "0", "leaves_qty": codec.fmt(f.order_qty),
        "trade_date": trade_date, "created_at": now, "updated_at": now,
        "preallocations_json": json.dumps({
            "lines": [[a, codec.fmt(q)] for a, q in f.preallocations],
            "reason": f.preallocation_reason}) if f.preallocations else None,
    }
    inserted = store(f"order {f.cl_ord_id}", lambda: db.insert_order(row))
    if not inserted and repeat:
        log.info("order.duplicate_dropped", session=key, cl_ord_id=f.cl_ord_id)
        return None
    return BlockOrderReceived(
        session=key, order_id=order_id, duplicate=not inserted, cl_ord_id=f.cl_ord_id,
        book=f.book, symbol=f.symbol, side=f.side, order_qty=f.order_qty,
        ord_type=f.ord_type, price=f.price, time_in_force=f.time_in_force,
        seq_num=codec.seq_num(message), ts_recv=now, trade_date=trade_date,
        preallocations=f.preallocations, preallocation_reason=f.preallocation_reason,
        stop_px=f.stop_px, peg_offset=f.peg_offset,
    )
