"""`fixalloc sim oms`: a FIX 4.4 initiator that behaves like an order management system.

It sends block orders (one at a time or from a CSV blotter), and records what comes back:
every ExecutionReport under its ClOrdID (busts 150=H and corrections 150=G with the
ExecRefID they name), every AllocationInstruction with its trans type (New, Replace,
Cancel) and RefAllocID, and whatever post-trade message the gateway relays (P, AK, AS).
`lifecycle` holds one readable line per event, in order; the CLI prints them.
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

from gateway.clock import Clock, SystemClock
from gateway.fix import allocation_codec, codec, confirm_codec, replace_codec
from gateway.fix import tags as T
from gateway.fix.sim.booking import FragmentSet
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
    exec_ref_id: str | None = None
    """ExecRefID(19): the ExecID a bust (150=H) or correction (150=G) refers to."""
    exec_trans_type: str | None = None
    """ExecTransType(20), when a FIX 4.2-style report carries it."""
    leaves_qty: Decimal | None = None


ALLOC_TRANS = {"0": "new", "1": "replace", "2": "cancel"}
EXEC_TYPES = {"0": "new", "3": "done_for_day", "4": "canceled", "5": "replaced",
              "8": "rejected", "E": "pending_replace",
              "A": "pending_new", "F": "trade", "G": "trade_correct", "H": "trade_cancel"}


def describe(kind: str, payload: Any) -> str:
    """One line for a lifecycle event (what `lifecycle` keeps and the CLI prints)."""
    if kind == "execution":
        what = EXEC_TYPES.get(payload.exec_type, payload.exec_type)
        ref = f" ref={payload.exec_ref_id}" if payload.exec_ref_id else ""
        return (f"ER  {payload.cl_ord_id} exec_type={payload.exec_type} ({what}) "
                f"exec_id={payload.exec_id}{ref} status={payload.ord_status} "
                f"last={payload.last_qty}@{payload.last_px} cum={payload.cum_qty} "
                f"avg={payload.avg_px}" + (f" text={payload.text!r}" if payload.text else ""))
    if kind == "allocation":
        trans = ALLOC_TRANS.get(payload.alloc_trans_type, payload.alloc_trans_type)
        ref = f" ref={payload.ref_alloc_id}" if payload.ref_alloc_id else ""
        return (f"J   {payload.alloc_id} trans={trans}{ref} qty={payload.quantity} "
                f"avg={payload.avg_px} accounts={len(payload.lines)}")
    if kind == "allocation_ack":
        return (f"P   {payload.alloc_id} status={payload.alloc_status}"
                + (f" rej={payload.rej_code}" if payload.rej_code else ""))
    if kind == "confirmation":
        return (f"AK  {payload.confirm_id} trans={payload.trans_type} {payload.account} "
                f"qty={payload.qty} net={payload.net_money}")
    if kind == "allocation_report":
        return f"AS  {payload.report_id} alloc={payload.alloc_id} qty={payload.quantity}"
    return f"{kind}: {payload}"


ORD_TYPES = {"market": "1", "limit": "2", "stop": "3", "stop_limit": "4", "pegged": "P"}
TIMES_IN_FORCE = {"day": "0", "gtc": "1", "opg": "2", "ioc": "3", "fok": "4", "gtx": "5",
                  "gtd": "6", "at_the_close": "7"}


def _code(value: str, names: dict[str, str], what: str) -> str:
    """A blotter's order type or time in force, by name (`limit`, `ioc`) or FIX code."""
    key = value.strip().lower()
    if key in names:
        return names[key]
    if value.strip() in names.values():
        return value.strip()
    raise ValueError(f"unknown {what} {value!r}; one of {', '.join(names)} (or its FIX code)")


