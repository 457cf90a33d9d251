"""The desk: block orders that people hand to the gateway over HTTP instead of an OMS.

`fixalloc rebalance --send` (and `POST /orders`) give the gateway blocks that no OMS
sent. They travel the same path as an OMS's D, so every check, pre-allocation, approval
policy, allocation and J applies to them unchanged: each request is written as the D an
OMS would have sent (SenderSubID = the person), recorded in the wire log on the desk's
session, and decoded by the same code (gateway.fix.oms_orders.block_order). What the
gateway sends back to the desk (execution reports, the J's copy) is recorded on that
session and goes nowhere else: the desk reads it over HTTP.

The desk's session has no socket and no quickfix store. Its sequence numbers continue
from the wire log, so a restart does not reuse one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import quickfix as fix

from gateway.clock import Clock
from gateway.events import BlockOrderInvalid, BlockOrderReceived
from gateway.fix import codec, replace_codec
from gateway.fix import tags as T
from gateway.fix.oms_orders import block_order
from gateway.fix.wire_log import describe, wire_bytes
from gateway.orders import make_order_id
from gateway.persistence.store import Database

DESK_NAME = "desk"
DESK_COMP_ID = "DESK"


def desk_key(begin_string: str, sender_comp_id: str) -> str:
    """The desk's session key, shaped like a real one (gateway.fix.sessions.session_key)."""
    return f"{begin_string}:{sender_comp_id}->{DESK_COMP_ID}"


@dataclass(frozen=True)
class DeskOrder:
    """One block as the desk hands it over (already checked for shape by the HTTP layer)."""

    cl_ord_id: str
    book: str
    symbol: str
    side: str  # buy | sell | sell_short
    qty: Decimal
    ord_type: str = "1"  # market
    price: Decimal | None = None
    time_in_force: str | None = "0"
    preallocations: tuple[tuple[str, Decimal], ...] = ()
    preallocation_reason: str | None = None


class RecordedSession:
    """A session with no socket and no quickfix store: what crosses it is the wire log's
    record alone, with sequence numbers that continue from that record."""

    def __init__(self, db: Database, clock: Clock, key: str, sender_comp_id: str,
                 peer_comp_id: str) -> None:
        self.key = key
        self._db = db
        self._clock = clock
        self._sender = sender_comp_id
        self._peer = peer_comp_id
        # One lock for both directions: HTTP threads submit, the dispatcher answers.
        self._lock = threading.Lock()
        self._next = {d: (db.last_wire_seq(key, d) or 0) + 1 for d in ("in", "out")}

    def _stamp(self, direction: str, msg: fix.Message) -> dict[str, Any]:
        """Stamp the message as this session's next in `direction`: its wire-log fields."""
        sender, target = ((self._sender, self._peer) if direction == "out"
                          else (self._peer, self._sender))
        header = msg.getHeader()
        header.setField(T.SenderCompID, sender)
        header.setField(T.TargetCompID, target)
        with self._lock:
            header.setField(T.MsgSeqNum, str(self._next[direction]))
            header.setField(T.SendingTime, codec.utc_timestamp(self._clock.now()))
            data = wire_bytes(msg.toString())
            self._next[direction] += 1
        mtype, seq, poss_dup, ref = describe(data)
        return {"session_id": self.key, "direction": direction, "msg_type": mtype,
                "seq_num": seq, "poss_dup": poss_dup, "raw": data, "ref_id": ref,
                "recorded_at": self._clock.now()}

    def wire_row(self, direction: str, msg: fix.Message) -> dict[str, Any]:
        """The message's wire-log row, for a caller that writes it in its own transaction."""
        return self._db.wire_row(**self._stamp(direction, msg))

    def _record(self, direction: str, msg: fix.Message) -> None:
        self._db.append_wire(**self._stamp(direction, msg))

    def send(self, msg: fix.Message) -> bool:
        """What the gateway tells the peer: recorded (any ride-along commits with it)."""
        self._record("out", msg)
        return True


class DeskSession(RecordedSession):
    def __init__(self, db: Database, clock: Clock, key: str, sender_comp_id: str) -> None:
        super().__init__(db, clock, key, sender_comp_id, DESK_COMP_ID)

    def receive(self, order: DeskOrder, actor: str, now: datetime
                ) -> BlockOrderReceived | BlockOrderInvalid | None:
        """The D this request stands for, recorded and decoded like an OMS's.

        None when the same ClOrdID was already submitted today (the answer stands; a
        retried request does not make a second order)."""
        msg = codec.build_new_order_single(
            cl_ord_id=order.cl_ord_id, symbol=order.symbol, side=order.side, qty=order.qty,
            ord_type=order.ord_type, price=order.price, time_in_force=order.time_in_force,
            transact_time=now)
        msg.setField(T.Account, order.book)
        if order.preallocations:
            replace_codec.add_preallocations(msg, f"{order.cl_ord_id}-PRE",
                                             order.preallocations)
            if order.preallocation_reason:
                msg.setField(T.Text, order.preallocation_reason)
        msg.getHeader().setField(T.SenderSubID, actor)
        self._record("in", msg)
        # The built message itself (a re-read without a dictionary would flatten its
        # groups): its bytes are the ones just recorded.
        event = block_order(msg, self.key, now, self._db, lambda _what, fn: fn())
        if isinstance(event, BlockOrderReceived) and event.duplicate:
            return None
        return event



def desk_answer(db: Database, key: str, cl_ord_id: str, trade_date: str) -> dict[str, Any]:
    """What became of a desk order: its order as it stands, or the reason it was refused."""
    row = db.load_order(make_order_id(key, cl_ord_id, trade_date))
    answer: dict[str, Any] = {"cl_ord_id": cl_ord_id, "trade_date": trade_date}
    if row is not None:
        answer.update(order_id=row["order_id"], status=row["status"], book=row["book"],
                      symbol=row["symbol"], side=row["side"], qty=row["order_qty"],
                      broker=row["broker"] or None)
    rejection = db.find_rejection(key, cl_ord_id, trade_date)
    if rejection is not None and (row is None or row["status"] == "rejected"):
        answer.update(status="rejected", reason=rejection["text"])
    elif row is None:
        answer.update(status="unknown")
    return answer
