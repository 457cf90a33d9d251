"""Tap 1 of the audit trail: every raw FIX message, in and out, admin messages included.

quickfix calls `onIncoming` with the raw text before it parses or sequence-checks the
message, and `onOutgoing` just before the bytes go out, so garbled and admin traffic the
application callbacks never see is recorded too.

What is stored is the bytes that crossed the wire. The binding hands Python a str in which
every byte that is not UTF-8 is a surrogate escape; encoding it back with `surrogateescape`
gives exactly the peer's bytes (a Latin-1 Text stays Latin-1). Only the values of
Password(554) and NewPassword(925) are replaced by `***` before storage.

A message that cannot be recorded is refused, not fatal: the record of why is kept in
`Refusals`, and the application callback answers that message with a session Reject. Only
when the database itself is gone does the process exit (75), before the sequence number
advances, so the counterparty resends after the restart.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import quickfix as fix
import structlog

from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.errors import EXIT_AUDIT
from gateway.fix.store_secrets import body_file, scrub_sent
from gateway.persistence.store import Database
from gateway.redaction import redact_bytes

log = structlog.get_logger("fixalloc.wire")

_TYPE = re.compile(rb"\x0135=([^\x01]*)")
_SEQ = re.compile(rb"\x0134=(\d{1,18})\x01")
_POSSDUP = re.compile(rb"\x0143=Y\x01")
_REF_TAG = {b"8": rb"\x0117=([^\x01]*)"}
for _t in (b"D", b"F", b"G", b"9"):
    _REF_TAG[_t] = rb"\x0111=([^\x01]*)"
for _t in (b"J", b"P"):
    _REF_TAG[_t] = rb"\x0170=([^\x01]*)"
for _t in (b"AK", b"AU"):
    _REF_TAG[_t] = rb"\x01664=([^\x01]*)"  # ConfirmID: one ticket's confirmation
_REF_TAG[b"BH"] = rb"\x01859=([^\x01]*)"  # ConfirmReqID
for _t in (b"AS", b"AT"):
    _REF_TAG[_t] = rb"\x01755=([^\x01]*)"  # AllocReportID
_REF = {k: re.compile(v) for k, v in _REF_TAG.items()}

TRUNCATED_HEAD = 4096
"""Bytes kept of a message above the size limit (with its full length and a flag)."""


def wire_bytes(raw: str) -> bytes:
    """The exact bytes quickfix saw or sent, from the binding's surrogate-escaped str."""
    return raw.encode("utf-8", "surrogateescape")


def describe(data: bytes) -> tuple[str, int | None, bool, str | None]:
    """(MsgType, MsgSeqNum, PossDup, ref id) read from raw bytes; '?' / None when absent."""
    mtype = _TYPE.search(data)
    mt = mtype.group(1) if mtype else b"?"
    seq = _SEQ.search(data)
    ref = _REF.get(mt)
    found = ref.search(data) if ref is not None else None
    return (mt.decode("ascii", "backslashreplace")[:8], int(seq.group(1)) if seq else None,
            bool(_POSSDUP.search(data)),
            found.group(1).decode("utf-8", "backslashreplace")[:128] if found else None)


