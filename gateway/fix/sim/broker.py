"""`fixalloc sim broker`: a FIX 4.4 acceptor that behaves like an executing broker.

It acknowledges orders, fills them in configurable partial fills at configurable prices,
honours cancels, and answers each AllocationInstruction with P received then accepted
(or a block reject when Σ AllocQty or the quantity does not match what it executed).

Like a real broker it remembers its orders across its own restarts: every change is
written to `STATE_DIR/broker-state.json` (with its FIX store beside it), and a restarted
simulator resumes filling the orders it had working. A J repeated with PossDupFlag (a
resend) is recognised by its AllocID and not booked or answered twice.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import quickfix as fix

from gateway.clock import trade_date_of
from gateway.fix import allocation_codec, codec
from gateway.fix import tags as T
from gateway.fix.sim.common import SimApplication, SimEngine


@dataclass(frozen=True)
class FillPlan:
    fills: int = 10
    interval_ms: int = 100
    lot: int = 100
    prices: tuple[Decimal, ...] = ()
    """Prices cycled over the fills; empty means a small walk around the limit price."""
    first_fill_delay_ms: int = 50
    done_for_day_at: Decimal | None = None
    """Stop filling at this fraction of the order and send DoneForDay (150=3)."""


@dataclass
class SimOrder:
    broker_order_id: str
    cl_ord_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal | None
    cum_qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    status: str = "0"
    fills_sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def avg_px(self) -> Decimal:
        if not self.cum_qty:
            return Decimal(0)
        return (self.notional / self.cum_qty).quantize(Decimal("0.000001"))


class BrokerSimulator(SimApplication):
    def __init__(self, *, port: int, state_dir: Path, sender: str = "BRKA",
                 target: str = "FIXALLOC", plan: FillPlan | None = None,
                 dictionary: Path | None = None,
                 on_message: Callable[[str, Any], None] | None = None,
                 tls: dict[str, str] | None = None) -> None:
        super().__init__(on_message)
        self.plan = plan or FillPlan()
        self.orders: dict[str, SimOrder] = {}
        self.allocations: list[allocation_codec.JReceived] = []
        self.repeated_allocations: list[allocation_codec.JReceived] = []
        """J received again with PossDupFlag/PossResend: recognised, not booked twice."""
        self.rejects: list[str] = []
        self.dont_knows: list[tuple[str, str]] = []
        self.sent_fills: list[fix.Message] = []
        self._lock = threading.Lock()
        self._inflight = threading.Lock()
        self._stopping = threading.Event()
        self._state_file = state_dir / "broker-state.json"
        self._next_id = 1
        self._booked: set[str] = set()
        self._load_state()
        self.engine = SimEngine(self, role="acceptor", sender=sender, target=target, port=port,
                                state_dir=state_dir, dictionary=dictionary, tls=tls)

    # -- state that survives a restart ------------------------------------------------------

    def _id(self) -> int:
        with self._lock:
            value = self._next_id
            self._next_id += 1
        return value

    def _load_state(self) -> None:
        if not self._state_file.exists():
            return
        data = json.loads(self._state_file.read_text(encoding="utf-8"))
        self._next_id = int(data["next_id"])
        for row in data["orders"]:
            order = SimOrder(
                broker_order_id=row["broker_order_id"], cl_ord_id=row["cl_ord_id"],
                symbol=row["symbol"], side=row["side"], qty=Decimal(row["qty"]),
                price=Decimal(row["price"]) if row["price"] is not None else None,
                cum_qty=Decimal(row["cum_qty"]), notional=Decimal(row["notional"]),
                status=row["status"], fills_sent=int(row["fills_sent"]))
            self.orders[order.cl_ord_id] = order
        self._booked = set(data.get("allocations", []))

    def _save_state(self) -> None:
        """Written after every change, atomically (write, fsync, rename)."""
        with self._lock:
            data = {"next_id": self._next_id, "allocations": sorted(self._booked),
                    "orders": [{"broker_order_id": o.broker_order_id, "cl_ord_id": o.cl_ord_id,
                                "symbol": o.symbol, "side": o.side, "qty": str(o.qty),
                                "price": None if o.price is None else str(o.price),
                                "cum_qty": str(o.cum_qty), "notional": str(o.notional),
                                "status": o.status, "fills_sent": o.fills_sent}
                               for o in self.orders.values()]}
            tmp = self._state_file.with_suffix(".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self._state_file)

    def start(self) -> None:
        super().start()
        for order in self.orders.values():
            if order.status in ("0", "1"):
                threading.Thread(target=self._fill_loop, args=(order, order.fills_sent),
                                 daemon=True, name=f"sim-fills-{order.cl_ord_id}").start()

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        for order in self.orders.values():
            order.stop.set()
        with self._inflight:  # a fill being made finishes before the engine goes
            super().stop()

    # -- quickfix callbacks (kept thin: fills run on their own thread) ---------------------

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        if codec.msg_type(message) == "3":
            self.rejects.append(message.toString().replace("\x01", "|"))

    def on_app_message(self, msg_type: str, message: fix.Message) -> None:
        if msg_type == "D":
            self._on_new_order(message)
        elif msg_type == "F":
            self._on_cancel(message)
        elif msg_type == "J":
            self._on_allocation(message)
        elif msg_type == "Q":
            self.dont_knows.append((codec.get_str(message, T.ExecID) or "",
                                    codec.get_str(message, T.Text) or ""))
        elif msg_type == "j":
            self.rejects.append(message.toString().replace("\x01", "|"))
        else:
            raise fix.UnsupportedMessageType()

    # -- behaviour ------------------------------------------------------------------------

    def _on_new_order(self, message: fix.Message) -> None:
        cl_ord_id = codec.require_str(message, T.ClOrdID)
        with self._lock:
            if cl_ord_id in self.orders:
                return  # a resent D: the order already exists
            order = SimOrder(
                broker_order_id=f"BRK{self._next_id:06d}", cl_ord_id=cl_ord_id,
                symbol=codec.require_str(message, T.Symbol),
                side=codec.SIDE_FROM_FIX[codec.require_str(message, T.Side)],
                qty=codec.require_decimal(message, T.OrderQty),
                price=codec.get_decimal(message, T.Price))
            self._next_id += 1
            self.orders[cl_ord_id] = order
        self._report(order, exec_type="0", last_qty=Decimal(0), last_px=Decimal(0))
        self._on_message("order", cl_ord_id)
        threading.Thread(target=self._fill_loop, args=(order, 0), daemon=True,
                         name=f"sim-fills-{cl_ord_id}").start()

    def fill_schedule(self, order: SimOrder) -> list[tuple[Decimal, Decimal]]:
        """(qty, px) per fill: equal lot-rounded slices, the last takes the rest."""
        plan = self.plan
        target = order.qty
        if plan.done_for_day_at is not None:
            target = (order.qty * plan.done_for_day_at).quantize(Decimal(1), rounding=ROUND_DOWN)
        n = max(1, plan.fills)
        lot = Decimal(plan.lot)
        slice_qty = ((target / n) / lot).quantize(Decimal(1), rounding=ROUND_DOWN) * lot
        qtys = [slice_qty] * (n - 1) + [target - slice_qty * (n - 1)]
        base = order.price if order.price is not None else Decimal("100.00")
        offsets = [Decimal(x) / 100 for x in (-10, -4, -7, -2, -9, -5, -1, -8, -3, -6)]
        prices = plan.prices or tuple(base + off for off in offsets)
        return [(q, prices[i % len(prices)]) for i, q in enumerate(qtys) if q > 0]

    def _fill_loop(self, order: SimOrder, start: int) -> None:
        if order.stop.wait(self.plan.first_fill_delay_ms / 1000):
            return
        schedule = self.fill_schedule(order)
        for i, (qty, px) in enumerate(schedule[start:], start=start):
            if i > start and order.stop.wait(self.plan.interval_ms / 1000):
                return
            # One fill at a time, and stop() waits for it: a fill is either not made, or
            # made, saved and handed to quickfix (whose store resends it if the socket
            # never carried it). State before the report, so a restart never re-sends a
            # fill as a new one.
            with self._inflight:
                if self._stopping.is_set():
                    return
                with self._lock:
                    if order.status in ("2", "4", "3"):
                        return
                    order.cum_qty += qty
                    order.notional += qty * px
                    order.fills_sent += 1
                    order.status = "2" if order.cum_qty >= order.qty else "1"
                self.sent_fills.append(self._report(order, exec_type="F", last_qty=qty,
                                                    last_px=px))
        if self.plan.done_for_day_at is not None and order.status == "1":
            order.status = "3"
            self._report(order, exec_type="3", last_qty=Decimal(0), last_px=Decimal(0))

    def _on_cancel(self, message: fix.Message) -> None:
        orig = codec.require_str(message, T.OrigClOrdID)
        cancel_id = codec.require_str(message, T.ClOrdID)
        order = self.orders.get(orig)
        if order is None or order.status in ("2", "3", "4"):
            self.engine.send(codec.build_order_cancel_reject(
                order_id=order.broker_order_id if order else "NONE", cl_ord_id=cancel_id,
                orig_cl_ord_id=orig, ord_status=order.status if order else "8",
                reason="1" if order is None else "0",
                text="unknown order" if order is None else "too late to cancel"))
            return
        order.stop.set()
        with self._lock:
            order.status = "4"
        self._report(order, exec_type="4", last_qty=Decimal(0), last_px=Decimal(0),
                     cl_ord_id=codec.require_str(message, T.ClOrdID), orig_cl_ord_id=orig)

    def _report(self, order: SimOrder, *, exec_type: str, last_qty: Decimal, last_px: Decimal,
                cl_ord_id: str | None = None, orig_cl_ord_id: str | None = None) -> fix.Message:
        now = datetime.now(UTC)
        leaves = Decimal(0) if order.status in ("2", "3", "4") else order.qty - order.cum_qty
        # The ExecID is reserved and the state (with the change being reported) saved
        # before the report goes out: a restarted simulator never reuses an ExecID.
        exec_no = self._id()
        self._save_state()
        msg = codec.build_execution_report(
            order_id=order.broker_order_id, cl_ord_id=cl_ord_id or order.cl_ord_id,
            orig_cl_ord_id=orig_cl_ord_id, exec_id=f"{order.broker_order_id}-X{exec_no}",
            exec_type=exec_type, ord_status=order.status, symbol=order.symbol, side=order.side,
            order_qty=order.qty, last_qty=last_qty, last_px=last_px, cum_qty=order.cum_qty,
            avg_px=order.avg_px, leaves_qty=leaves, book=None, transact_time=now,
            trade_date=trade_date_of(now).isoformat())
        self.engine.send(msg)
        return msg

    def resend_as_duplicate(self, report: fix.Message, *, flag: int = T.PossDupFlag) -> None:
        """Send a stored ER again under a new MsgSeqNum with PossDupFlag or PossResend set."""
        copy = fix.Message(report.toString(), False)
        header = copy.getHeader()
        header.setField(flag, "Y")
        if flag == T.PossDupFlag:
            header.setField(T.OrigSendingTime, header.getField(T.SendingTime))
        self.engine.send(copy)

    def send_raw_report(self, order: SimOrder, *, exec_id: str, last_qty: Decimal,
                        last_px: Decimal, with_trade_date: bool = True) -> fix.Message:
        """Send a fill with a chosen ExecID (tests: conflicting repeats, unknown orders)."""
        now = datetime.now(UTC)
        msg = codec.build_execution_report(
            order_id=order.broker_order_id, cl_ord_id=order.cl_ord_id, exec_id=exec_id,
            exec_type="F", ord_status="1", symbol=order.symbol, side=order.side,
            order_qty=order.qty, last_qty=last_qty, last_px=last_px,
            cum_qty=order.cum_qty + last_qty, avg_px=last_px,
            leaves_qty=order.qty - order.cum_qty - last_qty, book=None, transact_time=now,
            trade_date=trade_date_of(now).isoformat() if with_trade_date else None)
        self.engine.send(msg)
        return msg

    def _on_allocation(self, message: fix.Message) -> None:
        j = allocation_codec.parse_allocation_instruction(message)
        if codec.is_poss_dup(message) and j.alloc_id in self._booked:
            # A resend of a J already booked: a real broker does not book it twice.
            self.repeated_allocations.append(j)
            return
        self.allocations.append(j)
        with self._lock:
            self._booked.add(j.alloc_id)
        self._save_state()
        now = datetime.now(UTC)
        self.engine.send(allocation_codec.build_allocation_ack(alloc_id=j.alloc_id, status="3",
                                                    transact_time=now))
        executed = sum((o.cum_qty for o in self.orders.values()
                        if o.cl_ord_id.split("~")[0] in {c.split("~")[0] for c in j.cl_ord_ids}),
                       Decimal(0))
        total = sum((Decimal(str(line["qty"])) for line in j.lines), Decimal(0))
        build_ack = allocation_codec.build_allocation_ack
        if total != j.quantity:
            ack = build_ack(alloc_id=j.alloc_id, status="1", rej_code="8", transact_time=now,
                            text=f"sum of AllocQty {total} != {j.quantity}")
        elif j.quantity > executed:
            ack = build_ack(alloc_id=j.alloc_id, status="1", rej_code="1", transact_time=now,
                            text=f"Quantity {j.quantity} > executed {executed}")
        else:
            ack = build_ack(alloc_id=j.alloc_id, status="0", transact_time=now)
        self.engine.send(ack)
        self._on_message("allocation", j)
