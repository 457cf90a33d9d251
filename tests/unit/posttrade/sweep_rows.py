"""Rows for the sweep's tests: orders, allocations, tickets, AKs, exceptions and wire records,
written straight into a migrated database the way the lifecycle leaves them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from gateway.persistence.store import Database
from gateway.posttrade.sweep import SweepResult, SweepSettings, run_sweep

NY = ZoneInfo("America/New_York")
DAY = date(2026, 11, 20)  # a Friday
BROKER_SESSION = "FIX.4.4:FIXALLOC->BRKA"
OMS_SESSION = "FIX.4.4:FIXALLOC->OMS1"
SESSIONS_UP = [{"name": "OMS1", "role": "oms", "logged_on": True},
               {"name": "BRKA", "role": "broker", "logged_on": True},
               {"name": "BRKB", "role": "broker", "logged_on": True}]


def ny(hhmm: str, day: date = DAY) -> datetime:
    """A New York wall-clock time on `day`, as an aware UTC datetime."""
    hour, minute = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=NY).astimezone(UTC)


Line = tuple[str, str, str]  # account, qty, custodian


class Blotter:
    """Writes one trade date's rows; every id is readable (O-…, A-…, A-…-n)."""

    def __init__(self, db: Database, day: date = DAY) -> None:
        self.db = db
        self.day = day

    def order(self, order_id: str, *, status: str = "filled", qty: str = "1000",
              cum: str | None = None, avg_px: str = "190.0000", broker: str = "BRKA",
              book: str = "SMA-CORE", symbol: str = "AAPL", at: str = "10:00") -> str:
        cum = qty if cum is None and status == "filled" else (cum or "0")
        leaves = "0" if status in ("filled", "done_for_day", "canceled", "expired") else str(
            int(qty) - int(cum))
        when = ny(at, self.day)
        assert self.db.insert_order({
            "order_id": order_id, "oms_session": OMS_SESSION, "oms_cl_ord_id": f"C-{order_id}",
            "book": book, "symbol": symbol, "side": "buy", "order_qty": qty, "ord_type": "1",
            "price": None, "broker": broker, "status": status, "cum_qty": cum, "avg_px": avg_px,
            "leaves_qty": leaves, "trade_date": self.day.isoformat(), "created_at": when,
            "updated_at": when})
        return order_id

    def allocation(self, order_id: str, alloc_id: str | None = None, *,
                   status: str = "accepted", trans: str = "0",
                   lines: Sequence[Line] = (("SMA0001", "600", "CUST-A"),
                                            ("SMA0002", "400", "CUST-B")),
                   ticket_state: str | None = "awaiting_ak", avg_px: str = "190.0000",
                   sent: str | None = "16:10", acked: str | None = "16:11",
                   received: str | None = None, created: str = "16:09",
                   rej_code: str | None = None, ack_text: str | None = None,
                   ack_status: str | None = None, ref_alloc_id: str | None = None,
                   broker: str = "BRKA", wire: bool = True) -> list[str]:
        """Store the allocation and its lines; `wire` also files its J (and P) in the log."""
        alloc_id = alloc_id or f"A-{order_id}"
        decision_id = f"D-{alloc_id}"
        qty = str(sum(int(q) for _, q, _ in lines))
        at = self._at
        self.db.save_allocation(
            {"decision_id": decision_id, "order_id": order_id, "method": "pro_rata",
             "rulebook_version": "rb1", "inputs_hash": "h", "config_hash": "c",
             "decided_at": at(created), "canonical_json": "{}"},
            {"alloc_id": alloc_id, "order_id": order_id, "decision_id": decision_id,
             "broker": broker, "alloc_trans_type": trans, "alloc_type": "1", "quantity": qty,
             "avg_px": avg_px, "trade_date": self.day.isoformat(), "settl_date": "2026-11-23",
             "status": status, "created_at": at(created), "sent_at": at(sent),
             "acked_at": at(acked) if status not in ("sent", "received", "pending_send")
             else None, "received_at": at(received), "rej_code": rej_code,
             "ack_text": ack_text, "ack_status": ack_status, "ref_alloc_id": ref_alloc_id},
            [{"individual_alloc_id": f"{alloc_id}-{n}", "alloc_id": alloc_id,
              "account_id": account, "qty": q, "avg_px": avg_px, "custodian": custodian,
              "ticket_state": ticket_state}
             for n, (account, q, custodian) in enumerate(lines, start=1)])
        if wire and sent:
            self.wire("J", "out", alloc_id, at=sent)
        if wire and (received or status not in ("sent", "received", "pending_send")):
            self.wire("P", "in", alloc_id, at=received or acked or sent or created)
        return [f"{alloc_id}-{n}" for n in range(1, len(lines) + 1)]

    def _at(self, hhmm: str | None) -> datetime | None:
        return ny(hhmm, self.day) if hhmm else None

    def affirm(self, line_id: str, *, ak: str = "16:20", au: str = "16:21") -> None:
        self.db.update_line(line_id, ticket_state="affirmed", confirm_id=f"K-{line_id}",
                            ak_received_at=ny(ak, self.day), affirmed_at=ny(au, self.day))

    def confirmation(self, line_id: str, alloc_id: str, *, account: str = "SMA0001",
                     confirm_type: str = "2", confirm_status: str = "4",
                     outcome: str = "affirmed", affirm_status: str | None = "3",
                     at: str = "16:20", mismatches: dict[str, Any] | None = None) -> str:
        confirm_id = f"K-{line_id}"
        self.db.record_confirmation({
            "session_id": BROKER_SESSION, "confirm_id": confirm_id, "trans_type": "0",
            "confirm_type": confirm_type, "confirm_status": confirm_status,
            "alloc_id": alloc_id, "individual_alloc_id": line_id, "account_id": account,
            "economics_json": "{}", "outcome": outcome,
            "mismatches_json": json.dumps(mismatches) if mismatches else None,
            "affirm_status": affirm_status, "received_at": ny(at, self.day),
            "answered_at": ny(at, self.day) if affirm_status else None})
        return confirm_id

    def wire(self, msg_type: str, direction: str, ref_id: str, *,
             session: str = BROKER_SESSION, at: str = "16:10") -> None:
        self.db.append_wire(session_id=session, direction=direction, msg_type=msg_type,
                            seq_num=None, poss_dup=False,
                            raw=f"8=FIX.4.4\x0135={msg_type}\x01".encode(), ref_id=ref_id,
                            recorded_at=ny(at, self.day))

    def exception(self, kind: str, **ids: Any) -> int:
        exc_id, _ = self.db.open_exception(kind, reason=f"{kind} (lifecycle)",
                                           next_step="see the lifecycle", opened_at=ny("16:15"),
                                           trade_date=self.day.isoformat(), **ids)
        return exc_id

    def bust(self, order_id: str, exec_id: str, at: str = "17:00") -> None:
        from gateway.persistence import tables as t

        with self.db.engine.begin() as conn:
            conn.execute(insert(t.broker_reports).values(
                session_id=BROKER_SESSION, broker_order_id=f"B-{order_id}", exec_id=exec_id,
                trade_date=self.day.isoformat(), order_id=order_id, cl_ord_id=order_id,
                exec_type="H", ord_status="1", last_qty="100", last_px="190", cum_qty="900",
                avg_px="190", leaves_qty="0", poss_dup=False, received_at=ny(at, self.day),
                exec_ref_id="X1"))

    def open_exceptions(self) -> list[dict[str, Any]]:
        return self.db.exceptions(state="open")

    def count(self, table: Any) -> int:
        from sqlalchemy import func, select

        with self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def sweep(db: Database, checkpoint: str, *, now: datetime | None = None,
          sessions: Sequence[dict[str, Any]] = SESSIONS_UP, day: date = DAY,
          settings: SweepSettings | None = None) -> SweepResult:
    return run_sweep(db, trade_date=day, checkpoint=checkpoint,
                     now=now or ny(checkpoint, day), settings=settings or SweepSettings(),
                     sessions=sessions)


def items(result: SweepResult, kind: str | None = None) -> list[dict[str, Any]]:
    return [i for i in result.report["open_items"] if kind is None or i["kind"] == kind]


def actions(result: SweepResult, kind: type) -> list[Any]:
    return [a for a in result.actions if isinstance(a, kind)]
