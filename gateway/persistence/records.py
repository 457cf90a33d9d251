"""The append-only part of the database: wire messages, audit events, refused orders, versions.

Mixed into `Database`; every method is one short transaction. The wire log keeps the
bytes that crossed the wire: a peer's Latin-1 or otherwise non-UTF-8 text is stored as
sent and decoded only for display, by `wire_text`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, func, insert, select, text

from gateway.persistence import tables as t
from gateway.persistence import wire_codec
from gateway.persistence.retry import transient

_INSERT_WIRE = insert(t.fix_messages)
_riding = threading.local()
# Held inbound rows by OS thread id, not in a threading.local: quickfix's own threads enter
# Python afresh for every callback, and their thread-local values do not outlive one.
_deferred: dict[int, dict[str, Any]] = {}
log = structlog.get_logger("fixalloc.persistence")


class RideAlong:
    """Writes waiting to share the commit of an outbound wire row (`riding_on_wire`)."""

    __slots__ = ("done", "session_id", "write")

    def __init__(self, session_id: str, write: Callable[[Connection], None]) -> None:
        self.session_id = session_id
        self.write = write
        self.done = False


def wire_text(raw: bytes | memoryview | str) -> str:
    """The display form of a stored message: UTF-8, any other byte shown as \\xNN.

    Lossless for the reader (the escape names the byte) and never raises, whatever a peer
    sent; the stored bytes themselves are never re-encoded.
    """
    if isinstance(raw, str):
        return raw
    return bytes(raw).decode("utf-8", "backslashreplace")


def _unpacked(row: Any) -> dict[str, Any]:
    """A wire-log row with `raw` as the exact bytes that crossed the wire."""
    out = dict(row)
    raw = bytes(out["raw"])
    out["raw"] = wire_codec.unpack(raw, bool(out.get("compressed")))
    return out


class AuditRecords:
    engine: Engine

    def ping(self) -> bool:
        """Whether the database answers at all: tells a bad message from a lost database."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            # Any failure here means the database itself is unavailable.
            return False
        return True

    # -- the wire log -----------------------------------------------------------------------

    @transient
    def append_wire(self, *, session_id: str, direction: str, msg_type: str,
                    seq_num: int | None, poss_dup: bool, raw: bytes, recorded_at: datetime,
                    raw_len: int | None = None, truncated: bool = False,
                    ref_id: str | None = None) -> None:
        # Parameters bound to one statement compiled once: building the INSERT with
        # .values() on every message cost more than SQLite's own work.
        row = self.wire_row(session_id=session_id, direction=direction, msg_type=msg_type,
                            seq_num=seq_num, poss_dup=poss_dup, raw=raw,
                            recorded_at=recorded_at, raw_len=raw_len, truncated=truncated,
                            ref_id=ref_id)
        self.flush_deferred_wire()
        ride: RideAlong | None = getattr(_riding, "current", None)
        if (ride is not None and not ride.done and direction == "out"
                and ride.session_id == session_id):
            try:
                with self.engine.begin() as conn:
                    conn.execute(_INSERT_WIRE, row)
                    ride.write(conn)
            except Exception:
                # The rider's own failure must not cost the wire its record: the row goes
                # alone below and the rider, not done, is written by its owner.
                log.warning("wire.ride_along_failed", session=session_id, exc_info=True)
            else:
                ride.done = True
                return
        with self.engine.begin() as conn:
            conn.execute(_INSERT_WIRE, row)

    def defer_wire(self, row: dict[str, Any]) -> None:
        """Hold an inbound ER's wire row (`wire_row`) for the fill's own transaction.

        quickfix calls the log and then the application on the same thread, before it
        advances the sequence number: `take_deferred_wire` (the fill's insert) commits
        both at once. Any other record on this thread writes a held row first
        (`flush_deferred_wire`), so the log keeps the wire's order and a message the
        application never sees (rejected by quickfix, queued) is still recorded before
        quickfix answers it."""
        self.flush_deferred_wire()
        _deferred[threading.get_ident()] = row

    def take_deferred_wire(self, session_id: str) -> dict[str, Any] | None:
        row = _deferred.get(threading.get_ident())
        if row is None or row["session_id"] != session_id:
            return None
        del _deferred[threading.get_ident()]
        return row

    def put_back_deferred_wire(self, row: dict[str, Any]) -> None:
        """A held row whose transaction failed: written by the next flush (the reject)."""
        _deferred[threading.get_ident()] = row

    def flush_deferred_wire(self) -> None:
        row = _deferred.get(threading.get_ident())
        if row is None:
            return
        with self.engine.begin() as conn:
            conn.execute(_INSERT_WIRE, row)
        del _deferred[threading.get_ident()]

    @staticmethod
    def wire_row(*, session_id: str, direction: str, msg_type: str, seq_num: int | None,
                 poss_dup: bool, raw: bytes, recorded_at: datetime, raw_len: int | None = None,
                 truncated: bool = False, ref_id: str | None = None) -> dict[str, Any]:
        stored, packed = wire_codec.pack(raw)
        return {"session_id": session_id, "direction": direction, "msg_type": msg_type,
                "seq_num": seq_num, "poss_dup": poss_dup, "raw": stored, "compressed": packed,
                "raw_len": len(raw) if raw_len is None else raw_len, "truncated": truncated,
                "ref_id": ref_id, "recorded_at": recorded_at}

    @contextmanager
    def riding_on_wire(self, session_id: str, write: Callable[[Connection], None]
                       ) -> Iterator[RideAlong]:
        """`write` commits with the next outbound message this thread records on the
        session (quickfix records it after storing it for resend, before sending it), so
        one commit serves both. Not done when nothing went out on this thread (a session
        that is down stores without sending): the caller then writes it itself."""
        ride = RideAlong(session_id, write)
        _riding.current = ride
        try:
            yield ride
        finally:
            _riding.current = None

    def wire_messages(self, *, session_id: str | None = None, direction: str | None = None,
                      msg_type: str | None = None) -> list[dict[str, Any]]:
        """Stored messages in order; `raw` is the stored bytes, `text` their display form."""
        query = select(t.fix_messages).order_by(t.fix_messages.c.id)
        if session_id is not None:
            query = query.where(t.fix_messages.c.session_id == session_id)
        if direction is not None:
            query = query.where(t.fix_messages.c.direction == direction)
        if msg_type is not None:
            query = query.where(t.fix_messages.c.msg_type == msg_type)
        with self.engine.connect() as conn:
            rows = [_unpacked(r) for r in conn.execute(query).mappings()]
        for row in rows:
            row["text"] = wire_text(row["raw"])
        return rows

    def last_wire_seq(self, session_id: str, direction: str) -> int | None:
        """The highest sequence number recorded on a session in one direction."""
        c = t.fix_messages.c
        query = select(func.max(c.seq_num)).where(c.session_id == session_id,
                                                  c.direction == direction)
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar_one()
        return int(value) if value is not None else None

    def sent_with_ref(self, session_id: str, msg_type: str, ref_id: str) -> bool:
        """Whether a message of this type about `ref_id` already went out on the session."""
        c = t.fix_messages.c
        query = select(func.count()).where(c.session_id == session_id, c.direction == "out",
                                           c.msg_type == msg_type, c.ref_id == ref_id)
        with self.engine.connect() as conn:
            return bool(conn.execute(query).scalar_one())

    def sent_count_with_ref(self, session_id: str, msg_type: str, ref_id: str) -> int:
        """Distinct outbound messages about `ref_id` (a resend repeats a sequence number)."""
        c = t.fix_messages.c
        query = select(func.count(func.distinct(c.seq_num))).where(
            c.session_id == session_id, c.direction == "out", c.msg_type == msg_type,
            c.ref_id == ref_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def received_with_ref(self, session_id: str, msg_type: str,
                          ref_id: str) -> list[dict[str, Any]]:
        c = t.fix_messages.c
        query = (select(t.fix_messages).where(c.session_id == session_id, c.direction == "in",
                                              c.msg_type == msg_type, c.ref_id == ref_id)
                 .order_by(c.id))
        with self.engine.connect() as conn:
            return [_unpacked(r) for r in conn.execute(query).mappings()]

    def sent_message_at(self, session_id: str, seq_num: int) -> dict[str, Any] | None:
        """Our latest outbound message with this sequence number (for a peer's Reject)."""
        c = t.fix_messages.c
        query = (select(t.fix_messages).where(c.session_id == session_id, c.direction == "out",
                                              c.seq_num == seq_num)
                 .order_by(c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            return _unpacked(row) if row else None

    # -- audit events -----------------------------------------------------------------------

    @transient
    def append_event(self, kind: str, *, recorded_at: datetime, severity: str = "info",
                     session_id: str | None = None, order_id: str | None = None,
                     alloc_id: str | None = None,
                     detail: Mapping[str, Any] | None = None) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(insert(t.audit_events).values(
                recorded_at=recorded_at, kind=kind, severity=severity, session_id=session_id,
                order_id=order_id, alloc_id=alloc_id,
                detail_json=json.dumps(detail or {}, sort_keys=True, default=str)))
            pk = result.inserted_primary_key
            return int(pk[0]) if pk else 0

    def events(self, kind: str | None = None, *,
               order_id: str | None = None) -> list[dict[str, Any]]:
        query = select(t.audit_events).order_by(t.audit_events.c.id)
        if kind is not None:
            query = query.where(t.audit_events.c.kind == kind)
        if order_id is not None:
            query = query.where(t.audit_events.c.order_id == order_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # -- refused block orders ---------------------------------------------------------------

    @transient
    def record_rejection(self, *, session_id: str, cl_ord_id: str, trade_date: str,
                         seq_num: int | None, order_id: str | None, reason_code: str,
                         text: str, created_at: datetime) -> int:
        """Store a refused block order; its id makes the reject's ExecID (REJ<id>)."""
        with self.engine.begin() as conn:
            result = conn.execute(insert(t.order_rejections).values(
                session_id=session_id, cl_ord_id=cl_ord_id, trade_date=trade_date,
                seq_num=seq_num, order_id=order_id, reason_code=reason_code, text=text,
                created_at=created_at))
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def find_rejection(self, session_id: str, cl_ord_id: str,
                       trade_date: str) -> dict[str, Any] | None:
        c = t.order_rejections.c
        query = (select(t.order_rejections)
                 .where(c.session_id == session_id, c.cl_ord_id == cl_ord_id,
                        c.trade_date == trade_date).order_by(c.id).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            return dict(row) if row else None

    # -- rulebook and reference-data versions -----------------------------------------------

    def _activate(self, table: Any, version: str, values: Mapping[str, Any]) -> bool:
        """Append an activation row unless this version is already the newest one."""
        with self.engine.begin() as conn:
            newest = conn.execute(select(table.c.version).order_by(table.c.id.desc())
                                  .limit(1)).scalar()
            if newest == version:
                return False
            seen = conn.execute(select(func.count()).select_from(table)
                                .where(table.c.version == version)).scalar_one()
            conn.execute(insert(table).values(version=version, reactivated=bool(seen),
                                              **values))
            return True

    @transient
    def save_rulebook_version(self, *, version: str, loaded_at: datetime, actor: str,
                              source: str, content_json: str, diff_summary: str | None,
                              files: Mapping[str, str] | None = None) -> bool:
        """Record that this rulebook version is now in force; False if it already was.

        A rollback to an earlier text is a new row (marked reactivated), so the newest row
        is always the version in force.
        """
        return self._activate(t.rulebook_versions, version, {
            "loaded_at": loaded_at, "actor": actor, "source": source,
            "content_json": content_json, "diff_summary": diff_summary,
            "files_json": json.dumps(dict(files), sort_keys=True) if files else None})

    @transient
    def save_refdata_version(self, *, version: str, loaded_at: datetime, actor: str,
                             files: Mapping[str, str], diff_summary: str | None) -> bool:
        """Record that this reference-data version (with the files' text) is now in force."""
        return self._activate(t.refdata_versions, version, {
            "loaded_at": loaded_at, "actor": actor,
            "content_json": json.dumps(dict(files), sort_keys=True),
            "diff_summary": diff_summary})

    def version_row(self, table: str, version: str) -> dict[str, Any] | None:
        """The first stored row of a rulebook or reference-data version (its texts)."""
        tbl = t.metadata.tables[table]
        query = select(tbl).where(tbl.c.version == version).order_by(tbl.c.id).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            return dict(row) if row else None

    def latest_refdata_version(self) -> dict[str, Any] | None:
        query = select(t.refdata_versions).order_by(t.refdata_versions.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            return dict(row) if row else None

    def version_rows(self, table: str) -> list[dict[str, Any]]:
        """Every activation of the rulebook or reference data, oldest first."""
        tbl = t.metadata.tables[table]
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(tbl).order_by(tbl.c.id)).mappings()]
