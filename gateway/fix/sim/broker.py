"""`fixalloc sim broker`: a FIX 4.4 acceptor that behaves like an executing broker.

It acknowledges orders, fills them in configurable partial fills at configurable prices,
honours cancels, busts and corrects fills (150=H/G with ExecRefID, optionally in the FIX
4.2 form), and plays the post-trade lifecycle under a PostTradePlan (allocation_desk.py):
P for each J (received, then accepted or rejected), J Replace/Cancel, fragments, one AK
per allocation line, AU and BH answered, an optional AS.

Like a real broker it remembers its orders and its allocation book across its own
restarts: every change is written to `STATE_DIR/broker-state.json` (with its FIX store
beside it), and a restarted simulator resumes filling the orders it had working and sends
the AKs and other messages it still owed. A J repeated with PossDupFlag (a resend) is
recognised by its AllocID and not booked or answered twice.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import quickfix as fix

from gateway.clock import trade_date_of
from gateway.fix import codec
from gateway.fix import tags as T
from gateway.fix.allocation_codec import JReceived
from gateway.fix.sim.allocation_desk import AllocationDesk
from gateway.fix.sim.common import SimApplication, SimEngine
from gateway.fix.sim.order_changes import OrderChanges
from gateway.fix.sim.orders import DONE, SimExecution, SimOrder, order_root
from gateway.fix.sim.plans import FillPlan, PostTradePlan

__all__ = ["BrokerSimulator", "FillPlan", "PostTradePlan", "SimExecution", "SimOrder"]


class BrokerSimulator(AllocationDesk, OrderChanges, SimApplication):
    """The broker. What tests read: `orders` (SimOrder by ClOrdID, with their executions),
    `sent_fills`, `sent_corrections`, `dont_knows`, `rejects`; `allocations` (each J once,
    a fragmented one assembled), `repeated_allocations`, `fragments`, `bookings` (by
    AllocID, with status), `sent_acks` (P), `tickets` / `tickets_of(alloc_id)` (one per
    account line, with its ConfirmIDs and state), `sent_confirmations` (AK),
    `affirmations` (ConfirmID -> (AffirmStatus, ConfirmRejReason) of the latest AU) and
    `affirmation_log`, `confirmation_requests` (BH), `sent_allocation_reports` (AS),
    `allocation_report_acks` (AT); `preallocation_acks`, `replaces`, `replace_rejects`
    (order_changes.py; `preallocation_answer` says how a pre-allocation is answered). What
    they call: `bust`, `correct`,
    `reissue_confirmation`, `set_post_trade`, `send_raw_report`, `resend_as_duplicate`.
    """

    def __init__(self, *, port: int, state_dir: Path, sender: str = "BRKA",
                 target: str = "FIXALLOC", plan: FillPlan | None = None,
                 dictionary: Path | None = None,
                 on_message: Callable[[str, Any], None] | None = None,
                 tls: dict[str, str] | None = None,
                 post_trade: PostTradePlan | None = None,
                 post_trade_overrides: Mapping[str, PostTradePlan] | None = None,
                 durable: bool = True) -> None:
        SimApplication.__init__(self, on_message)
        self.durable = durable
        """Save state after every change (restartable). A benchmark turns it off: the file
        holds every order, so writing it per fill costs more as the run goes on."""
        self.plan = plan or FillPlan()
        self.orders: dict[str, SimOrder] = {}
        self.allocations: list[JReceived] = []
        """Every J received (a fragmented one once, when complete), resends excepted."""
        self.repeated_allocations: list[JReceived] = []
        """J received again with PossDupFlag/PossResend: recognised, not booked twice."""
        self.rejects: list[str] = []
        self.dont_knows: list[tuple[str, str]] = []
        self.sent_fills: list[fix.Message] = []
        self.sent_corrections: list[fix.Message] = []
        """Every bust (150=H) and correction (150=G) sent."""
        self._lock = threading.RLock()
        self._inflight = threading.RLock()
        self._stopping = threading.Event()
        self._state_file = state_dir / "broker-state.json"
        self._next_id = 1
        self._booked: set[str] = set()
        self._init_desk(post_trade, post_trade_overrides)
        self._init_order_changes()
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
            order = SimOrder.from_json(row)
            self.orders[order.cl_ord_id] = order
        self._booked = set(data.get("allocations", []))
        self._load_desk_state(data.get("post_trade"))

    def _save_state(self) -> None:
        """Written after every change, atomically (write, fsync, rename)."""
        if not self.durable:
            return
        with self._lock:
            data = {"next_id": self._next_id, "allocations": sorted(self._booked),
                    "orders": [o.to_json() for o in self.orders.values()],
                    "post_trade": self._desk_state()}
            tmp = self._state_file.with_suffix(".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self._state_file)

    def start(self) -> None:
        self._start_desk()
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
        self._stop_desk()
        with self._inflight:  # a fill or an AK being made finishes before the engine goes
            super().stop()

    # -- quickfix callbacks (kept thin: fills and AKs run on their own threads) ------------

    def onLogon(self, session_id: fix.SessionID) -> None:
        super().onLogon(session_id)
        self._resume_post_trade()

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        if codec.msg_type(message) == "3":
            self.rejects.append(message.toString().replace("\x01", "|"))

    def on_app_message(self, msg_type: str, message: fix.Message) -> None:
        if msg_type == "D":
            self._on_new_order(message)
        elif msg_type == "F":
            self._on_cancel(message)
        elif msg_type == "G":
            self._on_replace(message)
        elif msg_type == "J":
            self._on_allocation(message)
        elif msg_type == "AU":
            self._on_confirmation_ack(message)
        elif msg_type == "BH":
            self._on_confirmation_request(message)
        elif msg_type == "AT":
            self._on_allocation_report_ack(message)
        elif msg_type == "Q":
            self.dont_knows.append((codec.get_str(message, T.ExecID) or "",
                                    codec.get_str(message, T.Text) or ""))
            self._on_message("dont_know", self.dont_knows[-1])
        elif msg_type == "j":
            self.rejects.append(message.toString().replace("\x01", "|"))
        else:
            raise fix.UnsupportedMessageType()

    # -- orders and fills -----------------------------------------------------------------

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
        if not self._take_preallocation(order, message):
            return
        self._report(order, exec_type="0", last_qty=Decimal(0), last_px=Decimal(0))
        self._answer_preallocation(order)
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
        scheduled_for = order.qty
        for i, (planned, px) in enumerate(schedule[start:], start=start):
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
                    if order.status in DONE:
                        return
                    # A cancel/replace may have changed the quantity since the schedule
                    # was made: the last fill takes the difference too, and no fill goes
                    # beyond the order. (Busted shares are not worked again.)
                    left = order.qty - order.cum_qty
                    last = i == len(schedule) - 1 and self.plan.done_for_day_at is None
                    qty = min(planned + (order.qty - scheduled_for if last else 0), left)
                    if qty <= 0:
                        return
                    order.cum_qty += qty
                    order.notional += qty * px
                    order.fills_sent += 1
                    order.status = "2" if order.cum_qty >= order.qty else "1"
                    completes = order.status == "2"

                def record(exec_id: str, qty: Decimal = qty, px: Decimal = px,
                           completes: bool = completes) -> None:
                    order.executions.append(SimExecution(exec_id=exec_id, qty=qty, px=px,
                                                         completed_order=completes))

                self.sent_fills.append(self._report(order, exec_type="F", last_qty=qty,
                                                    last_px=px, record=record))
        if self.plan.done_for_day_at is not None and order.status == "1":
            order.status = "3"
            self._report(order, exec_type="3", last_qty=Decimal(0), last_px=Decimal(0))

    def _on_cancel(self, message: fix.Message) -> None:
        orig = codec.require_str(message, T.OrigClOrdID)
        cancel_id = codec.require_str(message, T.ClOrdID)
        order = self.orders.get(order_root(orig))
        if order is None or order.status in DONE:
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
                cl_ord_id: str | None = None, orig_cl_ord_id: str | None = None,
                exec_ref_id: str | None = None, exec_trans_type: str | None = None,
                wire_exec_type: str | None = None, text: str | None = None,
                record: Callable[[str], None] | None = None) -> fix.Message:
        """Send an ER for the order as it is now. The ExecID is reserved (and `record` told
        of it) and the state, with the change being reported, saved before the report goes
        out: a restarted simulator never reuses an ExecID or re-sends a fill as new."""
        now = datetime.now(UTC)
        with self._lock:
            exec_id = f"{order.broker_order_id}-X{self._id()}"
            if record is not None:
                record(exec_id)
            leaves = order.leaves_qty
            self._save_state()
        msg = codec.build_execution_report(
            order_id=order.broker_order_id,
            cl_ord_id=cl_ord_id or order.current_cl_ord_id or order.cl_ord_id,
            orig_cl_ord_id=orig_cl_ord_id, exec_id=exec_id, text=text,
            exec_type=exec_type, ord_status=order.status, symbol=order.symbol, side=order.side,
            order_qty=order.qty, last_qty=last_qty, last_px=last_px, cum_qty=order.cum_qty,
            avg_px=order.avg_px, leaves_qty=leaves, book=None, transact_time=now,
            trade_date=trade_date_of(now).isoformat())
        if exec_ref_id is not None:
            msg.setField(T.ExecRefID, exec_ref_id)
        if exec_trans_type is not None:
            msg.setField(T.ExecTransType, exec_trans_type)
        if wire_exec_type is not None:
            msg.setField(T.ExecType, wire_exec_type)
        self.engine.send(msg)
        return msg

    # -- busts and corrections --------------------------------------------------------------

    def _order(self, order: SimOrder | str) -> SimOrder:
        return self.orders[order] if isinstance(order, str) else order

    def bust(self, order: SimOrder | str, exec_id: str, *, fix42: bool | None = None,
             fix42_only: bool | None = None) -> fix.Message:
        """Cancel a fill (150=H, ExecRefID = the latest ExecID of its chain): CumQty goes
        down and LeavesQty up by its quantity, AvgPx is recomputed. `exec_id` may be the
        fill's own ExecID or any correction's. FIX 4.2 form as the order's post-trade plan
        says unless given."""
        o = self._order(order)
        with self._inflight:
            with self._lock:
                ex = o.execution(exec_id)
                ref = ex.latest_exec_id
                o.apply_bust(ex)
            trans, wire = self._fix42_form(o, "1", ex, fix42, fix42_only)
            msg = self._report(o, exec_type="H", last_qty=ex.qty, last_px=ex.px,
                               exec_ref_id=ref, exec_trans_type=trans, wire_exec_type=wire)
        self.sent_corrections.append(msg)
        self._on_message("bust", (o.cl_ord_id, ref))
        return msg

    def correct(self, order: SimOrder | str, exec_id: str, qty: Decimal | None,
                px: Decimal, *, fix42: bool | None = None,
                fix42_only: bool | None = None) -> fix.Message:
        """Correct a fill (150=G) to `qty` (None: unchanged) at `px`; ExecRefID = the latest
        ExecID of its chain, and the correction's ExecID becomes the chain's latest."""
        o = self._order(order)
        with self._inflight:
            with self._lock:
                ex = o.execution(exec_id)
                ref = ex.latest_exec_id
                o.apply_correction(ex, ex.qty if qty is None else qty, px)

            def record(new_id: str) -> None:
                ex.latest_exec_id = new_id

            trans, wire = self._fix42_form(o, "2", ex, fix42, fix42_only)
            msg = self._report(o, exec_type="G", last_qty=ex.qty, last_px=ex.px,
                               exec_ref_id=ref, record=record, exec_trans_type=trans,
                               wire_exec_type=wire)
        self.sent_corrections.append(msg)
        self._on_message("correction", (o.cl_ord_id, ref, ex.qty, ex.px))
        return msg

    def _fix42_form(self, o: SimOrder, trans: str, ex: SimExecution, fix42: bool | None,
                    fix42_only: bool | None) -> tuple[str | None, str | None]:
        """(ExecTransType, ExecType on the wire) of a bust or correction: 20 is added in the
        FIX 4.2 form; in the 4.2-only form 150 is the fill's own 4.2 type, 1 or 2."""
        plan = self._plan_for(o.cl_ord_id, None, (o.cl_ord_id,))
        only = plan.fix42_only if fix42_only is None else fix42_only
        with_20 = only or (plan.fix42_corrections if fix42 is None else fix42)
        return (trans if with_20 else None,
                ("2" if ex.completed_order else "1") if only else None)

    # -- test helpers ---------------------------------------------------------------------

    def resend_as_duplicate(self, report: fix.Message, *, flag: int = T.PossDupFlag) -> None:
        """Send a stored ER again under a new MsgSeqNum with PossDupFlag (and
        OrigSendingTime) or PossResend set."""
        self.send_repeat(fix.Message(report.toString(), False), flag=flag)

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
