"""The broker simulator's confirmation desk: one ticket per allocation line, the AKs it
owes (new, replace, cancel; held, mismatched or status confirms as the plan says), and what
the gateway answers: AU (recorded; a rejection of a mismatched AK or of a status confirm is
answered with a correct AK 666=1), BH (the ticket's AK, echoing ConfirmReqID), AT
(recorded). Also the AS sent after an accepted J, and the scheduled busts/corrections.

AKs, ASs and busts are sent by the scheduler thread, each saved before it goes out; the
tickets and tasks still owed are in the saved state, and a restarted simulator schedules
them again once its session is logged on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import quickfix as fix

from gateway.clock import trade_date_of
from gateway.fix import codec, confirm_codec
from gateway.fix import tags as T
from gateway.fix.sim.booking import Booking, Line, Ticket
from gateway.fix.sim.common import SimEngine
from gateway.fix.sim.orders import SimOrder
from gateway.fix.sim.plans import CORRECT_NOW, PostTradePlan
from gateway.fix.sim.scheduler import Scheduler

_STATUS_TEXT = {"2": "account mismatched: check the account master",
                "3": "missing settlement instructions: check the SSIs"}


@dataclass(frozen=True)
class AllocationReportAckSeen:
    report_id: str
    alloc_id: str | None
    status: str
    rej_code: str | None
    text: str | None


class ConfirmationDesk:
    """Mixin of BrokerSimulator (through AllocationDesk): tickets, AKs, AU, BH, AS, AT."""

    # Provided by BrokerSimulator and AllocationDesk.
    engine: SimEngine
    orders: dict[str, SimOrder]
    bookings: dict[str, Booking]
    post_trade: PostTradePlan
    _lock: threading.RLock
    _inflight: threading.RLock
    _stopping: threading.Event
    _on_message: Callable[[str, Any], None]

    def _id(self) -> int:
        raise NotImplementedError

    def _save_state(self) -> None:
        raise NotImplementedError

    def _plan_for(self, alloc_id: str, ref_alloc_id: str | None,
                  cl_ord_ids: tuple[str, ...]) -> PostTradePlan:
        raise NotImplementedError

    def bust(self, order: SimOrder | str, exec_id: str) -> fix.Message:
        raise NotImplementedError

    def correct(self, order: SimOrder | str, exec_id: str, qty: Decimal | None,
                px: Decimal) -> fix.Message:
        raise NotImplementedError

    # -- set-up and saved state -------------------------------------------------------------

    def _init_confirmations(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        self.sent_confirmations: list[confirm_codec.ConfirmationFields] = []
        self.sent_allocation_reports: list[confirm_codec.AllocationReportFields] = []
        self.affirmations: dict[str, tuple[str, str | None]] = {}
        """ConfirmID -> (AffirmStatus, ConfirmRejReason) of the latest AU for it."""
        self.affirmation_log: list[confirm_codec.ConfirmationAckFields] = []
        self.confirmation_requests: list[confirm_codec.ConfirmationRequestFields] = []
        self.allocation_report_acks: list[AllocationReportAckSeen] = []
        self._by_confirm_id: dict[str, str] = {}
        self._todo: dict[str, dict[str, Any]] = {}
        self._scheduled: set[str] = set()
        self._next_ak_at = 0.0
        self.scheduler = Scheduler("sim-post-trade",
                                   on_error=lambda exc: self._on_message("error", repr(exc)))

    def _confirmations_state(self) -> dict[str, Any]:
        return {"tickets": [t.to_json() for t in self.tickets.values()],
                "todo": dict(self._todo)}

    def _load_confirmations_state(self, data: Mapping[str, Any]) -> None:
        self.tickets = {row["ticket_id"]: Ticket.from_json(row) for row in data["tickets"]}
        self._by_confirm_id = {cid: t.ticket_id for t in self.tickets.values()
                               for cid in t.confirm_ids}
        self._todo = dict(data["todo"])

    def _plan_for_ticket(self, t: Ticket) -> PostTradePlan:
        b = self.bookings.get(t.alloc_id)
        return self._plan_for(b.alloc_id, b.ref_alloc_id, b.cl_ord_ids) if b else self.post_trade

    def _resume_post_trade(self) -> None:
        """On logon: schedule what is owed and not scheduled (after a restart, everything)."""
        with self._lock:
            tickets = sorted((t for t in self.tickets.values()
                              if t.pending is not None and not t.held and not t.void),
                             key=lambda t: int(t.ticket_id[1:]))
            todo = sorted(self._todo.items(), key=lambda kv: int(kv[0][1:]))
        for wid, item in todo:
            if item["kind"] == "as":
                self._schedule_todo(wid)
        self._schedule_aks([t.ticket_id for t in tickets])
        for wid, item in todo:
            if item["kind"] != "as":
                self._schedule_todo(wid, after_aks=True)

    # -- tickets (called under the lock) -----------------------------------------------------

    def _new_ticket(self, b: Booking, line: Line, plan: PostTradePlan) -> Ticket:
        variation = None
        if line.account in plan.mismatch:
            variation = f"mismatch:{plan.mismatch[line.account]}"
        elif line.account in plan.status_confirm:
            variation = f"status:{plan.status_confirm[line.account]}"
        t = Ticket(ticket_id=f"T{self._id():06d}", alloc_id=b.alloc_id,
                   individual_alloc_id=line.individual_alloc_id, account=line.account,
                   symbol=b.symbol, side=b.side, qty=line.qty, avg_px=line.avg_px,
                   trade_date=b.trade_date, settl_date=b.settl_date,
                   commission_per_share=plan.commission_per_share, variation=variation,
                   held=line.account in plan.missing_ak)
        self.tickets[t.ticket_id] = t
        return t

    def _cancel_ticket(self, t: Ticket) -> bool:
        """The line is gone: AK 666=2 if it was confirmed (True), else nothing is owed."""
        if t.confirm_ids and t.last_kind != "cancel":
            t.pending, t.held = "2", False
            return True
        t.pending, t.void = None, True
        return False

    # -- scheduled work ---------------------------------------------------------------------

    def _add_todo(self, kind: str, **fields: Any) -> str:
        wid = f"W{self._id():06d}"
        self._todo[wid] = {"kind": kind, **fields}
        return wid

    def _schedule_todo(self, wid: str, *, delay_s: float = 0.0, after_aks: bool = False) -> None:
        with self._lock:
            key = f"todo:{wid}"
            if key in self._scheduled or wid not in self._todo:
                return
            self._scheduled.add(key)
            now = time.monotonic()
            due = max(now, self._next_ak_at) if after_aks else now + delay_s
        self.scheduler.call_at(due, partial(self._run_todo, wid))

    def _schedule_ak(self, tid: str, *, now: bool = False) -> None:
        self._schedule_aks([tid], now=now)

    def _schedule_aks(self, tids: list[str], *, now: bool = False) -> None:
        """Schedule the AKs the tickets owe, in this order, `ak_delay_ms` apart (the first
        as soon as the AKs already scheduled allow), or all at once when `now`. AKs due
        together go in one batch: one save for the lot (a 200-account J would otherwise
        cost 200 fsyncs)."""
        batches: list[tuple[float, list[str]]] = []
        with self._lock:
            mono = time.monotonic()
            for tid in tids:
                t = self.tickets.get(tid)
                key = f"ak:{tid}"
                if t is None or t.pending is None or t.held or key in self._scheduled:
                    continue
                self._scheduled.add(key)
                if now:
                    due = mono
                else:
                    due = max(mono, self._next_ak_at)
                    self._next_ak_at = due + self._plan_for_ticket(t).ak_delay_ms / 1000
                if batches and batches[-1][0] == due:
                    batches[-1][1].append(tid)
                else:
                    batches.append((due, [tid]))
        for due, batch in batches:
            self.scheduler.call_at(due, partial(self._run_aks, batch))

    def _run_aks(self, tids: list[str]) -> None:
        follow: list[Callable[[], None]] = []
        msgs: list[fix.Message] = []
        with self._inflight:
            if self._stopping.is_set():
                return
            with self._lock:
                for tid in tids:
                    self._scheduled.discard(f"ak:{tid}")
                    t = self.tickets[tid]
                    if t.pending is None or t.held:
                        continue
                    msg, kind = self._confirmation(t)
                    msgs.append(msg)
                    plan = self._plan_for_ticket(t)
                    if kind == "status" and plan.status_confirm_fix == "timer":
                        wid = self._add_todo("status_fix", ticket=tid)
                        follow.append(partial(self._schedule_todo, wid,
                                              delay_s=plan.status_confirm_fix_ms / 1000))
            if not msgs:
                return
            self._save_state()
            for msg in msgs:
                self._send_confirmation(msg)
        for step in follow:
            step()

    def _confirmation(self, t: Ticket) -> tuple[fix.Message, str]:
        """The AK the ticket owes, with its ConfirmID reserved and the ticket updated."""
        trans = t.pending if t.confirm_ids else "0"
        assert trans is not None
        if trans == "2":
            kind = "cancel"
        elif not t.confirm_ids and t.variation:
            kind = t.variation.split(":")[0]
        else:
            kind = "confirm"
        detail = t.variation.split(":")[1] if t.variation else ""
        econ = t.economics(detail if kind == "mismatch" else None)
        if kind == "status":
            ctype, cstatus = "1", detail
        elif kind == "cancel":
            ctype, cstatus = t.last_confirm
        else:
            ctype, cstatus = "2", "4"
        text = {"status": _STATUS_TEXT.get(cstatus),
                "cancel": "allocation line cancelled"}.get(kind)
        confirm_id = f"CNF{self._id():06d}"
        msg = confirm_codec.build_confirmation(
            confirm_id=confirm_id, trans_type=trans, confirm_type=ctype, confirm_status=cstatus,
            alloc_id=t.alloc_id, individual_alloc_id=t.individual_alloc_id, account=t.account,
            qty=econ.qty, side=t.side, symbol=t.symbol, avg_px=econ.avg_px, gross=econ.gross,
            net_money=econ.net_money, trade_date=t.trade_date, settl_date=econ.settl_date,
            transact_time=datetime.now(UTC),
            confirm_ref_id=t.confirm_ids[-1] if trans in ("1", "2") else None,
            confirm_req_id=t.confirm_req_id, commission=econ.commission, text=text)
        t.confirm_ids.append(confirm_id)
        self._by_confirm_id[confirm_id] = t.ticket_id
        t.pending, t.confirm_req_id, t.affirm_status = None, None, None
        t.last_kind, t.last_confirm = kind, (ctype, cstatus)
        return msg, kind

    def _send_confirmation(self, msg: fix.Message) -> None:
        fields = confirm_codec.parse_confirmation(msg)
        self.sent_confirmations.append(fields)
        self.engine.send(msg)
        self._on_message("confirmation", fields)

    def _run_todo(self, wid: str) -> None:
        with self._inflight:
            if self._stopping.is_set():
                return
            with self._lock:
                self._scheduled.discard(f"todo:{wid}")
                item = self._todo.pop(wid, None)
            if item is None:
                return
            kind = item["kind"]
            try:
                if kind == "as":
                    self._send_allocation_report(item["alloc_id"])
                elif kind == "status_fix":
                    self._fix_status_confirm(item["ticket"])
                else:
                    order = self.orders[item["cl_ord_id"]]
                    ex = order.executions[int(item["index"])]
                    if kind == "bust":
                        self.bust(order, ex.latest_exec_id)
                    else:
                        self.correct(order, ex.latest_exec_id, None, Decimal(item["px"]))
            except (KeyError, IndexError, ValueError) as exc:
                self._save_state()
                self._on_message("error", f"{kind}: {exc!r}")

    def _fix_status_confirm(self, tid: str) -> None:
        with self._lock:
            t = self.tickets[tid]
            due = t.last_kind == "status" and t.pending is None
            if due:
                t.pending = "1"
        self._save_state()
        if due:
            self._schedule_ak(tid, now=True)

    def _send_allocation_report(self, alloc_id: str) -> None:
        with self._lock:
            b = self.bookings[alloc_id]
            if b.tickets:
                lines = [(self.tickets[tid].account, self.tickets[tid].qty)
                         for tid in b.tickets.values()]
            else:
                lines = [(ln.account, ln.qty) for ln in b.lines]
            report_id = f"AS{self._id():06d}"
        plan = self._plan_for(b.alloc_id, b.ref_alloc_id, b.cl_ord_ids)
        text = "sell-side booking"
        if plan.as_move:
            text += f": {plan.as_move[2]} moved from {plan.as_move[0]} to {plan.as_move[1]}"
        self._save_state()
        msg = confirm_codec.build_allocation_report(
            report_id=report_id, alloc_id=alloc_id, side=b.side, symbol=b.symbol,
            quantity=b.quantity, avg_px=b.avg_px, trade_date=b.trade_date, lines=lines,
            transact_time=datetime.now(UTC), text=text)
        fields = confirm_codec.parse_allocation_report(msg)
        self.sent_allocation_reports.append(fields)
        self.engine.send(msg)
        self._on_message("allocation_report", fields)

    # -- AU, BH, AT -------------------------------------------------------------------------

    def _on_confirmation_ack(self, message: fix.Message) -> None:
        au = confirm_codec.parse_confirmation_ack(message)
        fix_tid = None
        with self._lock:
            self.affirmation_log.append(au)
            self.affirmations[au.confirm_id] = (au.affirm_status, au.rej_reason)
            tid = self._by_confirm_id.get(au.confirm_id)
            t = self.tickets.get(tid) if tid else None
            if t is not None and t.confirm_ids[-1] == au.confirm_id:
                t.affirm_status = au.affirm_status
                plan = self._plan_for_ticket(t)
                if au.affirm_status == confirm_codec.CONFIRM_REJECTED and t.pending is None and (
                        (t.last_kind == "mismatch" and plan.correct_mismatch_on_reject)
                        or (t.last_kind == "status" and plan.status_confirm_fix == CORRECT_NOW)):
                    t.pending = "1"
                    fix_tid = t.ticket_id
        if fix_tid is not None:  # an AU that only records is saved with the next change
            self._save_state()
            self._schedule_ak(fix_tid, now=True)
        self._on_message("affirmation", au)

    def _on_confirmation_request(self, message: fix.Message) -> None:
        req = confirm_codec.parse_confirmation_request(message)
        refusal: fix.Message | None = None
        with self._lock:
            self.confirmation_requests.append(req)
            t = self._ticket_for(req)
            if t is None or t.void or t.last_kind == "cancel":
                refusal = self._request_rejected(req, t)
            else:
                t.confirm_req_id, t.held = req.confirm_req_id, False
                if t.pending is None:
                    t.pending = "1" if t.confirm_ids else "0"
        self._save_state()
        if refusal is not None:
            self._send_confirmation(refusal)
        elif t is not None:
            self._schedule_ak(t.ticket_id, now=True)
        self._on_message("confirmation_request", req)

    def _ticket_for(self, req: confirm_codec.ConfirmationRequestFields) -> Ticket | None:
        """The ticket a BH names: by AllocID and IndividualAllocID (or account), followed
        through the Replaces of that J."""
        named = self.bookings.get(req.alloc_id or "")
        if named is None and req.individual_alloc_id:
            named = next((b for b in self.bookings.values() if any(
                ln.individual_alloc_id == req.individual_alloc_id for ln in b.lines)), None)
        if named is None:
            return None
        account = next((ln.account for ln in named.lines
                        if ln.individual_alloc_id == req.individual_alloc_id), req.account)
        if account is None:
            return None
        latest, seen = named, {named.alloc_id}
        while latest.replaced_by and latest.replaced_by not in seen:
            seen.add(latest.replaced_by)
            latest = self.bookings.get(latest.replaced_by, latest)
        tid = latest.tickets.get(account) or named.tickets.get(account)
        return self.tickets.get(tid) if tid else None

    def _request_rejected(self, req: confirm_codec.ConfirmationRequestFields,
                          t: Ticket | None) -> fix.Message:
        """AK 773=3 665=5: the BH names no line the broker can confirm."""
        now = datetime.now(UTC)
        econ = t.economics() if t else None
        return confirm_codec.build_confirmation(
            confirm_id=f"CNF{self._id():06d}", confirm_type="3", confirm_status="5",
            alloc_id=req.alloc_id or "UNKNOWN",
            individual_alloc_id=req.individual_alloc_id or "UNKNOWN",
            account=req.account or (t.account if t else "UNKNOWN"),
            qty=econ.qty if econ else Decimal(0), side=t.side if t else "buy",
            symbol=t.symbol if t else "UNKNOWN", avg_px=econ.avg_px if econ else Decimal(0),
            gross=econ.gross if econ else Decimal(0),
            net_money=econ.net_money if econ else Decimal(0),
            trade_date=t.trade_date if t else trade_date_of(now).isoformat(),
            settl_date=t.settl_date if t else None, transact_time=now,
            confirm_req_id=req.confirm_req_id,
            text="allocation line cancelled" if t else "no such allocation line")

    def _on_allocation_report_ack(self, message: fix.Message) -> None:
        seen = AllocationReportAckSeen(
            report_id=codec.require_str(message, T.AllocReportID),
            alloc_id=codec.get_str(message, T.AllocID),
            status=codec.require_str(message, T.AllocStatus),
            rej_code=codec.get_str(message, T.AllocRejCode),
            text=codec.get_str(message, T.Text))
        self.allocation_report_acks.append(seen)
        self._on_message("allocation_report_ack", seen)

    # -- triggers tests and operators call ---------------------------------------------------

    def reissue_confirmation(self, account: str, alloc_id: str | None = None) -> str:
        """Send a correct AK 666=1 for the account's ticket now (the 'later trigger' of a
        status confirm or any other ticket); returns the ticket id."""
        with self._lock:
            candidates = [t for t in self.tickets.values() if t.account == account
                          and (alloc_id is None or t.alloc_id == alloc_id)
                          and not t.void and t.last_kind != "cancel"]
            if not candidates:
                raise KeyError(f"no live confirmation ticket for {account}")
            t = candidates[-1]
            t.held = False
            if t.pending is None:
                t.pending = "1" if t.confirm_ids else "0"
        self._save_state()
        self._schedule_ak(t.ticket_id, now=True)
        return t.ticket_id

    def tickets_of(self, alloc_id: str) -> dict[str, Ticket]:
        """Account -> confirmation ticket of a J (after a Replace, of the J that replaced it)."""
        with self._lock:
            b = self.bookings[alloc_id]
            return {acct: self.tickets[tid] for acct, tid in b.tickets.items()}
