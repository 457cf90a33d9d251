"""The quickfix Application: guard, decode, persist, enqueue, return. Nothing else.

Callbacks run on quickfix threads holding the GIL; business logic lives in the
dispatcher. ExecutionReports are deduplicated here by their durable insert, so a
PossDup/PossResend repeat never reaches the dispatcher twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import quickfix as fix
import structlog

from gateway.clock import Clock, trade_date_of
from gateway.errors import AuditWriteError
from gateway.events import (
    AllocationAckReceived,
    BlockOrderInvalid,
    BlockOrderReceived,
    BrokerReportReceived,
    CancelRejectedByBroker,
    CancelRequested,
    SessionRejectReceived,
    SessionStateChanged,
)
from gateway.fix import allocation_codec, codec
from gateway.fix import tags as T
from gateway.fix.guard import fix_callback
from gateway.inbox import Inbox
from gateway.metrics import METRICS
from gateway.orders import make_order_id
from gateway.persistence.store import Database, ReportOutcome
from gateway.secrets import resolve_secret

log = structlog.get_logger("fixalloc.fix")


@dataclass(frozen=True)
class SessionRole:
    name: str
    role: str  # "oms" | "broker"
    username: str | None = None
    password_env: str | None = None


def order_id_of(cl_ord_id: str) -> str:
    """Our child ClOrdIDs are the order id, with '~C<n>' appended for cancel requests."""
    return cl_ord_id.split("~", 1)[0]


class GatewayApplication(fix.Application):  # type: ignore[misc]
    def __init__(
        self, roles: Mapping[str, SessionRole], db: Database, inbox: Inbox, clock: Clock,
        secrets_file: Path | None = None,
    ) -> None:
        super().__init__()
        self._roles = dict(roles)
        self._db = db
        self._inbox = inbox
        self._clock = clock
        self._secrets_file = secrets_file

    def _role(self, session_id: fix.SessionID) -> SessionRole | None:
        return self._roles.get(session_id.toString())

    @fix_callback
    def onCreate(self, session_id: fix.SessionID) -> None:
        log.info("fix.session_created", session=session_id.toString())

    @fix_callback
    def onLogon(self, session_id: fix.SessionID) -> None:
        key = session_id.toString()
        log.info("fix.logon", session=key)
        self._inbox.put(SessionStateChanged(key, True, self._clock.now()))

    @fix_callback
    def onLogout(self, session_id: fix.SessionID) -> None:
        key = session_id.toString()
        log.info("fix.logout", session=key)
        self._inbox.put(SessionStateChanged(key, False, self._clock.now()))

    @fix_callback
    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        role = self._role(session_id)
        if role is None or role.role != "broker" or codec.msg_type(message) != "A":
            return
        if role.username:
            message.setField(T.Username, role.username)
        if role.password_env:
            message.setField(
                T.Password, resolve_secret(role.name, role.password_env, self._secrets_file)
            )

    @fix_callback
    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        role = self._role(session_id)
        mtype = codec.msg_type(message)
        if mtype == "3":
            ref = codec.get_str(message, T.RefSeqNum)
            self._inbox.put(SessionRejectReceived(
                session=session_id.toString(), ref_seq_num=int(ref) if ref else None,
                ref_msg_type=codec.get_str(message, T.RefMsgType),
                ref_tag=codec.get_str(message, T.RefTagID),
                reason=codec.get_str(message, T.SessionRejectReason),
                text=codec.get_str(message, T.Text), ts_recv=self._clock.now()))
            return
        if role is None or role.role != "oms" or mtype != "A":
            return
        if role.password_env:
            expected = resolve_secret(role.name, role.password_env, self._secrets_file)
            offered = codec.get_str(message, T.Password)
            if offered != expected:
                log.warning("fix.logon_refused", session=session_id.toString(),
                            reason="bad password")
                raise fix.RejectLogon("invalid username or password")

    @fix_callback
    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        return None

    @fix_callback
    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        role = self._role(session_id)
        mtype = codec.msg_type(message)
        key = session_id.toString()
        METRICS.app_messages.labels(session=key, msg_type=mtype).inc()
        if role is None:
            raise fix.UnsupportedMessageType()
        if role.role == "oms":
            self._from_oms(message, key, mtype)
        else:
            self._from_broker(message, key, mtype)

    def _from_oms(self, message: fix.Message, key: str, mtype: str) -> None:
        now = self._clock.now()
        if mtype == "D":
            try:
                f = codec.parse_new_order_single(message)
            except codec.DecodeError as exc:
                # The dictionary accepted it, so this is a business problem: the D's own
                # reject (ER 39=8 with the reason) answers it, not a session Reject.
                self._inbox.put(BlockOrderInvalid(
                    session=key, cl_ord_id=codec.require_str(message, T.ClOrdID),
                    symbol=codec.get_str(message, T.Symbol) or "",
                    side_fix=codec.get_str(message, T.Side) or "",
                    order_qty=codec.get_str(message, T.OrderQty) or "0",
                    reason=f"{codec.TAG_NAMES.get(exc.tag, 'tag')}({exc.tag}): {exc.reason}",
                    seq_num=codec.seq_num(message), ts_recv=now))
                return
            trade_date = trade_date_of(now).isoformat()
            order_id = make_order_id(key, f.cl_ord_id, trade_date)
            row = {
                "order_id": order_id, "oms_session": key, "oms_cl_ord_id": f.cl_ord_id,
                "book": f.book, "symbol": f.symbol, "side": f.side,
                "order_qty": codec.fmt(f.order_qty), "ord_type": f.ord_type,
                "price": codec.fmt(f.price) if f.price is not None else None,
                "time_in_force": f.time_in_force, "broker": "", "status": "received",
                "cum_qty": "0", "avg_px": "0", "leaves_qty": codec.fmt(f.order_qty),
                "trade_date": trade_date, "created_at": now, "updated_at": now,
                "preallocations_json": json.dumps({
                    "lines": [[a, codec.fmt(q)] for a, q in f.preallocations],
                    "reason": f.preallocation_reason}) if f.preallocations else None,
            }
            try:
                inserted = self._db.insert_order(row)
            except Exception as exc:
                raise AuditWriteError(f"order {f.cl_ord_id}: {exc}") from exc
            if not inserted and codec.is_poss_dup(message):
                log.info("order.duplicate_dropped", session=key, cl_ord_id=f.cl_ord_id)
                return
            self._inbox.put(BlockOrderReceived(
                session=key, order_id=order_id, duplicate=not inserted, cl_ord_id=f.cl_ord_id,
                book=f.book, symbol=f.symbol, side=f.side, order_qty=f.order_qty,
                ord_type=f.ord_type, price=f.price, time_in_force=f.time_in_force,
                seq_num=codec.seq_num(message), ts_recv=now, trade_date=trade_date,
                preallocations=f.preallocations, preallocation_reason=f.preallocation_reason,
            ))
        elif mtype == "F":
            self._inbox.put(CancelRequested(
                session=key, cl_ord_id=codec.require_str(message, T.ClOrdID),
                orig_cl_ord_id=codec.require_str(message, T.OrigClOrdID),
                seq_num=codec.seq_num(message), ts_recv=now,
            ))
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
                reason=f9.reason, text=f9.text, ts_recv=now))
        elif mtype == "P":
            f = allocation_codec.parse_allocation_ack(message)
            self._inbox.put(AllocationAckReceived(
                session=key, alloc_id=f.alloc_id, alloc_status=f.alloc_status,
                rej_code=f.rej_code, text=f.text, rejected_lines=f.rejected_lines, ts_recv=now,
            ))
        else:
            raise fix.UnsupportedMessageType()

    def _execution_report(self, message: fix.Message, key: str) -> None:
        now = self._clock.now()
        f = codec.parse_execution_report(message)
        trade_date = f.trade_date or trade_date_of(now).isoformat()
        order_id = order_id_of(f.cl_ord_id)
        known = self._db.order_exists(order_id)
        row = {
            "session_id": key, "broker_order_id": f.broker_order_id, "exec_id": f.exec_id,
            "trade_date": trade_date, "order_id": order_id if known else None,
            "cl_ord_id": f.cl_ord_id, "exec_type": f.exec_type, "ord_status": f.ord_status,
            "last_qty": codec.fmt(f.last_qty), "last_px": codec.fmt(f.last_px),
            "cum_qty": codec.fmt(f.cum_qty), "avg_px": codec.fmt(f.avg_px),
            "leaves_qty": codec.fmt(f.leaves_qty), "text": f.text,
            "seq_num": codec.seq_num(message), "poss_dup": codec.is_poss_dup(message),
            "received_at": now, "transact_time": f.transact_time,
        }
        try:
            recorded = self._db.record_broker_report(row)
        except Exception as exc:
            raise AuditWriteError(f"execution report {f.exec_id}: {exc}") from exc
        if recorded.outcome is ReportOutcome.DUPLICATE:
            METRICS.duplicates.labels(session=key).inc()
            log.info("fill.duplicate_dropped", session=key, exec_id=f.exec_id,
                     cl_ord_id=f.cl_ord_id, poss_dup=row["poss_dup"])
            return
        if recorded.outcome is ReportOutcome.CONFLICT:
            METRICS.alerts.labels(kind="exec_id_conflict").inc()
            existing = recorded.existing or {}
            log.error("fill.conflicting_repeat", session=key, exec_id=f.exec_id,
                      cl_ord_id=f.cl_ord_id, first_qty=existing.get("last_qty"),
                      first_px=existing.get("last_px"), repeat_qty=row["last_qty"],
                      repeat_px=row["last_px"])
            self._db.append_event(
                "alert.exec_id_conflict", recorded_at=now, severity="error", session_id=key,
                order_id=order_id if known else None,
                detail={"exec_id": f.exec_id, "first": {k: existing.get(k) for k in
                        ("exec_type", "last_qty", "last_px")},
                        "repeat": {k: row[k] for k in ("exec_type", "last_qty", "last_px")}},
            )
            return
        self._inbox.put(BrokerReportReceived(
            session=key, report_id=recorded.report_id, order_id=order_id if known else None,
            cl_ord_id=f.cl_ord_id, broker_order_id=f.broker_order_id, exec_id=f.exec_id,
            exec_type=f.exec_type, ord_status=f.ord_status, last_qty=f.last_qty,
            last_px=f.last_px, cum_qty=f.cum_qty, avg_px=f.avg_px, leaves_qty=f.leaves_qty,
            text=f.text, trade_date=trade_date, poss_dup=bool(row["poss_dup"]), ts_recv=now,
        ))
