"""`fixalloc sim oms`: a FIX 4.4 initiator that behaves like an order management system.

It sends block orders (one at a time or from a CSV blotter), and records what comes back:
every ExecutionReport under its ClOrdID and every AllocationInstruction.
"""

from __future__ import annotations

import csv
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import quickfix as fix

from gateway.fix import allocation_codec, codec
from gateway.fix import tags as T
from gateway.fix.sim.common import SimApplication, SimEngine


@dataclass(frozen=True)
class BlotterOrder:
    cl_ord_id: str
    book: str
    symbol: str
    side: str
    qty: Decimal
    ord_type: str = "2"
    price: Decimal | None = None
    time_in_force: str = "0"
    preallocations: tuple[tuple[str, Decimal], ...] = ()
    text: str | None = None


@dataclass(frozen=True)
class ExecutionSeen:
    cl_ord_id: str
    order_id: str
    exec_id: str
    exec_type: str
    ord_status: str
    last_qty: Decimal
    last_px: Decimal
    cum_qty: Decimal
    avg_px: Decimal
    text: str | None
    poss_resend: bool
    received_at: datetime


def read_blotter(path: Path) -> list[BlotterOrder]:
    """CSV columns: cl_ord_id,book,symbol,side,qty,ord_type,price,time_in_force."""
    orders = []
    with path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                orders.append(BlotterOrder(
                    cl_ord_id=row["cl_ord_id"], book=row["book"], symbol=row["symbol"],
                    side=row["side"], qty=Decimal(row["qty"]),
                    ord_type=row.get("ord_type") or ("2" if row.get("price") else "1"),
                    price=Decimal(row["price"]) if row.get("price") else None,
                    time_in_force=row.get("time_in_force") or "0"))
            except (KeyError, ArithmeticError) as exc:
                raise ValueError(f"{path}:{line}: invalid blotter row: {exc!r}") from exc
    return orders


class OmsSimulator(SimApplication):
    def __init__(self, *, port: int, state_dir: Path, host: str = "127.0.0.1",
                 sender: str = "OMS1", target: str = "FIXALLOC", password: str | None = None,
                 dictionary: Path | None = None,
                 on_message: Callable[[str, Any], None] | None = None,
                 tls: dict[str, str] | None = None,
                 extra: dict[str, str] | None = None, ack_allocations: bool = False) -> None:
        super().__init__(on_message)
        self.password = password
        self.ack_allocations = ack_allocations
        """Answer each J with AllocationInstructionAck (P 87=0), as a booking OMS does."""
        self.executions: dict[str, list[ExecutionSeen]] = {}
        self.allocations: list[allocation_codec.JReceived] = []
        self.business_rejects: list[str] = []
        self.cancel_rejects: list[codec.CancelRejectFields] = []
        self.session_rejects: list[str] = []
        self.logouts: list[str] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self.engine = SimEngine(self, role="initiator", sender=sender, target=target, port=port,
                                host=host, state_dir=state_dir, dictionary=dictionary, tls=tls,
                                extra=extra)

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        if self.password and codec.msg_type(message) == "A":
            message.setField(T.Password, self.password)

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        mtype = codec.msg_type(message)
        if mtype == "3":
            self.session_rejects.append(message.toString().replace("\x01", "|"))
        elif mtype == "5":
            self.logouts.append(codec.get_str(message, T.Text) or "")

    def on_app_message(self, msg_type: str, message: fix.Message) -> None:
        if msg_type == "8":
            self._on_execution(message)
        elif msg_type == "J":
            j = allocation_codec.parse_allocation_instruction(message)
            self._record(self.allocations, j, "allocation")
            if self.ack_allocations:
                self.engine.send(allocation_codec.build_allocation_ack(
                    alloc_id=j.alloc_id, status="0", transact_time=datetime.now(UTC),
                    text="booked"))
        elif msg_type == "9":
            self._record(self.cancel_rejects, codec.parse_order_cancel_reject(message),
                         "cancel_reject")
        elif msg_type == "j":
            self._record(self.business_rejects, message.toString().replace("\x01", "|"),
                         "business_reject")
        else:
            raise fix.UnsupportedMessageType()

    def _record(self, into: list[Any], item: Any, kind: str) -> None:
        with self._cond:
            into.append(item)
            self._cond.notify_all()
        self._on_message(kind, item)

    def _on_execution(self, message: fix.Message) -> None:
        f = codec.parse_execution_report(message)
        header = message.getHeader()
        seen = ExecutionSeen(
            cl_ord_id=f.cl_ord_id, order_id=f.broker_order_id, exec_id=f.exec_id,
            exec_type=f.exec_type, ord_status=f.ord_status, last_qty=f.last_qty,
            last_px=f.last_px, cum_qty=f.cum_qty, avg_px=f.avg_px, text=f.text,
            poss_resend=header.isSetField(T.PossResend) and header.getField(T.PossResend) == "Y",
            received_at=datetime.now(UTC))
        with self._cond:
            self.executions.setdefault(f.cl_ord_id, []).append(seen)
            self._cond.notify_all()
        self._on_message("execution", seen)

    # -- actions --------------------------------------------------------------------------

    def send_order(self, order: BlotterOrder) -> bool:
        msg = codec.build_new_order_single(
            cl_ord_id=order.cl_ord_id, symbol=order.symbol, side=order.side, qty=order.qty,
            ord_type=order.ord_type, price=order.price, time_in_force=order.time_in_force,
            transact_time=datetime.now(UTC))
        msg.setField(T.Account, order.book)
        if order.text:
            msg.setField(T.Text, order.text)
        for account, qty in order.preallocations:
            entry = codec.group(T.NoAllocs, T.AllocAccount, [T.AllocAccount, T.AllocQty])
            entry.setField(T.AllocAccount, account)
            entry.setField(T.AllocQty, codec.fmt(qty))
            msg.addGroup(entry)
        return self.engine.send(msg)

    def send_cancel(self, order: BlotterOrder) -> bool:
        msg = codec.build_cancel_request(
            cl_ord_id=f"{order.cl_ord_id}-CXL{next(self._ids)}", orig_cl_ord_id=order.cl_ord_id,
            broker_order_id=None, symbol=order.symbol, side=order.side, qty=order.qty,
            transact_time=datetime.now(UTC))
        return self.engine.send(msg)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def allocation_for(self, cl_ord_id: str) -> allocation_codec.JReceived | None:
        return next((j for j in self.allocations if cl_ord_id in j.cl_ord_ids), None)

    def last_execution(self, cl_ord_id: str) -> ExecutionSeen | None:
        seen = self.executions.get(cl_ord_id)
        return seen[-1] if seen else None
