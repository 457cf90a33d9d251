"""The one path every alert takes: a log line, an audit event and the alerts counter.

An alert that is only logged is missed by whoever watches /metrics, and one that is only
counted leaves no record of why; so nothing raises an alert any other way. A noisy
condition (a flood from one peer) is throttled per (kind, session): the first occurrence
in a window is recorded in full and the rest are counted and summarised in the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.metrics import METRICS
from gateway.persistence.store import Database

log = structlog.get_logger("fixalloc.alert")


class Alerts:
    def __init__(self, db: Database, clock: Clock, *, throttle_seconds: float = 10.0) -> None:
        self._db = db
        self._clock = clock
        self._throttle = throttle_seconds
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str | None], tuple[float, int]] = {}

    def raise_(self, kind: str, *, severity: str = "error", session_id: str | None = None,
               order_id: str | None = None, alloc_id: str | None = None,
               detail: Mapping[str, Any] | None = None, throttle: bool = False) -> bool:
        """Count, log and store one alert; False when a throttled repeat was only counted."""
        METRICS.alerts.labels(kind=kind).inc()
        now = self._clock.now()
        body = dict(detail or {})
        if throttle:
            key = (kind, session_id)
            stamp = now.timestamp()
            with self._lock:
                last, suppressed = self._last.get(key, (float("-inf"), 0))
                if stamp - last < self._throttle:
                    self._last[key] = (last, suppressed + 1)
                    return False
                self._last[key] = (stamp, 0)
            if suppressed:
                body["suppressed_since_last"] = suppressed
        getattr(log, "warning" if severity == "warning" else "error")(
            f"alert.{kind}", session=session_id, order_id=order_id, alloc_id=alloc_id, **body)
        self._db.append_event(f"alert.{kind}", recorded_at=now, severity=severity,
                              session_id=session_id, order_id=order_id, alloc_id=alloc_id,
                              detail=body)
        return True