def read_blotter(path: Path) -> list[BlotterOrder]:
    """CSV columns: cl_ord_id,book,symbol,side,qty,ord_type,price,time_in_force. Order
    type and time in force by name (limit, market, day, ioc, ...) or FIX code."""
    orders = []
    with path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                ord_type = row.get("ord_type") or ("limit" if row.get("price") else "market")
                orders.append(BlotterOrder(
                    cl_ord_id=row["cl_ord_id"], book=row["book"], symbol=row["symbol"],
                    side=row["side"], qty=Decimal(row["qty"]),
                    ord_type=_code(ord_type, ORD_TYPES, "order type"),
                    price=Decimal(row["price"]) if row.get("price") else None,
                    time_in_force=_code(row.get("time_in_force") or "day", TIMES_IN_FORCE,
                                        "time in force")))
            except (KeyError, ArithmeticError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: invalid blotter row: {exc}") from exc
    return orders


class OmsSimulator(SimApplication):
    def __init__(self, *, port: int, state_dir: Path, host: str = "127.0.0.1",
                 sender: str = "OMS1", target: str = "FIXALLOC", password: str | None = None,
                 dictionary: Path | None = None,
                 on_message: Callable[[str, Any], None] | None = None,
                 tls: dict[str, str] | None = None,
                 extra: dict[str, str] | None = None, ack_allocations: bool = False,
                 clock: Clock | None = None) -> None:
        super().__init__(on_message)
        self.clock = clock or SystemClock()
        """Stamps the orders' TransactTime (a rehearsal's simulated day; default: now)."""
        self.password = password
        self.ack_allocations = ack_allocations
        """Answer each J with AllocationInstructionAck (P 87=0), as a booking OMS does."""
        self.executions: dict[str, list[ExecutionSeen]] = {}
        self.allocations: list[allocation_codec.JReceived] = []
        self.allocation_acks: list[allocation_codec.AllocAckFields] = []
        self.confirmations: list[confirm_codec.ConfirmationFields] = []
        self.allocation_reports: list[confirm_codec.AllocationReportFields] = []
        self.fragments: list[allocation_codec.JReceived] = []
        """Fragments of fragmented Js (TotNoAllocs); `allocations` gets the whole J once."""
        self._fragment_sets: dict[str, FragmentSet] = {}
        self.lifecycle: list[str] = []
        """One line per execution and post-trade message received, in order."""
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
            if j.tot_no_allocs is not None:
                whole = self._fragment(j)
                if whole is None:
                    return
                j = whole
            self._record(self.allocations, j, "allocation")
            if self.ack_allocations:
                self.engine.send(allocation_codec.build_allocation_ack(
                    alloc_id=j.alloc_id, status="0", transact_time=datetime.now(UTC),
                    text="booked"))
        elif msg_type == "P":
            self._record(self.allocation_acks, allocation_codec.parse_allocation_ack(message),
                         "allocation_ack")
        elif msg_type == "AK":
            self._record(self.confirmations, confirm_codec.parse_confirmation(message),
                         "confirmation")
        elif msg_type == "AS":
            report = confirm_codec.parse_allocation_report(message)
            self._record(self.allocation_reports, report, "allocation_report")
            if self.ack_allocations:
                self.engine.send(confirm_codec.build_allocation_report_ack(
                    report_id=report.report_id, alloc_id=report.alloc_id, status="0",
                    transact_time=datetime.now(UTC)))
        elif msg_type == "9":
            self._record(self.cancel_rejects, codec.parse_order_cancel_reject(message),
                         "cancel_reject")
        elif msg_type == "j":
            self._record(self.business_rejects, message.toString().replace("\x01", "|"),
                         "business_reject")
        else:
            raise fix.UnsupportedMessageType()

    def _fragment(self, j: allocation_codec.JReceived) -> allocation_codec.JReceived | None:
        """A fragment of a J: kept (a repeated one counts once) until the last one, which
        returns the whole J; each fragment is acknowledged P 87=3 when acking."""
        with self._cond:
            fs = self._fragment_sets.setdefault(j.alloc_id, FragmentSet(header=j))
            fresh = fs.add(j)
            if fresh:
                self.fragments.append(j)
        if fresh and self.ack_allocations:
            self.engine.send(allocation_codec.build_allocation_ack(
                alloc_id=j.alloc_id, status="3", transact_time=datetime.now(UTC)))
        if not (fresh and j.last_fragment):
            return None
        with self._cond:
            del self._fragment_sets[j.alloc_id]
        return fs.assembled()

    def _record(self, into: list[Any], item: Any, kind: str) -> None:
        with self._cond:
            into.append(item)
            if kind != "business_reject":
                self.lifecycle.append(describe(kind, item))
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
            received_at=datetime.now(UTC), exec_ref_id=codec.get_str(message, T.ExecRefID),
            exec_trans_type=codec.get_str(message, T.ExecTransType), leaves_qty=f.leaves_qty)
        with self._cond:
            self.executions.setdefault(f.cl_ord_id, []).append(seen)
            self.lifecycle.append(describe("execution", seen))
            self._cond.notify_all()
        self._on_message("execution", seen)

    # -- actions --------------------------------------------------------------------------

    def send_order(self, order: BlotterOrder) -> bool:
        msg = codec.build_new_order_single(
            cl_ord_id=order.cl_ord_id, symbol=order.symbol, side=order.side, qty=order.qty,
            ord_type=order.ord_type, price=order.price, time_in_force=order.time_in_force,
            transact_time=self.clock.now())
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
            transact_time=self.clock.now())
        return self.engine.send(msg)

    def send_replace(self, order: BlotterOrder, cl_ord_id: str, *, qty: Decimal,
                     price: Decimal | None = None, orig_cl_ord_id: str | None = None,
                     preallocations: tuple[tuple[str, Decimal], ...] | None = None,
                     text: str | None = None) -> bool:
        """A cancel/replace (35=G) of `order` (or of its replacement `orig_cl_ord_id`):
        new quantity and price; NoAllocs only when `preallocations` is given."""
        msg = replace_codec.build_cancel_replace(
            cl_ord_id=cl_ord_id, orig_cl_ord_id=orig_cl_ord_id or order.cl_ord_id,
            broker_order_id=None, symbol=order.symbol, side=order.side, qty=qty,
            ord_type=order.ord_type, price=order.price if price is None else price,
            time_in_force=order.time_in_force, transact_time=self.clock.now(),
            book=order.book, text=text)
        for account, share in preallocations or ():
            entry = codec.group(T.NoAllocs, T.AllocAccount, [T.AllocAccount, T.AllocQty])
            entry.setField(T.AllocAccount, account)
            entry.setField(T.AllocQty, codec.fmt(share))
            msg.addGroup(entry)
        return self.engine.send(msg)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def allocation_for(self, cl_ord_id: str) -> allocation_codec.JReceived | None:
        """The first J (the New) for the order."""
        return next((j for j in self.allocations if cl_ord_id in j.cl_ord_ids), None)

    def allocations_for(self, cl_ord_id: str) -> list[allocation_codec.JReceived]:
        """Every J for the order in the order received: the New, its Replaces and Cancels."""
        return [j for j in self.allocations if cl_ord_id in j.cl_ord_ids]

    def last_execution(self, cl_ord_id: str) -> ExecutionSeen | None:
        seen = self.executions.get(cl_ord_id)
        return seen[-1] if seen else None
