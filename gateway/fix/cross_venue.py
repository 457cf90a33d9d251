"""The internal crossing venue: where the firm's own accounts trade with each other.

A live cross (gateway/crossing_live.py) is an execution like a broker's, so it travels the
broker's path: each side's crossed part is a child order at this venue, the venue's
execution report (35=8, ExecID and OrderID the cross's id, LastPx the policy's price) is
recorded in the wire log and stored as a broker report, and the dispatcher folds it into
the order, relays it to the OMS and allocates it like any fill. The venue's J (Ready-To-
Book: the accounts are booked in the gateway's record, no commission) is answered at once
with a P accepted, recorded on the venue's session too.

Like the desk, the venue has no socket and no quickfix store: the wire log is its record.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from decimal import Decimal
from typing import Any

import quickfix as fix

from gateway import faults
from gateway.clock import Clock
from gateway.events import AllocationAckReceived
from gateway.fix import allocation_codec, codec
from gateway.fix import tags as T
from gateway.fix.desk import RecordedSession
from gateway.persistence.store import Database

CROSS_NAME = "cross"
CROSS_COMP_ID = "CROSS"


def cross_key(begin_string: str, sender_comp_id: str) -> str:
    return f"{begin_string}:{sender_comp_id}->{CROSS_COMP_ID}"


class CrossVenue(RecordedSession):
    def __init__(self, db: Database, clock: Clock, key: str, sender_comp_id: str) -> None:
        super().__init__(db, clock, key, sender_comp_id, CROSS_COMP_ID)
        self._acks: deque[AllocationAckReceived] = deque()

    def execution(self, *, child_id: str, cross_id: str, exec_id: str, symbol: str,
                  side: str, qty: Decimal, price: Decimal, trade_date: str, text: str,
                  now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        """The venue's report of one side's crossed part, filled at once: its wire row and
        its broker-report row, for the caller to store in the cross's own transaction."""
        msg = codec.build_execution_report(
            order_id=cross_id, cl_ord_id=child_id, exec_id=exec_id, exec_type="F",
            ord_status="2", symbol=symbol, side=side, order_qty=qty, last_qty=qty,
            last_px=price, cum_qty=qty, avg_px=price, leaves_qty=Decimal(0), book=None,
            transact_time=now, trade_date=trade_date, text=text)
        wire = self.wire_row("in", msg)
        report = {
            "session_id": self.key, "broker_order_id": cross_id, "exec_id": exec_id,
            "trade_date": trade_date, "order_id": child_id, "cl_ord_id": child_id,
            "exec_type": "F", "ord_status": "2", "last_qty": codec.fmt(qty),
            "last_px": codec.fmt(price), "cum_qty": codec.fmt(qty),
            "avg_px": codec.fmt(price), "leaves_qty": "0", "text": text,
            "seq_num": wire["seq_num"], "poss_dup": False, "received_at": now,
            "transact_time": now, "exec_ref_id": None, "exec_trans_type": None,
        }
        return wire, report

    def send(self, msg: fix.Message) -> bool:
        """Recorded; a J is accepted at once (a P, recorded, for the dispatcher to take)."""
        super().send(msg)
        if msg.getHeader().getField(T.MsgType) == "J":
            faults.point("venue_j_recorded")
            self.accept(msg.getField(T.AllocID))
        return True

    def accept(self, alloc_id: str) -> None:
        """The venue's P accepting a J: recorded, and queued for the dispatcher."""
        now = self._clock.now()
        text = "booked in the gateway's record: an internal cross"
        self._record("in", allocation_codec.build_allocation_ack(
            alloc_id=alloc_id, status="0", transact_time=now, text=text))
        self._acks.append(AllocationAckReceived(
            session=self.key, alloc_id=alloc_id, alloc_status="0", rej_code=None, text=text,
            ts_recv=now))

    def forget(self, alloc_id: str) -> None:
        """Drop queued answers to this J (recovery applies the recorded P itself)."""
        kept = [a for a in self._acks if a.alloc_id != alloc_id]
        self._acks.clear()
        self._acks.extend(kept)

    def take_acks(self) -> list[AllocationAckReceived]:
        """The venue's answers since the last call (dispatcher thread only)."""
        if not self._acks:
            return []  # the usual case, asked after every event
        out = list(self._acks)
        self._acks.clear()
        return out
