"""The quickfix Application: guard, decode, persist, enqueue, return. Nothing else.

Callbacks run on quickfix threads holding the GIL; business logic lives in the
dispatcher. ExecutionReports are deduplicated here by their durable insert, so a
PossDup/PossResend repeat never reaches the dispatcher twice.

A message the gateway cannot take (too large, over the session's rate, not recordable)
is refused on its own with a session Reject (35=3) naming the reason; nothing a peer
sends ends the process. Only a database that is gone does (exit 75, before the sequence
number advances, so the peer resends after the restart).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import quickfix as fix
import structlog

from gateway import faults
from gateway.alerts import Alerts
from gateway.clock import Clock, trade_date_of
from gateway.errors import EXIT_AUDIT
from gateway.events import (
    AllocationAckReceived,
    AllocationReportReceived,
    BlockOrderInvalid,
    BrokerReportReceived,
    CancelRejectedByBroker,
    CancelRequested,
    ConfirmationReceived,
    OmsAllocationAckReceived,
    ReplaceRequested,
    SessionRejectReceived,
    SessionStateChanged,
)
from gateway.fix import allocation_codec, codec, confirm_codec, replace_codec
from gateway.fix import tags as T
from gateway.fix.guard import fix_callback
from gateway.fix.logon_backoff import LogonBackoff
from gateway.fix.oms_orders import block_order
from gateway.fix.wire_log import Refusals
from gateway.inbox import Inbox
from gateway.metrics import METRICS
from gateway.persistence.store import Database, OrderGone, RecordedReport, ReportOutcome
from gateway.secrets import resolve_secret

log = structlog.get_logger("fixalloc.fix")

R = TypeVar("R")


@dataclass(frozen=True)
class SessionRole:
    name: str
    role: str  # "oms" | "broker"
    username: str | None = None
    password_env: str | None = None
    max_messages_per_second: float = 0.0
    """Application messages per second accepted from the peer; 0 means no limit."""
    burst: int = 0
    send_udfs: bool = True
    """Whether the peer's dictionary declares our strategy/vehicle UDFs inside NoAllocs."""
    header_fields: tuple[tuple[int, str], ...] = ()
    """SenderSubID/LocationID and TargetSubID/LocationID this counterparty expects on
    every message (quickfix C++ does not make them part of the session's identity)."""
    reconnect_seconds: float = 5.0


class MessageRefused(Exception):
    """This one inbound message is refused with a session Reject; the session goes on."""