class Refusals:
    """Inbound messages the gateway must refuse, by (session, MsgSeqNum, MsgType).

    The wire log decides (too large, not recordable) before quickfix parses; the
    application callback for the same message asks `take` and answers with a Reject.
    Bounded: a garbled message that never reaches a callback cannot grow it without limit.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, int | None, str], str] = OrderedDict()
        self._capacity = capacity

    def mark(self, session: str, seq: int | None, msg_type: str, reason: str) -> None:
        with self._lock:
            self._items[(session, seq, msg_type)] = reason
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def take(self, session: str, seq: int | None, msg_type: str) -> str | None:
        with self._lock:
            return self._items.pop((session, seq, msg_type), None)

    def clear(self, session: str) -> None:
        """A logon may reset sequence numbers: older marks can no longer be matched."""
        with self._lock:
            for key in [k for k in self._items if k[0] == session]:
                del self._items[key]


class WireLog(fix.Log):  # type: ignore[misc]
    def __init__(self, db: Database, clock: Clock, session_id: str, *,
                 max_message_bytes: int | None = None, refusals: Refusals | None = None,
                 alerts: Alerts | None = None, store_body: Path | None = None) -> None:
        super().__init__()
        self._store_body = store_body
        self._db = db
        self._clock = clock
        self._session_id = session_id
        self._max = max_message_bytes
        self._refusals = refusals or Refusals()
        self._alerts = alerts

    def _record(self, direction: str, raw: str) -> None:
        try:
            data = redact_bytes(wire_bytes(raw))
            mtype, seq, poss_dup, ref = describe(data)
        except Exception:
            # Nothing a peer sends may stop the process: keep the bytes we can get.
            data, mtype, seq, poss_dup, ref = raw.encode("utf-8", "replace"), "?", None, False, None
        size = len(data)
        truncated = direction == "in" and self._max is not None and size > self._max
        if truncated:
            self._refuse(seq, mtype, f"message of {size} bytes exceeds the limit of "
                                     f"{self._max} bytes", "message_too_large",
                         {"bytes": size, "limit": self._max, "msg_type": mtype, "seq_num": seq})
        try:
            if direction == "in" and mtype == "8" and not truncated and not poss_dup:
                # Written by the fill's own transaction (Database.defer_wire says when
                # it is written earlier); a PossDup copy, which quickfix may drop before
                # the application sees it, is written at once.
                self._db.defer_wire(self._db.wire_row(
                    session_id=self._session_id, direction=direction, msg_type=mtype,
                    seq_num=seq, poss_dup=poss_dup, raw=data, raw_len=size,
                    ref_id=ref, recorded_at=self._clock.now()))
                return
            self._db.append_wire(
                session_id=self._session_id, direction=direction, msg_type=mtype,
                seq_num=seq, poss_dup=poss_dup, raw=data[:TRUNCATED_HEAD] if truncated else data,
                raw_len=size, truncated=truncated, ref_id=ref, recorded_at=self._clock.now())
        except Exception as exc:
            if not self._db.ping():
                # The database is gone: die before the sequence number advances; the peer
                # resends once we are back (crash-only, systemd restarts us).
                log.critical("audit.database_unavailable", session=self._session_id,
                             direction=direction, exit_code=EXIT_AUDIT, exc_info=True)
                os._exit(EXIT_AUDIT)
            # The database works but this message cannot be stored: refuse this one only.
            log.error("audit.wire_write_failed", session=self._session_id,
                      direction=direction, msg_type=mtype, seq_num=seq,
                      error=f"{type(exc).__name__}: {str(exc)[:300]}")
            if direction == "in":
                self._refuse(seq, mtype, "message could not be recorded", "wire_write_failed",
                             {"msg_type": mtype, "seq_num": seq,
                              "error": f"{type(exc).__name__}: {str(exc)[:300]}"})

    def _refuse(self, seq: int | None, mtype: str, reason: str, kind: str,
                detail: dict[str, Any]) -> None:
        self._refusals.mark(self._session_id, seq, mtype, reason)
        if self._alerts is not None:
            try:
                self._alerts.raise_(kind, session_id=self._session_id, detail=detail,
                                    throttle=True)
            except Exception:
                # The alert is best effort here; the refusal itself is already decided.
                log.exception("alert.failed", kind=kind, session=self._session_id)

    def onIncoming(self, raw: str) -> None:
        self._record("in", raw)

    def onOutgoing(self, raw: str) -> None:
        if self._store_body is not None and ("\x01554=" in raw or "\x01925=" in raw):
            # quickfix has just stored this Logon for resend: mask the secret there too.
            try:
                scrub_sent(self._store_body, wire_bytes(raw))
            except OSError:
                log.exception("store.scrub_failed", session=self._session_id)
        self._record("out", raw)

    def onEvent(self, text: str) -> None:
        try:
            log.info("fix.session_event", session=self._session_id,
                     detail=wire_bytes(text).decode("utf-8", "backslashreplace"))
        except Exception:
            # An exception escaping a Log callback would end the process from an engine thread.
            return

    def clear(self) -> None:
        return None

    def backup(self) -> None:
        return None


class WireLogFactory(fix.LogFactory):  # type: ignore[misc]
    """Creates one WireLog per session.

    The C++ engine must own each Log: returning the plain Python proxy corrupts the heap
    when the engine initialises (seen as a segfault in ~DataDictionary with quickfix
    1.16.0), so we hand over ownership with __disown__ and keep our own strong reference.
    """

    def __init__(self, db: Database, clock: Clock, *, refusals: Refusals | None = None,
                 alerts: Alerts | None = None,
                 max_message_bytes: dict[str, int] | None = None,
                 store_dirs: dict[str, Path] | None = None) -> None:
        super().__init__()
        self._db = db
        self._clock = clock
        self.refusals = refusals or Refusals()
        self._alerts = alerts
        self._limits = max_message_bytes or {}
        self._store_dirs = store_dirs or {}
        self._logs: list[WireLog] = []

    def create(self, *args: Any) -> Any:
        session_id = args[0].toString() if args else "global"
        store_dir = self._store_dirs.get(session_id)
        wire_log = WireLog(self._db, self._clock, session_id,
                           max_message_bytes=self._limits.get(session_id),
                           refusals=self.refusals, alerts=self._alerts,
                           store_body=body_file(store_dir, session_id) if store_dir else None)
        self._logs.append(wire_log)
        return wire_log.__disown__()

    def destroy(self, _log: Any) -> None:
        return None
