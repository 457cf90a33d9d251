"""Tap 1 of the audit trail: every raw FIX message, in and out, admin messages included.

quickfix calls `onIncoming` with the raw text before it parses or sequence-checks the
message, and `onOutgoing` just before the bytes go out, so garbled and admin traffic the
application callbacks never see is recorded too. Secrets are masked before storage.
"""

from __future__ import annotations

import os
import re
from typing import Any

import quickfix as fix
import structlog

from gateway.clock import Clock
from gateway.errors import EXIT_AUDIT
from gateway.persistence.store import Database
from gateway.redaction import redact

log = structlog.get_logger("fixalloc.wire")

_TYPE = re.compile(r"\x0135=([^\x01]*)")
_SEQ = re.compile(r"\x0134=(\d+)")
_POSSDUP = re.compile(r"\x0143=Y")


class WireLog(fix.Log):  # type: ignore[misc]
    def __init__(self, db: Database, clock: Clock, session_id: str) -> None:
        super().__init__()
        self._db = db
        self._clock = clock
        self._session_id = session_id

    def _record(self, direction: str, raw: str) -> None:
        text = redact(raw)
        mtype = _TYPE.search(text)
        seq = _SEQ.search(text)
        try:
            self._db.append_wire(
                session_id=self._session_id,
                direction=direction,
                msg_type=mtype.group(1) if mtype else "?",
                seq_num=int(seq.group(1)) if seq else None,
                poss_dup=bool(_POSSDUP.search(text)),
                raw=text,
                recorded_at=self._clock.now(),
            )
        except Exception:
            # Crash-only: without the record we must not let the sequence number advance.
            log.critical("audit.wire_write_failed", session=self._session_id,
                         direction=direction, exit_code=EXIT_AUDIT, exc_info=True)
            os._exit(EXIT_AUDIT)

    def onIncoming(self, raw: str) -> None:
        self._record("in", raw)

    def onOutgoing(self, raw: str) -> None:
        self._record("out", raw)

    def onEvent(self, text: str) -> None:
        try:
            log.info("fix.session_event", session=self._session_id, detail=redact(text))
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

    def __init__(self, db: Database, clock: Clock) -> None:
        super().__init__()
        self._db = db
        self._clock = clock
        self._logs: list[WireLog] = []

    def create(self, *args: Any) -> Any:
        session_id = args[0].toString() if args else "global"
        wire_log = WireLog(self._db, self._clock, session_id)
        self._logs.append(wire_log)
        return wire_log.__disown__()

    def destroy(self, _log: Any) -> None:
        return None