class RateLimit:
    """A token bucket per session: `rate` messages a second, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = float(max(burst, 1, int(rate)))
        self._tokens = self.capacity
        self._at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def order_id_of(cl_ord_id: str) -> str:
    """Our child ClOrdIDs are the order id, with '~C<n>' appended for cancel requests and
    '~R<n>' for cancel/replace requests."""
    return cl_ord_id.split("~", 1)[0]


class GatewayApplication(fix.Application):  # type: ignore[misc]
    def __init__(
        self, roles: Mapping[str, SessionRole], db: Database, inbox: Inbox, clock: Clock,
        secrets_file: Path | None = None, refusals: Refusals | None = None,
        alerts: Alerts | None = None, backoff: LogonBackoff | None = None,
    ) -> None:
        super().__init__()
        self._roles = dict(roles)
        self._db = db
        self._inbox = inbox
        self._clock = clock
        self._secrets_file = secrets_file
        self._refusals = refusals or Refusals()
        self._alerts = alerts or Alerts(db, clock)
        self._backoff = backoff or LogonBackoff(300)
        self._limits = {key: RateLimit(r.max_messages_per_second, r.burst)
                        for key, r in self._roles.items() if r.max_messages_per_second > 0}
        # Why a session last went down (the peer's Logout text, a reset it asked for):
        # carried on the state change so a reconnect loop can be explained.
        self._why: dict[str, str] = {}
        self._lock = threading.Lock()

    def _role(self, session_id: fix.SessionID) -> SessionRole | None:
        return self._roles.get(session_id.toString())

    def role(self, key: str) -> SessionRole:
        return self._roles[key]

    # -- session events -----------------------------------------------------------------

    @fix_callback
    def onCreate(self, session_id: fix.SessionID) -> None:
        log.info("fix.session_created", session=session_id.toString())

    @fix_callback
    def onLogon(self, session_id: fix.SessionID) -> None:
        key = session_id.toString()
        log.info("fix.logon", session=key)
        self._refusals.clear(key)
        self._backoff.on_logon(key)
        with self._lock:
            reason = self._why.pop(key, "")
        self._inbox.put(SessionStateChanged(key, True, self._clock.now(), reason=reason))

    @fix_callback
    def onLogout(self, session_id: fix.SessionID) -> None:
        key = session_id.toString()
        log.info("fix.logout", session=key)
        with self._lock:
            reason = self._why.get(key, "")
        role = self._role(session_id)
        refused = (self._backoff.on_logout(session_id, role.reconnect_seconds)
                   if role is not None and role.role == "broker" else None)
        self._inbox.put(SessionStateChanged(key, False, self._clock.now(), reason=reason,
                                            refused=refused[0] if refused else 0,
                                            retry_seconds=refused[1] if refused else 0.0))

    @fix_callback
    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        role = self._role(session_id)
        if role is None:
            return
        self._stamp(message, role)
        if role.role != "broker" or codec.msg_type(message) != "A":
            return
        if role.username:
            message.setField(T.Username, role.username)
        if role.password_env:
            message.setField(
                T.Password, resolve_secret(role.name, role.password_env, self._secrets_file)
            )

    @fix_callback
    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        key = session_id.toString()
        role = self._role(session_id)
        mtype = codec.msg_type(message)
        refused = self._refusals.take(key, codec.seq_num(message), mtype)
        if mtype == "A" and refused:
            raise fix.RejectLogon(f"logon refused: {refused}")
        if mtype == "3":
            ref = codec.get_str(message, T.RefSeqNum)
            self._inbox.put(SessionRejectReceived(
                session=key, ref_seq_num=int(ref) if ref and ref.isdigit() else None,
                ref_msg_type=codec.get_str(message, T.RefMsgType),
                ref_tag=codec.get_str(message, T.RefTagID),
                reason=codec.get_str(message, T.SessionRejectReason),
                text=codec.get_str(message, T.Text), ts_recv=self._clock.now()))
            return
        if mtype == "5":
            with self._lock:
                self._why[key] = f"peer logout: {codec.get_str(message, T.Text) or 'no text'}"
            return
        if mtype != "A":
            return
        if codec.get_str(message, T.ResetSeqNumFlag) == "Y":
            with self._lock:
                self._why[key] = "peer logon with ResetSeqNumFlag(141)=Y"
        if role is None or role.role != "oms" or not role.password_env:
            return
        expected = resolve_secret(role.name, role.password_env, self._secrets_file)
        offered = message.getField(T.Password) if message.isSetField(T.Password) else None
        if offered != expected:
            self._alerts.raise_("logon_refused", severity="warning", session_id=key,
                                detail={"reason": "invalid username or password"},
                                throttle=True)
            raise fix.RejectLogon("invalid username or password")

    @fix_callback
    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        role = self._role(session_id)
        if role is not None:
            self._stamp(message, role)

    @staticmethod
    def _stamp(message: fix.Message, role: SessionRole) -> None:
        if role.header_fields:
            header = message.getHeader()
            for tag, value in role.header_fields:
                header.setField(tag, value)

    # -- application messages -----------------------------------------------------------

    @fix_callback
    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        role = self._role(session_id)
        mtype = codec.msg_type(message)
        key = session_id.toString()
        METRICS.app_messages.labels(session=key, msg_type=mtype).inc()
        refused = self._refusals.take(key, codec.seq_num(message), mtype)
        limit = self._limits.get(key)
        if refused is None and limit is not None and not limit.allow():
            refused = (f"over this session's limit of {limit.rate:g} messages per second: "
                       "resend later")
            self._alerts.raise_("rate_limited", severity="warning", session_id=key,
                                detail={"limit_per_second": limit.rate, "msg_type": mtype},
                                throttle=True)
        if refused is not None:
            self._refuse(message, session_id, refused)
            return
        if role is None:
            raise fix.UnsupportedMessageType()
        try:
            if role.role == "oms":
                self._from_oms(message, key, mtype)
            else:
                self._from_broker(message, key, mtype)
        except MessageRefused as exc:
            self._refuse(message, session_id, str(exc))

    def _refuse(self, message: fix.Message, session_id: fix.SessionID, reason: str) -> None:
        """Answer one message with a session Reject (373=99) and the reason; keep the session."""
        log.warning("fix.message_refused", session=session_id.toString(),
                    msg_type=codec.msg_type(message), seq_num=codec.seq_num(message),
                    reason=reason)
        METRICS.refused.labels(session=session_id.toString()).inc()
        fix.Session.sendToTarget(codec.build_session_reject(
            ref_seq_num=codec.seq_num(message), ref_msg_type=codec.msg_type(message),
            reason="99", text=reason), session_id)

    def _store(self, what: str, write: Callable[[], R]) -> R:
        """Persist before the callback returns; a failed write refuses this message only."""
        try:
            return write()
        except Exception as exc:
            if not self._db.ping():
                log.critical("audit.database_unavailable", what=what, exit_code=EXIT_AUDIT,
                             exc_info=True)
                os._exit(EXIT_AUDIT)
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            self._alerts.raise_("store_failed", detail={"what": what, "error": detail})
            raise MessageRefused(f"{what} could not be recorded") from exc

    def _from_oms(self, message: fix.Message, key: str, mtype: str) -> None:
        now = self._clock.now()
        if mtype == "D":
            event = block_order(message, key, now, self._db, self._store)
            if event is not None:
                self._inbox.put(event)
        elif mtype == "F":
            self._inbox.put(CancelRequested(
                session=key, cl_ord_id=codec.require_id(message, T.ClOrdID),
                orig_cl_ord_id=codec.require_id(message, T.OrigClOrdID),
                seq_num=codec.seq_num(message), ts_recv=now,
            ))
        elif mtype == "G":
            self._inbox.put(ReplaceRequested(
                session=key, fields=replace_codec.parse_cancel_replace(message),
                seq_num=codec.seq_num(message), ts_recv=now))
        elif mtype == "P":
            f = allocation_codec.parse_allocation_ack(message)
            self._inbox.put(OmsAllocationAckReceived(
                session=key, alloc_id=f.alloc_id, alloc_status=f.alloc_status,
                rej_code=f.rej_code, text=f.text, ts_recv=now))
        else:
            raise fix.UnsupportedMessageType()

    def _from_broker(self, message: fix.Message, key: str, mtype: str) -> None:
        now = self._clock.now()
        if mtype == "8":
            self._execution_report(message, key)
        elif mtype == "9":
            f9 = codec.parse_order_cancel_reject(message)
            self._inbox.put(CancelRejectedByBroker(
                session=key, order_id=order_id_of(f9.cl_ord_id), ord_status=f9.ord_status,
                reason=f9.reason, text=f9.text, ts_recv=now, cl_ord_id=f9.cl_ord_id,
                response_to=f9.response_to))
        elif mtype == "P":
            f = allocation_codec.parse_allocation_ack(message)
            self._inbox.put(AllocationAckReceived(
                session=key, alloc_id=f.alloc_id, alloc_status=f.alloc_status,
                rej_code=f.rej_code, text=f.text, rejected_lines=f.rejected_lines, ts_recv=now,
            ))
        elif mtype == "AK":
            self._confirmation(message, key, now)
        elif mtype == "AS":
            self._inbox.put(AllocationReportReceived(
                session=key, fields=confirm_codec.parse_allocation_report(message), ts_recv=now))
        else:
            raise fix.UnsupportedMessageType()

    def _confirmation(self, message: fix.Message, key: str, now: datetime) -> None:
        """Store the AK (pending) before returning; a resent copy is dropped here."""
        ak = confirm_codec.parse_confirmation(message)
        economics = {"qty": str(ak.qty), "side": ak.side, "avg_px": str(ak.avg_px),
                     "gross": str(ak.gross), "net_money": str(ak.net_money),
                     "commission": None if ak.commission is None else str(ak.commission),
                     "trade_date": ak.trade_date, "settl_date": ak.settl_date,
                     "copy": ak.copy, "text": ak.text}
        stored = self._store(f"confirmation {ak.confirm_id}", lambda: self._db.record_confirmation({
            "session_id": key, "confirm_id": ak.confirm_id, "confirm_ref_id": ak.confirm_ref_id,
            "confirm_req_id": ak.confirm_req_id, "trans_type": ak.trans_type,
            "confirm_type": ak.confirm_type, "confirm_status": ak.confirm_status,
            "alloc_id": ak.alloc_id, "individual_alloc_id": ak.individual_alloc_id,
            "account_id": ak.account, "economics_json": json.dumps(economics),
            "outcome": "pending", "received_at": now}))
        if stored is None:
            log.info("confirmation.duplicate_dropped", session=key, confirm_id=ak.confirm_id)
            return
        faults.point("confirmation_stored")
        self._inbox.put(ConfirmationReceived(session=key, confirmation_id=stored, fields=ak,
                                             ts_recv=now))

    def _trade_date(self, f: codec.ExecutionReportFields, order_trade_date: str | None,
                    message: fix.Message) -> str:
        """The dedupe key's date: the same for every copy of one fill, resent or not.

        TradeDate(75) when the broker sends it; else our order's trade date; else the
        New York date of the execution's own TransactTime, or of its original sending
        time. Never the date of arrival: a resend after midnight would key differently.
        """
        if f.trade_date:
            return f.trade_date
        if order_trade_date:
            return order_trade_date
        header = message.getHeader()
        for stamp in (f.transact_time, codec.get_str(header, T.OrigSendingTime),
                      codec.get_str(header, T.SendingTime)):
            ts = codec.parse_utc_timestamp(stamp)
            if ts is not None:
                return trade_date_of(ts).isoformat()
        return trade_date_of(self._clock.now()).isoformat()

    def _record_report(self, row: dict[str, Any], f: codec.ExecutionReportFields,
                       message: fix.Message) -> RecordedReport:
        try:
            return self._db.record_broker_report(row)
        except OrderGone:
            # Its order was archived after we last saw it: a report of no known order
            # (the dispatcher answers it with a DK), keyed by the report's own date.
            row.update(order_id=None, trade_date=self._trade_date(f, None, message))
            return self._db.record_broker_report(row)

    def _execution_report(self, message: fix.Message, key: str) -> None:
        now = self._clock.now()
        f = codec.parse_execution_report(message)
        order_id = order_id_of(f.cl_ord_id)
        order_trade_date = self._store(f"lookup of order {order_id}",
                                       lambda: self._db.order_trade_date(order_id))
        known = order_trade_date is not None
        trade_date = self._trade_date(f, order_trade_date, message)
        row: dict[str, Any] = {
            "session_id": key, "broker_order_id": f.broker_order_id, "exec_id": f.exec_id,
            "trade_date": trade_date, "order_id": order_id if known else None,
            "cl_ord_id": f.cl_ord_id, "exec_type": f.exec_type, "ord_status": f.ord_status,
            "last_qty": codec.fmt(f.last_qty), "last_px": codec.fmt(f.last_px),
            "cum_qty": codec.fmt(f.cum_qty), "avg_px": codec.fmt(f.avg_px),
            "leaves_qty": codec.fmt(f.leaves_qty), "text": f.text,
            "seq_num": codec.seq_num(message), "poss_dup": codec.is_poss_dup(message),
            "received_at": now, "transact_time": f.transact_time,
            "exec_ref_id": f.exec_ref_id, "exec_trans_type": f.exec_trans_type,
        }
        recorded = self._store(f"execution report {f.exec_id}",
                               lambda: self._record_report(row, f, message))
        known = row["order_id"] is not None
        if recorded.outcome is ReportOutcome.DUPLICATE:
            METRICS.duplicates.labels(session=key).inc()
            log.info("fill.duplicate_dropped", session=key, exec_id=f.exec_id,
                     cl_ord_id=f.cl_ord_id, poss_dup=row["poss_dup"])
            return
        if recorded.outcome is ReportOutcome.CONFLICT:
            existing = recorded.existing or {}
            self._alerts.raise_(
                "exec_id_conflict", session_id=key, order_id=order_id if known else None,
                detail={"exec_id": f.exec_id, "cl_ord_id": f.cl_ord_id,
                        "first": {k: existing.get(k) for k in
                                  ("exec_type", "last_qty", "last_px")},
                        "repeat": {k: row[k] for k in ("exec_type", "last_qty", "last_px")}})
            return
        faults.point("fill_stored")
        self._inbox.put(BrokerReportReceived(
            session=key, report_id=recorded.report_id, order_id=order_id if known else None,
            cl_ord_id=f.cl_ord_id, broker_order_id=f.broker_order_id, exec_id=f.exec_id,
            exec_type=f.exec_type, ord_status=f.ord_status, last_qty=f.last_qty,
            last_px=f.last_px, cum_qty=f.cum_qty, avg_px=f.avg_px, leaves_qty=f.leaves_qty,
            text=f.text, trade_date=trade_date, poss_dup=bool(row["poss_dup"]), ts_recv=now,
            exec_ref_id=f.exec_ref_id,
        ))


__all__ = ["BlockOrderInvalid", "GatewayApplication", "MessageRefused", "SessionRole",
           "order_id_of"]
