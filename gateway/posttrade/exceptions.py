"""The exceptions queue: what needs a person, with its reason and the next step.

An exception is opened once per (kind, allocation, line) and stays open until the state
that caused it is gone (the allocation is accepted, the ticket affirmed) or a person
resolves it. Opening one raises an alert (the one alert path) and notifies the people of
the book; both happen only the first time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from gateway.alerts import Alerts
from gateway.clock import Clock
from gateway.persistence.store import Database

log = structlog.get_logger("fixalloc.exceptions")


class ExceptionsQueue:
    def __init__(self, db: Database, clock: Clock, alerts: Alerts) -> None:
        self.db = db
        self.clock = clock
        self.alerts = alerts
        self.notify: Callable[[Mapping[str, Any]], object] | None = None
        """Called with the new exception's fields (notifications)."""

    def open(self, kind: str, *, reason: str, next_step: str, order: Any = None,
             alloc_id: str | None = None, individual_alloc_id: str | None = None,
             session_id: str | None = None, detail: Mapping[str, Any] | None = None) -> int:
        fields = {"order_id": order.order_id if order is not None else None,
                  "alloc_id": alloc_id, "individual_alloc_id": individual_alloc_id,
                  "book": order.book if order is not None else None,
                  "broker": order.broker if order is not None else None,
                  "trade_date": order.trade_date if order is not None else None}
        exception_id, opened = self.db.open_exception(
            kind, reason=reason, next_step=next_step, opened_at=self.clock.now(),
            detail=detail, **fields)
        if opened:
            self.alerts.raise_(f"exception_{kind}", session_id=session_id,
                               order_id=fields["order_id"], alloc_id=alloc_id,
                               detail={"exception_id": exception_id, "reason": reason,
                                       "next_step": next_step,
                                       "individual_alloc_id": individual_alloc_id,
                                       **dict(detail or {})})
            if self.notify is not None:
                self.notify({"id": exception_id, "kind": kind, "reason": reason,
                             "next_step": next_step, **fields})
        return exception_id

    def resolve(self, *, by: str, resolution: str, alloc_id: str | None = None,
                individual_alloc_id: str | None = None, kinds: tuple[str, ...] = (),
                exception_id: int | None = None) -> int:
        count = self.db.resolve_exceptions(at=self.clock.now(), by=by, resolution=resolution,
                                           alloc_id=alloc_id,
                                           individual_alloc_id=individual_alloc_id,
                                           kinds=kinds, exception_id=exception_id)
        if count:
            log.info("exceptions.resolved", count=count, by=by, alloc_id=alloc_id,
                     kinds=kinds, resolution=resolution)
        return count
